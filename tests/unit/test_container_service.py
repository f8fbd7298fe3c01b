"""ContainerService against a fake runtime handler (containers/fake.py) and a recording syscall
(kernel/fake.py): the life cycle, its failure paths, and what is left behind. No root, no
runtime, no mounts."""
from __future__ import annotations

import io
import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pycri.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, RuntimeFailed
from pycri.containers.fake import FakeHandler
from pycri.containers.handler import ExecResult, StreamIO
from pycri.containers.oci_config import Capabilities, Cpu, Linux, Memory, Process, Resources, Root, Spec, User
from pycri.containers.service import ContainerService, NewContainer
from pycri.containers.records import CREATED, CREATING, EXITED, RUNNING, ContainerRecord
from pycri.kernel.fake import RecordingSyscall
from pycri.store.db import Database

POD = "p" * 64


@pytest.fixture
def fake() -> FakeHandler:
    return FakeHandler(name="fake")


@pytest.fixture
def syscall() -> RecordingSyscall:
    return RecordingSyscall()


@pytest.fixture
def containers(tmp_path: Path, fake: FakeHandler, syscall: RecordingSyscall) -> ContainerService:
    return ContainerService(Database(tmp_path / "db.sqlite"), tmp_path / "containers", tmp_path / "exits",
                            {"fake": fake}, "fake", syscall)


def new(tmp_path: Path, name: str = "main", *, log: bool = True, **fields: Any) -> NewContainer:
    """A container; `fields` set NewContainer's typed fields (tty, stdin, stop_signal, ...)."""
    spec = Spec(process=Process(terminal=bool(fields.get("tty")), user=User(0, 0, []), args=["sleep", "1d"],
                                env=["PATH=/bin", "TERM=dumb"], cwd="/", capabilities=Capabilities([], [], []),
                                no_new_privileges=False),
                root=Root("rootfs", False), mounts=[], annotations={},
                linux=Linux(namespaces=[], resources=Resources(memory=Memory(limit=1 << 20)), cgroups_path="",
                            masked_paths=[], readonly_paths=[], sysctl={}, devices=[]))
    return NewContainer(pod_id=POD, name=name, attempt=0, handler="fake", image="busybox", image_id="sha256:1",
                        image_ref="busybox@sha256:1", layers=[], spec=spec,
                        log_path=str(tmp_path / "logs" / f"{name}.log") if log else "", **fields)


def running(containers: ContainerService, tmp_path: Path, **fields: Any) -> ContainerRecord:
    record = containers.create(new(tmp_path, **fields))
    return containers.start(record.id)


# -- create ------------------------------------------------------------------

def test_create_lays_out_the_bundle_and_asks_the_handler(containers: ContainerService, fake: FakeHandler,
                                                         syscall: RecordingSyscall, tmp_path: Path) -> None:
    record = containers.create(new(tmp_path, stdin=True, tty=True))
    assert record.state == CREATED and record.pid > 0
    assert containers.get(record.id).state == CREATED
    ((container_id, paths, stdin, stdin_once, tty),) = fake.called("create")
    assert (container_id, stdin, stdin_once, tty) == (record.id, True, False, True)
    assert paths == containers.paths(record)
    merged = containers.root / record.id / "rootfs" / "merged"
    assert json.loads((paths.bundle / "config.json").read_text())["root"]["path"] == str(merged)
    assert [args[1] for name, args in syscall.calls if name == "mount"] == [str(merged)]


def test_create_twice_with_one_name_fails(containers: ContainerService, tmp_path: Path) -> None:
    containers.create(new(tmp_path))
    with pytest.raises(AlreadyExists):
        containers.create(new(tmp_path))


def test_create_with_an_unknown_handler_fails(containers: ContainerService, fake: FakeHandler,
                                              tmp_path: Path) -> None:
    bad = new(tmp_path)
    bad = NewContainer(**{**bad.__dict__, "handler": "nope"})
    with pytest.raises(InvalidArgument):
        containers.create(bad)
    assert containers.table.all() == [] and fake.calls == []


