"""CreateContainer returns once the runtime's create is on its way (its monitor started), as
containerd's returns before its task exists: the container is created (listed, its created
event sent) while its runtime makes it. Whatever needs the runtime's container waits for that
first: start (which reports the runtime's failure, the container then exited with StartError,
exit code 128, deleted from its runtime and unmounted, as containerd's StartError), stop,
remove, an update. Against the fake handler (a creation the test ends: FakeCreation)."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest

from pycri.common.errors import RuntimeFailed
from pycri.common.lifecycle import LifecycleEvent
from pycri.containers.fake import FakeCreation, FakeHandler
from pycri.containers.oci_config import Resources
from pycri.containers.records import CREATED, EXITED, RUNNING
from pycri.containers.service import START_ERROR, START_ERROR_EXIT_CODE, ContainerService
from pycri.kernel.fake import RecordingSyscall
from tests.unit.test_container_service import containers, fake, new, syscall  # noqa: F401 (fixtures)

DEADLINE = 30.0


def events(containers: ContainerService) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    containers.events.subscribe(lambda e: seen.append((e.kind, e.subject_id)) if isinstance(e, LifecycleEvent) else None)
    return seen


def in_thread(action) -> tuple[threading.Thread, list[object]]:  # noqa: ANN001
    out: list[object] = []

    def run() -> None:
        try:
            out.append(action())
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            out.append(exc)
    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def test_create_returns_before_the_runtime_is_done_and_start_waits_for_it(
        containers: ContainerService, fake: FakeHandler, tmp_path: Path) -> None:
    seen = events(containers)
    fake.creation = creation = FakeCreation()
    record = containers.create(new(tmp_path))
    assert record.state == CREATED and not creation.ready()
    assert [r.state for r in containers.list()] == [CREATED]
    assert containers.get(record.id).state == CREATED  # (not taken for a container whose monitor is gone)
    assert seen == [("created", record.id)]
    starting, out = in_thread(lambda: containers.start(record.id))
    assert creation.waited.wait(DEADLINE)
    assert fake.called("start") == []  # nothing starts before the runtime has the container
    creation.succeed()
    starting.join(DEADLINE)
    assert out and out[0].state == RUNNING  # type: ignore[attr-defined]
    assert containers.get(record.id).pid == creation.pid
    assert [kind for kind, _ in seen] == ["created", "started"]


def test_a_creation_that_fails_is_the_starts_error_and_leaves_an_exited_container(
        containers: ContainerService, fake: FakeHandler, syscall: RecordingSyscall, tmp_path: Path) -> None:
    seen = events(containers)
    fake.creation = creation = FakeCreation()
    record = containers.create(new(tmp_path))
    starting, out = in_thread(lambda: containers.start(record.id))
    assert creation.waited.wait(DEADLINE)
    creation.fail(RuntimeFailed("fake could not create the container: no such file: /bin/nothing"))
    starting.join(DEADLINE)
    assert isinstance(out[0], RuntimeFailed) and "no such file" in str(out[0])
    failed = containers.get(record.id)
    assert (failed.state, failed.reason, failed.exit_code) == (EXITED, START_ERROR, START_ERROR_EXIT_CODE)
    assert "no such file" in failed.message and failed.finished_at and not failed.started_at
    assert [kind for kind, _ in seen] == ["created", "stopped"]
    containers.runtime_deletes.wait(record.id)
    assert fake.called("delete") == [(record.id, True)]
    assert any(name == "umount" for name, _ in syscall.calls)  # its rootfs, as an exited container's
    with pytest.raises(RuntimeFailed, match="no such file"):  # a second start says so again
        containers.start(record.id)
    containers.remove(record.id)
    assert containers.table.all() == []


def test_a_failure_settled_in_the_background_is_still_the_starts_error(
        containers: ContainerService, fake: FakeHandler, tmp_path: Path) -> None:
    fake.creation = creation = FakeCreation()
    record = containers.create(new(tmp_path))
    assert creation.waited.wait(DEADLINE)  # (the create's own thread waits for it)
    creation.fail(RuntimeFailed("fake could not create the container: bad"))
    deadline = threading.Event()
    for _ in range(int(DEADLINE / 0.01)):
        if containers.get(record.id).state == EXITED:
            break
        deadline.wait(0.01)
    with pytest.raises(RuntimeFailed, match="bad"):
        containers.start(record.id)


@pytest.mark.parametrize("call", ["stop", "remove", "update"])
def test_stop_remove_and_update_wait_for_the_creation(containers: ContainerService, fake: FakeHandler,
                                                      tmp_path: Path, call: str) -> None:
    fake.creation = creation = FakeCreation()
    record = containers.create(new(tmp_path))
    action = {"stop": lambda: containers.stop(record.id, 0), "remove": lambda: containers.remove(record.id),
              "update": lambda: containers.update_resources(record.id, Resources())}[call]
    thread, out = in_thread(action)
    assert creation.waited.wait(DEADLINE)
    assert fake.called("kill") == [] and fake.called("update") == [] and fake.called("delete") == []
    creation.succeed()
    thread.join(DEADLINE)
    assert out and not isinstance(out[0], Exception), out
    if call == "update":
        assert fake.called("update") and containers.get(record.id).state == CREATED
    else:
        assert fake.called("kill") or fake.called("delete")


def test_a_creation_over_at_once_is_settled_by_the_create_itself(containers: ContainerService,
                                                                 tmp_path: Path) -> None:
    record = containers.create(new(tmp_path))  # (the fake's own creations are over when they begin)
    assert record.pid and containers._pending == {}
