"""A fake runtime handler for unit tests: it records every call and runs nothing. Containers
live in memory; a test makes them exit (`exit`), lose their monitor (`lose`), ignore
signals (`ignore`), or makes any call fail (`failures`). A container's monitor is watched
through a pipe whose write end closes when the container exits or its monitor is lost
(`watchable = False`: no watching, as a kernel without pidfds)."""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from pycri.common.recorder import Recorder
from pycri.containers.handler import (
    ContainerPaths, Created, Creation, ExecResult, ExitStatus, HandlerFeatures, StreamIO,
)

CREATED, RUNNING = "created", "running"


class FakeCreation:
    """A creation a test ends: `succeed()` (the runtime has the container) or `fail(error)`;
    `wait` blocks until then."""

    def __init__(self) -> None:
        self._ended = threading.Event()
        self._error: Exception | None = None
        self._handler: FakeHandler | None = None
        self.container_id = ""
        self.pid = 0
        self.waited = threading.Event()  # set once someone waits for it

    def begin(self, handler: FakeHandler, container_id: str, pid: int) -> None:
        self._handler, self.container_id, self.pid = handler, container_id, pid

    def succeed(self) -> None:
        assert self._handler is not None
        self._handler.states[self.container_id] = CREATED
        self._ended.set()

    def fail(self, error: Exception) -> None:
        self._error = error
        self._ended.set()

    def ready(self) -> bool:
        return self._ended.is_set()

    def wait(self) -> int:
        self.waited.set()
        if not self._ended.wait(60):
            raise TimeoutError("the test never ended this creation")
        if self._error is not None:
            raise self._error
        return self.pid


@dataclass
class FakeHandler(Recorder):
    name: str = "fake"
    # container id -> "created" or "running", while it has not exited
    states: dict[str, str] = field(default_factory=dict)
    exits: dict[str, ExitStatus] = field(default_factory=dict)
    ignored: set[int] = field(default_factory=set)  # signals the containers do not die of
    exec_result: ExecResult = ExecResult(0, b"", b"")
    attach_output: bytes = b""
    handler_features: HandlerFeatures = HandlerFeatures()
    next_pid: int = 1000
    watchable: bool = True
    creation: FakeCreation | None = None  # the next begin_create's, when a test wants to end it itself
    # container id -> the write end of its watch pipe, open while its monitor "lives"
    monitors: dict[str, int] = field(default_factory=dict)
    # containers whose process has died but whose monitor has not recorded the exit yet (`die`)
    dying: set[str] = field(default_factory=set)

    # -- what a test does to the containers ------------------------------------

    def die(self, container_id: str) -> None:
        """The container's process dies; its monitor records the exit only at `exit` (the
        moment between: the runtime says it is not running, and no exit is known yet)."""
        self.states.pop(container_id, None)
        self.dying.add(container_id)

    def exit(self, container_id: str, code: int, *, oom_killed: bool = False) -> None:
        """The container exits with `code` (its monitor records it, then ends)."""
        self.states.pop(container_id, None)
        self.dying.discard(container_id)
        self.exits[container_id] = ExitStatus(code, time.time_ns(), oom_killed=oom_killed)
        self._end_monitor(container_id)

    def lose(self, container_id: str) -> None:
        """The container's monitor dies without recording an exit."""
        self.states.pop(container_id, None)
        self.exits[container_id] = ExitStatus(255, time.time_ns(), lost=True)
        self._end_monitor(container_id)

    def _end_monitor(self, container_id: str) -> None:
        fd = self.monitors.pop(container_id, None)
        if fd is not None:
            os.close(fd)

    def ignore(self, sig: int) -> None:
        self.ignored.add(int(sig))

    # -- RuntimeHandler ---------------------------------------------------------

    def begin_create(self, container_id: str, paths: ContainerPaths, *, stdin: bool = False,
                     stdin_once: bool = False, tty: bool = False) -> Creation:
        """Recorded as "create" (an injected failure of "create" raises here, before the monitor
        is on its way). With `creations` set to a FakeCreation, that one is given (and taken):
        a creation the test ends when it wants, with a pid or a failure."""
        self._record("create", container_id, paths, stdin, stdin_once, tty)
        self.next_pid += 1
        if self.creation is not None:
            creation, self.creation = self.creation, None
            creation.begin(self, container_id, self.next_pid)
            return creation
        self.states[container_id] = CREATED
        return Created(self.next_pid)

    def start(self, container_id: str) -> None:
        self._record("start", container_id)
        self.states[container_id] = RUNNING

    def kill(self, container_id: str, sig: int, *, all_processes: bool = False) -> None:
        self._record("kill", container_id, int(sig), all_processes)
        if container_id not in self.states:
            raise LookupError(f"container {container_id} is not running")
        if int(sig) not in self.ignored:
            self.exit(container_id, 128 + int(sig))

    def delete(self, container_id: str, *, force: bool = False) -> None:
        self._record("delete", container_id, force)
        if self.states.pop(container_id, None) is not None:  # a live container dies with its delete
            self.exits[container_id] = ExitStatus(137, time.time_ns())
            self._end_monitor(container_id)

    def exec_sync(self, container_id: str, process: dict[str, Any], timeout: float) -> ExecResult:
        self._record("exec_sync", container_id, process, timeout)
        return self.exec_result

    def exec_stream(self, container_id: str, process: dict[str, Any], io: StreamIO) -> int:
        self._record("exec_stream", container_id, process, io)
        if io.stdout is not None:
            io.stdout.write(self.exec_result.stdout)
        return self.exec_result.exit_code

    def update(self, container_id: str, resources: dict[str, Any]) -> None:
        self._record("update", container_id, resources)

    def features(self) -> HandlerFeatures:
        self._record("features")
        return self.handler_features

    def exit_status(self, container_id: str, paths: ContainerPaths) -> ExitStatus | None:
        self._record("exit_status", container_id)
        if container_id in self.states or container_id in self.dying:
            return None
        return self.exits.get(container_id, ExitStatus(255, time.time_ns(), lost=True))

    def watch(self, container_id: str, paths: ContainerPaths) -> int | None:
        self._record("watch", container_id)
        if not self.watchable or container_id not in self.states:
            return None
        read_end, write_end = os.pipe()
        self._end_monitor(container_id)
        self.monitors[container_id] = write_end
        return read_end

    def attach(self, container_id: str, paths: ContainerPaths, io: StreamIO, tty: bool) -> None:
        self._record("attach", container_id, tty)
        if io.stdout is not None:
            io.stdout.write(self.attach_output)

    def reopen_log(self, container_id: str, paths: ContainerPaths) -> None:
        self._record("reopen_log", container_id, paths.log_path)

    def release(self, container_id: str, paths: ContainerPaths) -> None:
        self._record("release", container_id)
        self.exits.pop(container_id, None)  # what the monitor recorded goes with it
        self._end_monitor(container_id)