def test_a_failed_create_leaves_nothing(containers: ContainerService, fake: FakeHandler, tmp_path: Path) -> None:
    fake.failures["create"] = RuntimeFailed("fake could not create the container: no")
    with pytest.raises(RuntimeFailed):
        containers.create(new(tmp_path))
    assert containers.table.all() == []  # no row, not even a `creating` one
    assert list(containers.root.iterdir()) == []  # no rootfs, no bundle
    assert list(containers.exits.iterdir()) == []
    assert not (tmp_path / "logs" / "main.log").exists()
    ((container_id, _, _, _, _),) = fake.called("create")
    assert fake.called("delete") == [(container_id, True)] and fake.called("release") == [(container_id,)]


def test_a_failed_create_keeps_a_log_that_was_there(containers: ContainerService, fake: FakeHandler,
                                                    tmp_path: Path) -> None:
    log = tmp_path / "logs" / "main.log"
    log.parent.mkdir()
    log.write_text("the previous attempt's output\n")
    fake.failures["create"] = RuntimeFailed("no")
    with pytest.raises(RuntimeFailed):
        containers.create(new(tmp_path))
    assert log.read_text() == "the previous attempt's output\n"


def test_a_crash_during_create_is_undone_by_recover(containers: ContainerService, fake: FakeHandler,
                                                    tmp_path: Path) -> None:
    record = containers.create(new(tmp_path))
    record.state = CREATING
    with containers.db.transaction() as tx:
        containers.table.update(tx, record)
    containers.recover()
    assert containers.table.all() == [] and not (containers.root / record.id).exists()
    assert fake.called("release") == [(record.id,)]


# -- start, stop, status -------------------------------------------------------

def test_start(containers: ContainerService, fake: FakeHandler, tmp_path: Path) -> None:
    record = running(containers, tmp_path)
    assert record.state == RUNNING and record.started_at > 0
    assert fake.called("start") == [(record.id,)]
    with pytest.raises(FailedPrecondition):
        containers.start(record.id)


def test_a_failed_start_leaves_the_container_created(containers: ContainerService, fake: FakeHandler,
                                                     tmp_path: Path) -> None:
    record = containers.create(new(tmp_path))
    fake.failures["start"] = RuntimeFailed("fake start failed")
    with pytest.raises(RuntimeFailed):
        containers.start(record.id)
    assert containers.get(record.id).state == CREATED


def test_stop_sends_the_stop_signal(containers: ContainerService, fake: FakeHandler, tmp_path: Path) -> None:
    record = running(containers, tmp_path, stop_signal="SIGINT")
    stopped = containers.stop(record.id, 30)
    assert fake.called("kill") == [(record.id, int(signal.SIGINT), False)]
    assert (stopped.state, stopped.exit_code, stopped.reason) == (EXITED, 128 + signal.SIGINT, "Error")


def test_stop_kills_what_ignores_the_stop_signal(containers: ContainerService, fake: FakeHandler,
                                                 tmp_path: Path) -> None:
    record = running(containers, tmp_path)
    fake.ignore(signal.SIGTERM)
    stopped = containers.stop(record.id, 0.2)
    assert [sig for _, sig, _ in fake.called("kill")] == [signal.SIGTERM, signal.SIGKILL]
    assert (stopped.state, stopped.exit_code) == (EXITED, 128 + signal.SIGKILL)


def test_stop_without_a_timeout_kills(containers: ContainerService, fake: FakeHandler, tmp_path: Path) -> None:
    record = containers.create(new(tmp_path))  # created, never started: SIGKILL at once
    assert containers.stop(record.id, 10).state == EXITED
    assert [sig for _, sig, _ in fake.called("kill")] == [signal.SIGKILL]


def test_stop_of_an_exited_container_succeeds(containers: ContainerService, fake: FakeHandler,
                                              tmp_path: Path) -> None:
    record = running(containers, tmp_path)
    fake.exit(record.id, 0)
    stopped = containers.stop(record.id, 10)
    assert (stopped.state, stopped.exit_code, stopped.reason) == (EXITED, 0, "Completed")
    assert fake.called("kill") == []


def test_a_signal_that_cannot_be_sent_fails_stop(containers: ContainerService, fake: FakeHandler,
                                                 tmp_path: Path) -> None:
    record = running(containers, tmp_path)
    fake.failures["kill"] = RuntimeFailed("fake kill failed")
    containers.exit_record_wait = 0.2  # (it never exits: how long stop looks for an exit before failing)
    with pytest.raises(FailedPrecondition):
        containers.stop(record.id, 10)
    assert containers.get(record.id).state == RUNNING


