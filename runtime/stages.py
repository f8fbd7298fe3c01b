"""Forking the runtime's children and following them to "ready".

`launch` forks the first stage (which forks the container process itself, see runtime.init
and runtime.exec_process), puts it in the container's cgroups, lets it go, and waits for the
container process's pid and its "ready" or an error. The stage functions run in the
children under `run_child`, which turns any exception into an error message for the parent
and never returns.

The "pid" message comes from the first stage and "ready" from the container process, two
processes writing to one pipe: they arrive in either order (the container process can get
through its set-up before the first stage, just back from fork, is scheduled again), so
`launch` waits for both, whatever their order.
"""
from __future__ import annotations

import os
import time

from pycri.runtime.errors import RuntimeFailure
from pycri.runtime.state import read_proc_stat
from pycri.runtime.sync import ChannelClosed, channel_pair

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, NoReturn

    from pycri.runtime.sync import Channel

# a message line must fit in PIPE_BUF (4096) so that writes of two processes never interleave
MAX_MESSAGE = 3000
# after an error from the container process: how long to wait for the first stage's "pid"
PID_GRACE = 2.0


def describe(error: BaseException) -> str:
    try:
        if isinstance(error, RuntimeFailure):
            text = str(error)
        elif isinstance(error, OSError):
            text = str(error.strerror if error.strerror and not error.filename else error)
        else:
            text = f"{type(error).__name__}: {error}"
    except Exception:  # noqa: BLE001 - a broken __str__ must not cost the message
        text = type(error).__name__
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + "..."


def report(to_parent: Channel, message: str) -> None:
    """An error for the parent; on stderr when the channel is closed or the parent gone."""
    if to_parent.fd >= 0:
        try:
            to_parent.send("error", message=message)
            return
        except OSError:
            pass
    try:
        os.write(2, f"pycri-runtime: {message}\n".encode(errors="replace"))
    except OSError:
        pass


def run_child(to_parent: Channel, stage: Callable[..., None], *args: Any, close: tuple[Channel, ...] = ()) -> NoReturn:
    """Run `stage(to_parent, *args)` in a forked child (after closing the parent's ends of
    the channels, `close`), report its failure, and exit: every way out goes through
    os._exit, and every failure sends a message (or, with no one to read it, goes to stderr)."""
    code = 1
    try:
        try:
            for channel in close:
                channel.close()
            stage(to_parent, *args)
            code = 0
        except BaseException as e:  # noqa: BLE001 - everything goes to the parent, then we exit
            report(to_parent, describe(e))
    finally:
        os._exit(code)


def start_time(pid: int) -> int | None:
    """The start time of a live process (to tell it from a later one with the same pid)."""
    stat = read_proc_stat(pid)
    return stat.start_time if stat is not None else None


def kill_and_wait(pid: int, timeout: float = 5.0, start: int | None = None) -> None:
    """SIGKILL a process that may not be our child and wait until it is gone or a zombie.
    With `start` (its start time), a different process that got the pid is left alone."""
    if start is not None and start_time(pid) != start:
        return
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stat = read_proc_stat(pid)
        if stat is None or stat.state in ("Z", "X") or (start is not None and stat.start_time != start):
            return
        time.sleep(0.01)


def reap(pid: int) -> int | None:
    """Wait for a child; its wait status, None when it is not (or no longer) our child."""
    while True:
        try:
            return os.waitpid(pid, 0)[1]
        except ChildProcessError:
            return None
        except InterruptedError:  # pragma: no cover - PEP 475 retries; a handler may raise
            continue


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.WEXITSTATUS(status)}"


class _Launch:
    """What the parent knows of the children of one `launch`."""

    def __init__(self, first: int) -> None:
        self.first = first
        self.first_status: int | None = None  # set once reaped
        self.pid = 0
        self.pid_start: int | None = None
        self.ready = False

    def take(self, message: dict[str, object]) -> str | None:
        """Record a message; the error text of an "error"."""
        kind = message.get("type")
        if kind == "pid":
            self.pid = int(str(message["pid"]))
            start = start_time(self.pid)
            self.pid_start = -1 if start is None else start  # -1: already gone, never to be killed
        elif kind == "ready":
            self.ready = True
        elif kind == "error":
            return str(message.get("message"))
        return None

    def reap_first(self) -> int | None:
        if self.first_status is None:
            self.first_status = reap(self.first)
            if self.first_status is None:
                self.first_status = -1  # not ours to wait for: never wait or kill again
        return self.first_status if self.first_status >= 0 else None


def _learn_pid(state: _Launch, reader: Channel) -> None:
    """After an error, read on briefly for the "pid" the first stage may still be sending,
    so that the container process can be killed and reaped too."""
    deadline = time.monotonic() + PID_GRACE
    while not state.pid:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        try:
            state.take(reader.receive(timeout=remaining))
        except (ChannelClosed, TimeoutError, ValueError, OSError):
            return


