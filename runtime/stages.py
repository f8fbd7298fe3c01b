"""Forking the runtime's children and following them to "ready".

`launch` forks the first stage (which forks the container process itself, see runtime.init
and runtime.exec_process), puts it in the container's cgroups, lets it go, and waits for the
container process's pid and its "ready" or an error. The stage functions run in the
children under `run_child`, which turns any exception into an error message for the parent
and never returns.
"""
from __future__ import annotations

import os
import time

from runtime.errors import RuntimeFailure
from runtime.state import read_proc_stat
from runtime.sync import Channel, ChannelClosed, channel_pair

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn
    from collections.abc import Callable


def describe(error: BaseException) -> str:
    if isinstance(error, RuntimeFailure):
        return str(error)
    if isinstance(error, OSError):
        return str(error.strerror if error.strerror and not error.filename else error)
    return f"{type(error).__name__}: {error}"


def run_child(to_parent: Channel, stage: Callable[..., None], *args: Any) -> NoReturn:
    """Run `stage(to_parent, *args)` in a forked child, report its failure, and exit."""
    code = 1
    try:
        stage(to_parent, *args)
        code = 0
    except BaseException as e:  # noqa: BLE001 - everything goes to the parent, then we exit
        try:
            to_parent.send("error", message=describe(e))
        except OSError:
            pass
    finally:
        os._exit(code)


def kill_and_wait(pid: int, timeout: float = 5.0) -> None:
    """SIGKILL a process that may not be our child and wait until it is gone or a zombie."""
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stat = read_proc_stat(pid)
        if stat is None or stat.state in ("Z", "X"):
            return
        time.sleep(0.01)


def reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def launch(stage: Callable[..., None], args: tuple[Any, ...], *, join_cgroups: Callable[[int], None] | None,
           timeout: float, reap_on_failure: bool = False) -> int:
    """Fork `stage(to_parent, from_parent, *args)`; returns the container process's host pid
    once it reported ready. On failure the process is killed (and reaped, with
    `reap_on_failure`, when this process is its subreaper) and RuntimeFailure raised."""
    child_reader, parent_writer = channel_pair()  # runtime -> first stage
    parent_reader, child_writer = channel_pair()  # stages -> runtime
    first = os.fork()
    if first == 0:
        parent_writer.close()
        parent_reader.close()
        run_child(child_writer, stage, child_reader, *args)
    child_reader.close()
    child_writer.close()
    pid = 0
    try:
        if join_cgroups is not None:
            join_cgroups(first)
        parent_writer.send("go")
        parent_writer.close()
        while True:
            try:
                message = parent_reader.receive(timeout=timeout)
            except ChannelClosed:
                raise RuntimeFailure("the container process exited before it was ready") from None
            except TimeoutError:
                raise RuntimeFailure(f"the container process was not ready after {timeout:g} s") from None
            kind = message.get("type")
            if kind == "pid":
                pid = int(str(message["pid"]))
            elif kind == "error":
                raise RuntimeFailure(f"unable to start container process: {message.get('message')}")
            elif kind == "ready" and pid:
                return pid
    except BaseException:
        if pid:
            kill_and_wait(pid)
        try:
            os.kill(first, 9)
        except ProcessLookupError:
            pass
        reap(first)
        if pid and reap_on_failure:
            reap(pid)
        raise
    finally:
        parent_reader.close()
        parent_writer.close()
        reap(first)
