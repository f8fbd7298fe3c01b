"""Reaping orphans: pycri is a child subreaper (conmon and timed-out exec processes come back to
it), so processes that escape a container (a host-PID container's daemon, say) are reparented to
pycri when their parent dies. The code that starts a process waits for it within moments; a
child that has stayed a zombie across two sweeps is an orphan nobody will wait for: reap it."""
from __future__ import annotations

import os
import threading

import structlog

log = structlog.get_logger("pycri.reaper")

SWEEP_SECONDS = 10.0


def zombie_children(parent: int, proc: str = "/proc") -> set[int]:
    """Pids of `parent`'s children that have exited and not been waited for."""
    found = set()
    for name in os.listdir(proc):
        if not name.isdigit():
            continue
        try:
            with open(f"{proc}/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] == "Z" and int(fields[1]) == parent:
            found.add(int(name))
    return found


class OrphanReaper:
    """Sweeps every `interval` seconds and reaps the zombies it saw in the previous sweep too."""

    def __init__(self, interval: float = SWEEP_SECONDS) -> None:
        self.interval = interval
        self._seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reaper", daemon=True)

    def start(self) -> OrphanReaper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def sweep(self) -> list[int]:
        """One sweep; returns the pids reaped."""
        zombies = zombie_children(os.getpid())
        reaped = []
        for pid in sorted(zombies & self._seen):
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    reaped.append(pid)
            except ChildProcessError:  # someone else waited for it meanwhile
                pass
        self._seen = zombies - set(reaped)
        if reaped:
            log.info("reaped orphaned processes", pids=reaped)
        return reaped

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sweep()
            except Exception:  # never let the sweeper die
                log.exception("orphan sweep failed")