def test_stop_of_a_container_that_died_before_its_exit_was_recorded_succeeds(
        containers: ContainerService, fake: FakeHandler, tmp_path: Path) -> None:
    # critest's "HostNetwork is false" container exits at once: StopPodSandbox's kill came after the
    # runtime saw it die and before conmon had reaped it and written the exit file
    record = running(containers, tmp_path)
    fake.die(record.id)  # its runtime says it is not running; no exit is known yet

    def monitor_records_the_exit() -> None:
        deadline = time.monotonic() + 30
        while not fake.called("kill") and time.monotonic() < deadline:
            time.sleep(0.01)
        fake.exit(record.id, 0)

    monitor = threading.Thread(target=monitor_records_the_exit)
    monitor.start()
    try:
        stopped = containers.stop(record.id, 10)
    finally:
        monitor.join(30)
    assert (stopped.state, stopped.exit_code) == (EXITED, 0)
    assert len(fake.called("kill")) == 1


def test_stop_fails_when_sigkill_does_not_end_it(containers: ContainerService, fake: FakeHandler,
                                                 tmp_path: Path) -> None:
    record = running(containers, tmp_path)
    fake.ignore(signal.SIGKILL)
    containers.kill_wait = 0.1
    with pytest.raises(FailedPrecondition):
        containers.stop(record.id, 0)


def test_status_from_the_handler(containers: ContainerService, fake: FakeHandler, tmp_path: Path) -> None:
    record = running(containers, tmp_path)
    assert containers.get(record.id).state == RUNNING
    fake.exit(record.id, 137, oom_killed=True)
    exited = containers.get(record.id)
    assert (exited.state, exited.exit_code, exited.reason, exited.message) == (EXITED, 137, "OOMKilled", "")
    assert exited.finished_at == fake.exits[record.id].finished_at
    assert exited.started_at == record.started_at
    calls = len(fake.called("exit_status"))
    containers.get(record.id)  # an exited container is not asked about again
    assert len(fake.called("exit_status")) == calls


def test_a_lost_monitor_is_an_unknown_exit(containers: ContainerService, fake: FakeHandler,
                                           tmp_path: Path) -> None:
    record = containers.create(new(tmp_path))
    fake.lose(record.id)
    exited = containers.get(record.id)
    assert (exited.state, exited.exit_code, exited.reason) == (EXITED, 255, "Unknown")
    assert exited.message and exited.started_at == 0


def test_a_handler_gone_from_the_configuration_is_watched_by_the_default(
        tmp_path: Path, fake: FakeHandler, containers: ContainerService) -> None:
    record = running(containers, tmp_path)
    record.handler = "removed"
    with containers.db.transaction() as tx:
        containers.table.update(tx, record)
    fake.exit(record.id, 0)
    assert containers.get(record.id).reason == "Completed"
    containers.remove(record.id)
    assert fake.called("delete") == []  # its runtime is unknown
    assert fake.called("release") == [(record.id,)]


# -- remove ----------------------------------------------------------------------

def test_remove_of_a_running_container_kills_it_first(containers: ContainerService, fake: FakeHandler,
                                                      tmp_path: Path) -> None:
    record = running(containers, tmp_path)
    (containers.exits / record.id).write_text("137")
    containers.remove(record.id)
    assert [sig for _, sig, _ in fake.called("kill")] == [signal.SIGKILL]
    assert fake.called("delete") == [(record.id, True)] and fake.called("release") == [(record.id,)]
    assert containers.table.all() == [] and not (containers.root / record.id).exists()
    assert not (containers.exits / record.id).exists()
    with pytest.raises(NotFound):
        containers.get(record.id)


def test_remove_of_an_absent_container_succeeds(containers: ContainerService, fake: FakeHandler) -> None:
    containers.remove("nothing")
    assert fake.calls == []


# -- exec, attach, update, log ------------------------------------------------------

def test_exec_sync(containers: ContainerService, fake: FakeHandler, tmp_path: Path) -> None:
    record = running(containers, tmp_path)
    fake.exec_result = ExecResult(3, b"out", b"err")
    assert containers.exec_sync(record.id, ["ls", "/"], 5) == ExecResult(3, b"out", b"err")
    ((container_id, process, timeout),) = fake.called("exec_sync")
    assert (container_id, process["args"], process["terminal"], timeout) == (record.id, ["ls", "/"], False, 5)
    assert process["env"] == ["PATH=/bin", "TERM=dumb"]  # the container's own environment