def _exited_early(state: _Launch) -> str:
    """The message for end of file before "ready": every child exited without an error."""
    text = "the container process exited before it was ready"
    status = state.reap_first()
    if status is not None and status != 0:
        return f"{text} (the runtime's first stage: {describe_status(status)})"
    if not state.pid:
        return f"{text} (the first stage exited without reporting the container process)"
    return text


def write_id_maps(pid: int, uid_map: str, gid_map: str, proc: str = "/proc") -> None:
    """The maps of a child's new user namespace (root on the host: setgroups stays allowed)."""
    from pycri.kernel import idmap

    try:
        idmap.write_id_maps(pid, uid_map, gid_map, proc)
    except idmap.IdMapError as e:
        raise RuntimeFailure(f"write {e.name} of the user namespace: {e.reason}") from None


class Started:
    """A first stage forked ahead of its "go" (`fork_stage`): it may prepare (import, read
    files) but does nothing else until `follow` lets it go. Whoever forked it either follows
    it or aborts it."""

    def __init__(self, first: int, parent_writer: Channel, parent_reader: Channel) -> None:
        self.first = first
        self.parent_writer = parent_writer
        self.parent_reader = parent_reader
        self.followed = False

    def abort(self) -> None:
        """Kill and reap the first stage and close the channels (a no-op once followed: `follow`
        cleans up after itself)."""
        if self.followed:
            return
        self.followed = True
        try:
            os.kill(self.first, 9)
        except ProcessLookupError:
            pass
        reap(self.first)
        self.parent_reader.close()
        self.parent_writer.close()


def fork_stage(stage: Callable[..., None], args: tuple[Any, ...]) -> Started:
    """Fork `stage(to_parent, from_parent, *args)`; the stage waits for `follow`'s "go"."""
    child_reader, parent_writer = channel_pair()  # runtime -> first stage
    parent_reader, child_writer = channel_pair()  # stages -> runtime
    first = os.fork()
    if first == 0:
        run_child(child_writer, stage, child_reader, *args, close=(parent_writer, parent_reader))
    child_reader.close()
    child_writer.close()
    return Started(first, parent_writer, parent_reader)


def launch(stage: Callable[..., None], args: tuple[Any, ...], *, join_cgroups: Callable[[int], None] | None,
           timeout: float, reap_on_failure: bool = False, id_maps: tuple[str, str] | None = None) -> int:
    """Fork `stage(to_parent, from_parent, *args)`; returns the container process's host pid
    once it reported ready (`follow`)."""
    return follow(fork_stage(stage, args), join_cgroups=join_cgroups, timeout=timeout,
                  reap_on_failure=reap_on_failure, id_maps=id_maps)


def follow(started: Started, *, join_cgroups: Callable[[int], None] | None, timeout: float,
           reap_on_failure: bool = False, id_maps: tuple[str, str] | None = None) -> int:
    """Put a forked first stage in the container's cgroups, let it go, and wait for the
    container process's pid and "ready"; returns that pid. On failure the process is killed
    (and reaped, with `reap_on_failure`, when this process is its subreaper) and
    RuntimeFailure raised. With `id_maps` (uid_map, gid_map) the first stage makes a user
    namespace and asks ("userns") for its maps, which are written before it is told "mapped"."""
    started.followed = True
    first, parent_writer, parent_reader = started.first, started.parent_writer, started.parent_reader
    state = _Launch(first)
    deadline = time.monotonic() + timeout
    try:
        if join_cgroups is not None:
            join_cgroups(first)
        try:
            parent_writer.send("go")
        except BrokenPipeError:
            pass  # the first stage is gone already: the end of its channel says so below
        if id_maps is None:
            parent_writer.close()
        while not (state.pid and state.ready):
            remaining = deadline - time.monotonic()
            try:
                message = parent_reader.receive(timeout=max(remaining, 0.0))
            except ChannelClosed:
                raise RuntimeFailure(_exited_early(state)) from None
            except TimeoutError:
                raise RuntimeFailure(f"the container process was not ready after {timeout:g} s") from None
            if message.get("type") == "userns" and id_maps is not None and parent_writer.fd >= 0:
                write_id_maps(int(str(message["pid"])), *id_maps)
                parent_writer.send("mapped")
                parent_writer.close()
                continue
            error = state.take(message)
            if error is not None:
                _learn_pid(state, parent_reader)
                raise RuntimeFailure(f"unable to start container process: {error}")
        return state.pid
    except BaseException:
        if state.pid:
            kill_and_wait(state.pid, start=state.pid_start)
        if state.first_status is None:
            try:
                os.kill(first, 9)
            except ProcessLookupError:
                pass
            state.reap_first()
        if state.pid and reap_on_failure:
            reap(state.pid)
        raise
    finally:
        parent_reader.close()
        parent_writer.close()
        state.reap_first()
