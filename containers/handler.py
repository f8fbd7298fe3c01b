"""The runtime handler: everything ContainerService asks of whatever runs and watches a
container (CRI's runtime_handler names one). It is the whole contract, as CRI-O's
`RuntimeImpl`: create, start, kill, delete, exec, update and features, and the monitor's
part: the exit status, attach, reopening the log and releasing the monitor.

The service lays out each container's files (`ContainerPaths`) and keeps its record; a
handler keeps what it needs inside those paths and says nothing about CRI's states.
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol


@dataclass(frozen=True)
class ContainerPaths:
    """Where a container's runtime files live."""

    bundle: Path  # config.json (and rootfs, or root.path pointing elsewhere); the monitor's pid files and sockets
    persist: Path  # what the monitor keeps about the container: its exit code, an oom mark
    exit_file: Path  # where the monitor writes the exit code (in the state directory: gone on reboot)
    log_path: str  # the CRI log file ("" for none)


@dataclass(frozen=True)
class HandlerFeatures:
    """What a runtime handler can do, from its `features` command (runtime-spec features.md)."""

    mount_options: frozenset[str] = frozenset()
    # "rro" in the runtime's mount options and mount_setattr(2) in the kernel (as containerd decides)
    recursive_read_only_mounts: bool = False
    # "user" in the runtime's namespaces and idmapped mounts in the kernel (pycri idmaps the
    # rootfs's layers itself; the runtime joins the pod's user namespace)
    user_namespaces: bool = False


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: bytes
    stderr: bytes


@dataclass(frozen=True)
class ExitStatus:
    """How a container ended, as its monitor recorded it."""

    code: int
    finished_at: int  # ns since the epoch
    oom_killed: bool = False
    # the monitor is gone and left no exit code (code is then 255, finished_at the time it was noticed)
    lost: bool = False


@dataclass
class StreamIO:
    """A client's end of an exec or attach stream."""

    stdin: BinaryIO | None = None  # read(n) -> bytes, b"" at EOF
    stdout: BinaryIO | None = None  # write(bytes)
    stderr: BinaryIO | None = None
    resize: "queue.Queue[tuple[int, int] | None] | None" = None  # (width, height); None ends it
    gone: threading.Event | None = None  # set when the client has left (attach then ends)


class Creation(Protocol):
    """A container's creation under way in its runtime (`RuntimeHandler.begin_create`)."""

    def ready(self) -> bool:
        """Whether `wait` would return (or raise) at once."""
        ...

    def wait(self) -> int:
        """The container's pid once its runtime has created it; raises RuntimeFailed (with the
        runtime's reason) when it could not."""
        ...


@dataclass(frozen=True)
class Created:
    """A creation that is over: the container's pid."""

    pid: int

    def ready(self) -> bool:
        return True

    def wait(self) -> int:
        return self.pid


class RuntimeHandler(Protocol):
    """Runs containers and watches them; `name` is the CRI runtime_handler it serves."""

    name: str

    def begin_create(self, container_id: str, paths: ContainerPaths, *, stdin: bool = False,
                     stdin_once: bool = False, tty: bool = False) -> Creation:
        """Create the container from paths.bundle, with a monitor watching it: back once the
        monitor is on its way, before the runtime has created the container (its pid, or the
        runtime's failure: `Creation.wait`). What fails before (the monitor would not start)
        raises here."""
        ...

    def start(self, container_id: str) -> None: ...

    def kill(self, container_id: str, sig: int, *, all_processes: bool = False) -> None: ...

    def delete(self, container_id: str, *, force: bool = False) -> None:
        """Delete the container from the runtime; an absent one is fine."""
        ...

    def exec_sync(self, container_id: str, process: dict[str, Any], timeout: float) -> ExecResult:
        """Run `process` in the container and collect its output (DeadlineExceeded after `timeout`)."""
        ...

    def exec_stream(self, container_id: str, process: dict[str, Any], io: StreamIO) -> int:
        """Run `process` in the container with its I/O streamed; its exit code."""
        ...

    def update(self, container_id: str, resources: dict[str, Any]) -> None: ...

    def features(self) -> HandlerFeatures: ...

    def exit_status(self, container_id: str, paths: ContainerPaths) -> ExitStatus | None:
        """How the container ended, or None while it runs (or has yet to start)."""
        ...

    def watch(self, container_id: str, paths: ContainerPaths) -> int | None:
        """A file descriptor (the caller's to close) that polls readable once the container's
        monitor has ended; None when the monitor is gone or cannot be watched. While it is not
        readable and the monitor has written no exit file (paths.exit_file), `exit_status`
        would say the container runs: the service asks no more than that."""
        ...

    def attach(self, container_id: str, paths: ContainerPaths, io: StreamIO, tty: bool) -> None:
        """Stream the running container's stdio until its output ends or the client leaves."""
        ...

    def reopen_log(self, container_id: str, paths: ContainerPaths) -> None:
        """Have the monitor reopen paths.log_path (after kubelet rotated it)."""
        ...

    def release(self, container_id: str, paths: ContainerPaths) -> None:
        """Let go of the container's monitor: kill it if it still runs, and collect it."""
        ...
