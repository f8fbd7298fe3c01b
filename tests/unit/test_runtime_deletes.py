"""An exited container is deleted from its runtime when its exit is noticed
(containers/runtime_deletes.py), not in remove: stop returns once that is done, remove runs
the delete only when it was not done (a failure, a restart), and never twice at once."""
from __future__ import annotations

import threading
import time
from pathlib import Path

from pycri.common.errors import RuntimeFailed
from pycri.containers.fake import FakeHandler
from pycri.containers.records import EXITED
from pycri.containers.runtime_deletes import RuntimeDeletes
from tests.unit.test_container_watched_exits import running, service

DEADLINE = 30.0


def wait_for(predicate) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + DEADLINE
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_a_noticed_exit_deletes_the_container_from_its_runtime(tmp_path: Path) -> None:
    fake = FakeHandler()
    containers = service(tmp_path, fake)
    record = running(containers, tmp_path)
    fake.exit(record.id, 0)
    assert containers.get(record.id).state == EXITED
    wait_for(lambda: fake.called("delete") == [(record.id, True)])
    containers.remove(record.id)
    assert fake.called("delete") == [(record.id, True)]  # not again
    assert fake.called("release") == [(record.id,)]


def test_stop_returns_once_the_runtime_has_deleted_it(tmp_path: Path) -> None:
    fake = FakeHandler()
    containers = service(tmp_path, fake)
    record = running(containers, tmp_path)
    assert containers.stop(record.id, 0).state == EXITED
    assert fake.called("delete") == [(record.id, True)]
    containers.remove(record.id)
    assert fake.called("delete") == [(record.id, True)]


def test_remove_deletes_again_after_a_failed_delete_and_after_a_restart(tmp_path: Path) -> None:
    fake = FakeHandler()
    containers = service(tmp_path, fake)
    failed, other = running(containers, tmp_path, "failed"), running(containers, tmp_path, "other")
    fake.failures["delete"] = RuntimeFailed("the runtime is busy")
    containers.stop(failed.id, 0)
    assert fake.called("delete") == [(failed.id, True)]
    del fake.failures["delete"]
    containers.remove(failed.id)
    assert fake.called("delete") == [(failed.id, True)] * 2

    fake.exit(other.id, 0)  # exits while pycri is down
    containers.monitors.close()
    again = service(tmp_path, fake)
    again.recover()
    wait_for(lambda: len(fake.called("delete")) == 3)  # noticed on start-up, deleted then
    again.remove(other.id)
    assert fake.called("delete") == [(failed.id, True)] * 2 + [(other.id, True)]


def test_finish_waits_for_a_delete_under_way_and_does_not_run_a_second() -> None:
    deletes = RuntimeDeletes()
    release, calls = threading.Event(), []

    def slow_delete() -> None:
        calls.append("background")
        release.wait(DEADLINE)

    deletes.start("c", slow_delete)
    deletes.start("c", slow_delete)  # once
    finisher = threading.Thread(target=deletes.finish, args=("c", lambda: calls.append("finish")))
    finisher.start()
    wait_for(lambda: calls == ["background"])
    assert finisher.is_alive()  # waiting for the delete under way
    release.set()
    finisher.join(DEADLINE)
    assert calls == ["background"] and not finisher.is_alive()
    deletes.finish("c", lambda: calls.append("finish"))  # finished: it runs again (nothing kept)
    assert calls == ["background", "finish"]


def umounts(containers) -> list[str]:  # type: ignore[no-untyped-def]
    return [args[0] for name, args in containers.syscall.calls if name == "umount"]


def test_an_exit_unmounts_the_rootfs_as_containerds_task_delete_does(tmp_path: Path) -> None:
    """The rootfs (and image volumes) are unmounted once the runtime has deleted the container,
    not in remove, which then only removes files and the row; stop returns after both."""
    fake = FakeHandler()
    containers = service(tmp_path, fake)
    record, other = running(containers, tmp_path), running(containers, tmp_path, "other")
    merged = str(containers.root / record.id / "rootfs" / "merged")
    assert merged not in umounts(containers)
    fake.exit(record.id, 0)
    assert containers.get(record.id).state == EXITED
    wait_for(lambda: merged in umounts(containers))
    assert containers.stop(other.id, 0).state == EXITED
    assert str(containers.root / other.id / "rootfs" / "merged") in umounts(containers)
    containers.remove(record.id)  # (unmounting again finds nothing mounted, and is cheap)
    assert not (containers.root / record.id).exists()
