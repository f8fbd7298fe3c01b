"""runtime.stages: `launch` and its children, with toy stages forked from this process.

The stages are ordered with pipes (no sleeps), so each interleaving of the two writers
(the first stage's "pid", the container process's "ready"/"error") is forced, not hoped for.
This process is the subreaper of the toy container processes, as conmon is of real ones.
"""
from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import pytest

from pycri.kernel.linux import LinuxSyscall
from pycri.kernel.syscall import PR_SET_CHILD_SUBREAPER
from pycri.runtime import stages
from pycri.runtime.errors import RuntimeFailure
from pycri.runtime.stages import kill_and_wait, launch, run_child, start_time
from pycri.runtime.sync import Channel


@pytest.fixture(autouse=True)
def _subreaper() -> Iterator[None]:
    kernel = LinuxSyscall()
    kernel.prctl(PR_SET_CHILD_SUBREAPER, 1)
    yield
    kernel.prctl(PR_SET_CHILD_SUBREAPER, 0)


def _wait_eof(fd: int) -> None:
    while os.read(fd, 1):
        pass


def _two_stages(second: str, *, pid_after_second: bool):
    """A first stage that forks a second one doing `second` ("ready", "error", "exit",
    "sigkill"); with `pid_after_second`, "pid" is sent only once the second is done (the
    order the scheduler may pick under load), else before it starts."""

    def first_stage(to_parent: Channel, from_parent: Channel) -> None:
        assert from_parent.receive()["type"] == "go"
        from_parent.close()
        gate_r, gate_w = os.pipe()  # closed by the second stage when it is done
        start_r, start_w = os.pipe()  # closed by the first stage once "pid" is out
        pid = os.fork()
        if pid == 0:
            os.close(gate_r)
            os.close(start_w)
            run_child(to_parent, second_stage, gate_w, start_r)
        os.close(gate_w)
        os.close(start_r)
        if pid_after_second:
            _wait_eof(gate_r)
        to_parent.send("pid", pid=pid)
        os.close(start_w)
        _wait_eof(gate_r)

    def second_stage(to_parent: Channel, gate_w: int, start_r: int) -> None:
        # gate_w closes when this process exits (after run_child sent the error), or
        # after "ready" for the one that lives on
        if not pid_after_second:
            _wait_eof(start_r)
        if second == "ready":
            to_parent.send("ready")
            to_parent.close()
            os.close(gate_w)
            time.sleep(30)  # the "container process": killed by the test
        elif second == "error":
            raise RuntimeFailure("exec: no such thing")
        elif second == "exit":
            to_parent.close()
            os._exit(3)
        elif second == "sigkill":
            os.kill(os.getpid(), 9)

    return first_stage


@pytest.mark.parametrize("pid_after_second", [False, True], ids=["pid-first", "ready-first"])
def test_ready_and_pid_in_either_order(pid_after_second: bool) -> None:
    pid = launch(_two_stages("ready", pid_after_second=pid_after_second), (), join_cgroups=None, timeout=10)
    try:
        assert pid > 0 and start_time(pid) is not None
    finally:
        os.kill(pid, 9)
        _reap_orphan(pid)


@pytest.mark.parametrize("pid_after_second", [False, True], ids=["pid-first", "error-first"])
def test_an_error_before_the_pid_still_finds_the_process(pid_after_second: bool, monkeypatch) -> None:
    killed: list[int] = []
    real = stages.kill_and_wait
    monkeypatch.setattr(stages, "kill_and_wait", lambda pid, **kw: (killed.append(pid), real(pid, **kw)))
    with pytest.raises(RuntimeFailure, match="unable to start container process: exec: no such thing"):
        launch(_two_stages("error", pid_after_second=pid_after_second), (), join_cgroups=None, timeout=10,
               reap_on_failure=True)
    assert len(killed) == 1 and killed[0] > 0
    with pytest.raises(ChildProcessError):
        os.waitpid(killed[0], os.WNOHANG)  # reaped


@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_a_silent_exit_is_reported(how: str) -> None:
    with pytest.raises(RuntimeFailure, match="the container process exited before it was ready"):
        launch(_two_stages(how, pid_after_second=False), (), join_cgroups=None, timeout=10, reap_on_failure=True)


def test_a_first_stage_that_dies_says_how() -> None:
    def first_stage(to_parent: Channel, from_parent: Channel) -> None:
        os.kill(os.getpid(), 9)

    with pytest.raises(RuntimeFailure, match=r"before it was ready \(the runtime's first stage: killed by signal 9\)"):
        launch(first_stage, (), join_cgroups=None, timeout=10)


def test_a_failing_first_stage_reports_its_error() -> None:
    def first_stage(to_parent: Channel, from_parent: Channel) -> None:
        from_parent.receive()
        raise OSError(1, "Operation not permitted")

    with pytest.raises(RuntimeFailure, match="unable to start container process: Operation not permitted"):
        launch(first_stage, (), join_cgroups=None, timeout=10)


def test_a_cgroup_join_failure_kills_the_first_stage() -> None:
    seen: list[int] = []

    def join(pid: int) -> None:
        seen.append(pid)
        raise RuntimeFailure("no cgroup")

    with pytest.raises(RuntimeFailure, match="no cgroup"):
        launch(lambda to_parent, from_parent: from_parent.receive(), (), join_cgroups=join, timeout=10)
    with pytest.raises(ChildProcessError):
        os.waitpid(seen[0], os.WNOHANG)  # reaped


def test_an_error_after_the_channel_closed_goes_to_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    reader, writer = os.pipe()
    channel = Channel(writer)
    channel.close()
    pid = os.fork()
    if pid == 0:
        os.close(reader)
        run_child(channel, _fail_late)
    os.close(reader)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 1
    assert "pycri-runtime: too late" in capfd.readouterr().err


def _fail_late(to_parent: Channel) -> None:
    raise RuntimeFailure("too late")


def test_kill_and_wait_leaves_a_reused_pid_alone() -> None:
    proc = subprocess.Popen(["sleep", "30"])
    try:
        start = start_time(proc.pid)
        assert start is not None
        kill_and_wait(proc.pid, start=start + 1)  # another process's start time: not this one
        assert proc.poll() is None
        kill_and_wait(proc.pid, start=start)
        assert proc.wait(5) == -9
    finally:
        proc.kill()
        proc.wait()


def test_long_error_messages_fit_in_one_pipe_write() -> None:
    text = stages.describe(RuntimeFailure("x" * 10000))
    assert len(text.encode()) < 4000 and text.endswith("...")


def _reap_orphan(pid: int) -> None:
    """The toy container process, orphaned to this process (the subreaper) by its first stage."""
    assert os.waitpid(pid, 0)[0] == pid
