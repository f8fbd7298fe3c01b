"""Noticing containers that exit on their own, without waiting for a client to ask.

A container's monitor writes its exit code to `<exits>/<id>` when it ends (under a temporary
name first, then renamed). `ExitWatcher` looks at that directory every
`interval` seconds (one listdir while nothing exits) and has the container service bring the
containers with a new exit file up to date, which publishes their stopped events: a
container's exit is noticed within `interval` (0.5 s by default) when no List or Status call
noticed it sooner. A monitor that dies without an exit file is still noticed on demand."""
from __future__ import annotations

import threading

import structlog

from pycri.containers.service import ContainerService

log = structlog.get_logger("containers.exits")

INTERVAL_SECONDS = 0.5


class ExitWatcher:
    def __init__(self, service: ContainerService, interval: float = INTERVAL_SECONDS) -> None:
        self.service = service
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="exit-watcher", daemon=True)

    def start(self) -> ExitWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.service.notice_exits()
            except Exception:  # never let the watcher die
                log.exception("looking for container exits failed")
