"""Starting, finding and stopping a pod's infra process (sandbox/pause.py) for a shared PID namespace.

util-linux's unshare makes the PID namespace and forks the infra process as its PID 1; both
run in their own session, so they outlive a pycri restart. The infra process is known by
its host pid and start time (so a reused pid is never mistaken for it). In a pod with a user
namespace, unshare runs in it (util-linux nsenter, as its root), so the pod's user namespace
owns the PID namespace and the containers, which join it, may join this one too; the infra
process is then a shell loop (PAUSE_SHELL), since the pod's root may not be allowed to run
pycri's Python (a virtualenv under /root, say).
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from common.errors import Unavailable

PAUSE = Path(__file__).with_name("pause.py")
# PID 1 as a shell: `wait` reaps every child (orphans included), SIGTERM/SIGINT end it
PAUSE_SHELL = "trap 'exit 0' TERM INT; while :; do sleep 86400 & wait; done"
PAUSE_SHELL_NAME = "pycri-pause"
START_TIMEOUT = 10.0


@dataclass(frozen=True)
class Infra:
    pid: int  # the infra process, PID 1 of the pod's PID namespace
    start_time: int  # its start time in clock ticks since boot (field 22 of /proc/<pid>/stat)
    holder: int  # the unshare process that waits for it
    holder_start_time: int = 0

    @property
    def pid_namespace(self) -> str:
        return f"/proc/{self.pid}/ns/pid"

    def alive(self) -> bool:
        return _start_time(self.pid) == self.start_time

    def to_dict(self) -> dict[str, int]:
        return {"pid": self.pid, "start_time": self.start_time, "holder": self.holder,
                "holder_start_time": self.holder_start_time}

    @classmethod
    def from_dict(cls, data: dict[str, int]) -> "Infra":
        return cls(int(data["pid"]), int(data["start_time"]), int(data["holder"]),
                   int(data.get("holder_start_time", 0)))


def start(python: str = sys.executable, userns: str = "") -> Infra:
    if userns:
        program = ["nsenter", f"--user={userns}", "--", "unshare", "--pid", "--fork", "--kill-child=SIGKILL", "--",
                   "/bin/sh", "-c", PAUSE_SHELL, PAUSE_SHELL_NAME]
    else:
        program = ["unshare", "--pid", "--fork", "--kill-child=SIGKILL", "--", python, "-IS", str(PAUSE)]
    holder = subprocess.Popen(
        program,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        children = _children(holder.pid)
        if children:
            pid = children[0]
            start_time = _start_time(pid)
            holder_start = _start_time(holder.pid)
            if start_time is not None and holder_start is not None and _ns_differs(pid):
                return Infra(pid, start_time, holder.pid, holder_start)
        if holder.poll() is not None:
            break
        time.sleep(0.002)
    stop_process(holder.pid, _start_time(holder.pid))
    raise Unavailable("the pod's infra process did not start")


def stop(infra: Infra) -> None:
    """End the infra process, and with it every process of the pod's PID namespace."""
    if infra.alive():
        os.kill(infra.pid, signal.SIGKILL)
    stop_process(infra.holder, infra.holder_start_time)
    # with its parent (the holder) gone, the dead infra process is pycri's (a subreaper) to reap
    with contextlib.suppress(ChildProcessError):
        os.waitpid(infra.pid, os.WNOHANG)


def stop_process(pid: int, start_time: int | None) -> None:
    """SIGKILL `pid` if it is still the process that started at `start_time` (pids are reused)."""
    if start_time is None or _start_time(pid) != start_time:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # our child that already exited
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    try:  # our child when pycri started it; after a restart, init reaps it
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _start_time(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else int(fields[19])


def _ns_differs(pid: int) -> bool:
    """The child has entered its new PID namespace (unshare has forked and exec'd it)."""
    try:
        return os.readlink(f"/proc/{pid}/ns/pid") != os.readlink("/proc/self/ns/pid") and \
            any(name in Path(f"/proc/{pid}/cmdline").read_bytes() for name in (b"pause.py", PAUSE_SHELL_NAME.encode()))
    except OSError:
        return False
