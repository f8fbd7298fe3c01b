"""Reaping orphans: pycri is a child subreaper (conmon and timed-out exec processes come back to
it), so processes that escape a container (a host-PID container's daemon, say) are reparented to
pycri when their parent dies. The code that starts a process waits for it within moments; a
child that has stayed a zombie for GRACE_SECONDS is an orphan nobody will wait for: reap it.

A sweep reads only pycri's own children (`/proc/self/task/*/children`), not all of /proc, so
sweeping often costs next to nothing on a node with many containers."""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import structlog

log = structlog.get_logger("pycri.reaper")

SWEEP_SECONDS = 2.0
GRACE_SECONDS = 10.0


def children(parent: int | str = "self", proc: str = "/proc") -> set[int]:
    """Pids of the children of every thread of `parent`."""
    found: set[int] = set()
    try:
        tasks = os.listdir(f"{proc}/{parent}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"{proc}/{parent}/task/{tid}/children") as f:
                found.update(int(pid) for pid in f.read().split())
        except OSError:  # the thread ended meanwhile
            continue
    return found


def zombie_children(parent: int | str = "self", proc: str = "/proc") -> set[int]:
    """Pids of `parent`'s children that have exited and not been waited for."""
    found = set()
    for pid in children(parent, proc):
        try:
            with open(f"{proc}/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state == "Z":
            found.add(pid)
    return found


def has_zombie_child() -> bool:
    """Whether any child has exited and not been waited for: one waitid(2) that reaps nothing
    (WNOWAIT), so a sweep reads no /proc file in the usual case (pycri, a subreaper, has every
    conmon as a child: 110 stat files every sweep at kubelet's max-pods)."""
    try:
        return os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # no child at all
        return False


class OrphanReaper:
    """Sweeps every `interval` seconds; reaps the zombies first seen at least `grace` seconds ago."""

    def __init__(self, interval: float = SWEEP_SECONDS, grace: float = GRACE_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.grace = grace
        self.clock = clock
        self._first_seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reaper", daemon=True)

    def start(self) -> OrphanReaper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def sweep(self) -> list[int]:
        """One sweep; returns the pids reaped."""
        now = self.clock()
        zombies = zombie_children() if has_zombie_child() else set()
        self._first_seen = {pid: self._first_seen.get(pid, now) for pid in zombies}
        reaped = []
        for pid, since in sorted(self._first_seen.items()):
            if now - since < self.grace:
                continue  # its parent may be about to wait for it
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    reaped.append(pid)
            except ChildProcessError:  # someone else waited for it meanwhile
                pass
            del self._first_seen[pid]
        if reaped:
            log.info("reaped orphaned processes", pids=reaped)
        return reaped

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sweep()
            except Exception:  # never let the sweeper die
                log.exception("orphan sweep failed")
