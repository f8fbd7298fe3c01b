"""Noticing containers that exit on their own, without waiting for a client to ask.

A container's monitor writes its exit code to `<exits>/<id>` when it ends (under a temporary
name first, then renamed), then exits. `ExitWatcher` sleeps until a watched monitor ends (the
service's `MonitorWatches`, a pidfd per monitor) or an exit file appears in `<exits>` (an
inotify descriptor in the same epoll set), and has the container service bring the containers
with a new exit file or an ended monitor up to date, which publishes their stopped events: a
container's exit is noticed at once (and those from before it started at its first look, at
once). After something woke it, it also looks every `interval`
seconds (0.5 s by default) for `busy_seconds`, for what a look left for later (an exit noticed
while its start was under way); otherwise it sleeps up to `idle_interval` seconds, so that an
idle node costs next to nothing. Without inotify it looks every `interval` seconds, as exit
files are then found only by looking. Every `sweep_interval` seconds it has the service ask
about every created or running container whose monitor is not watched (what watching may
have missed: a monitor that died unwatched, without an exit file)."""
from __future__ import annotations

import threading
import time

import structlog

from pycri.containers.service import ContainerService

log = structlog.get_logger("containers.exits")

INTERVAL_SECONDS = 0.5
IDLE_SECONDS = 5.0  # between looks while nothing happens (every exit wakes the watcher)
BUSY_SECONDS = 10.0  # after a wake, looks every INTERVAL_SECONDS for this long
SWEEP_SECONDS = 30.0
MIN_GAP_SECONDS = 0.05  # between two looks: a monitor's end that stays unexplained (a start under way) is not spun on


class ExitWatcher:
    def __init__(self, service: ContainerService, interval: float = INTERVAL_SECONDS,
                 sweep_interval: float = SWEEP_SECONDS, idle_interval: float = IDLE_SECONDS,
                 busy_seconds: float = BUSY_SECONDS) -> None:
        self.service = service
        self.interval = interval
        self.sweep_interval = sweep_interval
        self.idle_interval = max(interval, idle_interval)
        self.busy_seconds = busy_seconds
        self._stop = threading.Event()
        self._exit_files_wake = False  # whether an exit file appearing wakes the watcher (inotify)
        self._thread = threading.Thread(target=self._run, name="exit-watcher", daemon=True)

    def start(self) -> ExitWatcher:
        # (the directory is watched before the thread runs: an exit file written once start has
        # returned wakes it; the thread's first look, at once, finds those written before)
        self._exit_files_wake = self.service.monitors.watch_directory(self.service.exits)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.service.stop_waiting()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        monitors = self.service.monitors
        next_sweep = time.monotonic() + self.sweep_interval
        busy_until = 0.0
        first = True
        while not self._stop.is_set():
            woke = False
            try:
                now = time.monotonic()
                timeout = self.interval if not self._exit_files_wake or now < busy_until else self.idle_interval
                woke = monitors.wait(0 if first else max(0.0, min(timeout, next_sweep - now)))
                first = False
                if self._stop.is_set():
                    break
                self.service.notice_exits()
                if woke:
                    busy_until = time.monotonic() + self.busy_seconds
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + self.sweep_interval
                    self.service.sweep()
            except Exception:  # never let the watcher die
                log.exception("looking for container exits failed")
                woke = True
            if woke:
                self._stop.wait(MIN_GAP_SECONDS)