def test_exec_needs_a_command_and_a_running_container(containers: ContainerService, fake: FakeHandler,
                                                      tmp_path: Path) -> None:
    record = containers.create(new(tmp_path))
    with pytest.raises(FailedPrecondition):
        containers.exec_sync(record.id, ["ls"], 5)
    containers.start(record.id)
    with pytest.raises(InvalidArgument):
        containers.exec_sync(record.id, [], 5)
    fake.exit(record.id, 0)
    with pytest.raises(FailedPrecondition):
        containers.exec_sync(record.id, ["ls"], 5)
    assert fake.called("exec_sync") == []


def test_exec_stream_with_a_terminal_sets_term(containers: ContainerService, fake: FakeHandler,
                                               tmp_path: Path) -> None:
    record = running(containers, tmp_path)
    fake.exec_result = ExecResult(7, b"hello", b"")
    out = io.BytesIO()
    assert containers.exec_stream(record.id, ["sh"], True, StreamIO(stdout=out)) == 7
    assert out.getvalue() == b"hello"
    ((_, process, _),) = fake.called("exec_stream")
    assert process["terminal"] and process["env"] == ["PATH=/bin", "TERM=xterm"]


def test_attach(containers: ContainerService, fake: FakeHandler, tmp_path: Path) -> None:
    record = running(containers, tmp_path, tty=True)
    fake.attach_output = b"prompt$ "
    out = io.BytesIO()
    containers.attach(record.id, StreamIO(stdout=out))
    assert fake.called("attach") == [(record.id, True)] and out.getvalue() == b"prompt$ "
    fake.exit(record.id, 0)
    with pytest.raises(FailedPrecondition):
        containers.attach(record.id, StreamIO(stdout=out))


def test_update_resources(containers: ContainerService, fake: FakeHandler, tmp_path: Path) -> None:
    record = running(containers, tmp_path)
    containers.update_resources(record.id, Resources(cpu=Cpu(shares=512), memory=Memory(swap=1 << 21)))
    assert fake.called("update") == [(record.id, {"cpu": {"shares": 512}, "memory": {"swap": 1 << 21}})]
    resources = containers.spec(record).linux.resources
    assert resources == Resources(cpu=Cpu(shares=512), memory=Memory(limit=1 << 20, swap=1 << 21))


def test_a_failed_update_keeps_the_spec(containers: ContainerService, fake: FakeHandler, tmp_path: Path) -> None:
    record = running(containers, tmp_path)
    fake.failures["update"] = RuntimeFailed("fake update failed")
    with pytest.raises(RuntimeFailed):
        containers.update_resources(record.id, Resources(cpu=Cpu(shares=512)))
    assert containers.spec(record).linux.resources.cpu is None
    fake.exit(record.id, 0)
    with pytest.raises(FailedPrecondition):
        containers.update_resources(record.id, Resources(cpu=Cpu(shares=512)))


def test_reopen_log(containers: ContainerService, fake: FakeHandler, tmp_path: Path) -> None:
    record = running(containers, tmp_path)
    containers.reopen_log(record.id)
    assert fake.called("reopen_log") == [(record.id, record.log_path)]
    fake.exit(record.id, 0)
    with pytest.raises(FailedPrecondition):
        containers.reopen_log(record.id)


@pytest.mark.parametrize("implementation", ["ConmonHandler", "FakeHandler"])
def test_handlers_implement_the_whole_interface(implementation: str) -> None:
    """The fake stays in step with the interface, and so does the real handler (no type checker runs)."""
    import inspect

    from pycri.containers import conmon, fake, handler

    cls = {"ConmonHandler": conmon.ConmonHandler, "FakeHandler": fake.FakeHandler}[implementation]
    methods = [name for name, _ in inspect.getmembers(handler.RuntimeHandler, inspect.isfunction)
               if not name.startswith("_")]
    assert len(methods) == 13
    for name in methods:
        wanted = inspect.signature(getattr(handler.RuntimeHandler, name)).parameters
        have = inspect.signature(getattr(cls, name)).parameters
        assert list(have) == list(wanted), (implementation, name)
