"""Noticing containers that exit on their own, without waiting for a client to ask.

A container's monitor writes its exit code to `<exits>/<id>` when it ends (under a temporary
name first, then renamed), then exits. `ExitWatcher` sleeps until a watched monitor ends (the
service's `MonitorWatches`), or `interval` seconds at most, and has the container service
bring the containers with a new exit file or an ended monitor up to date, which publishes
their stopped events: a container's exit is noticed at once, and within `interval` (0.5 s
by default) for one whose monitor cannot be watched but wrote an exit file. Every
`sweep_interval` seconds it has the service ask the handlers about every created or running
container (what watching may have missed: a monitor that died unwatched, without an exit
file)."""
from __future__ import annotations

import threading
import time

import structlog

from pycri.containers.service import ContainerService

log = structlog.get_logger("containers.exits")

INTERVAL_SECONDS = 0.5
SWEEP_SECONDS = 30.0
MIN_GAP_SECONDS = 0.05  # between two looks: a monitor's end that stays unexplained (a start under way) is not spun on


class ExitWatcher:
    def __init__(self, service: ContainerService, interval: float = INTERVAL_SECONDS,
                 sweep_interval: float = SWEEP_SECONDS) -> None:
        self.service = service
        self.interval = interval
        self.sweep_interval = sweep_interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="exit-watcher", daemon=True)

    def start(self) -> ExitWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.service.stop_waiting()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        next_sweep = time.monotonic() + self.sweep_interval
        while not self._stop.is_set():
            try:
                self.service.wait_exits(self.interval)
                if self._stop.is_set():
                    break
                self.service.notice_exits()
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + self.sweep_interval
                    self.service.sweep()
            except Exception:  # never let the watcher die
                log.exception("looking for container exits failed")
            self._stop.wait(MIN_GAP_SECONDS)
