"""Never lose, never leak a container: a removal (RemoveContainer, or the undoing of a failed
create) does each of its steps even when one before failed, so a runtime whose delete fails
still has the container's rootfs and image volumes unmounted; the row stays, and so does the
container's directory, until a retry succeeds. A failed create's `creating` row (a leftover,
not a create under way in this process) is retried by RemovePodSandbox of its pod (which
fails, keeping the pod, while one remains), by the periodic sweep, and by recover at start-up;
a create under way is never taken for one. Against the fake handler and the recording syscall
(the CRI calls through criserver's error mapping, tests/unit/test_cri_service.py)."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import grpc
import pytest

from pycri.api.cri import api_pb2 as cri
from pycri.common.errors import RuntimeFailed
from pycri.common.lifecycle import DELETED
from pycri.containers.fake import FakeHandler
from pycri.containers.image_volumes import ImageVolume
from pycri.containers.oci_config import Mount
from pycri.containers.records import CREATING, EXITED
from pycri.containers.service import ContainerService
from pycri.kernel.fake import RecordingSyscall
from tests.unit.test_container_service import containers, fake, new, running, syscall  # noqa: F401 (fixtures)
from tests.unit.test_cri_service import CriUnderTest, new_test_cri_service

DEADLINE = 30.0
IMAGE_ID = "sha256:" + "7" * 64
# what a broken pycri-runtime gave last time, for create and for delete alike
BROKEN = "pycri-runtime failed: ModuleNotFoundError: No module named 'pycri.runtime.init'"


def unmounted(syscall: RecordingSyscall) -> list[str]:
    return [args[0] for name, args in syscall.calls if name == "umount"]


def with_image_volume(tmp_path: Path) -> Any:
    """A container that mounts an image (one layer) as a volume at /data."""
    layer = tmp_path / "layer"
    layer.mkdir(exist_ok=True)
    plain = new(tmp_path)
    plain.spec.mounts = [Mount(destination="/data", type="bind", source="", options=["rbind", "ro"])]
    return type(plain)(**{**plain.__dict__, "image_volumes": [ImageVolume("/data", IMAGE_ID, [layer])]})


def broken_create(containers: ContainerService, fake: FakeHandler, tmp_path: Path) -> str:
    """A create whose runtime create and delete both fail: the id of the leftover it leaves."""
    fake.failures["create"] = RuntimeFailed(f"create: {BROKEN}")
    fake.failures["delete"] = RuntimeFailed(f"delete: {BROKEN}")
    with pytest.raises(RuntimeFailed, match="^create: "):  # the create's failure, not the clean-up's
        containers.create(with_image_volume(tmp_path))
    ((container_id, *_),) = fake.called("create")
    return container_id


# -- the clean-up after a failed create ------------------------------------------------

def test_a_failed_create_whose_runtime_delete_fails_still_unmounts_and_keeps_its_row(
        containers: ContainerService, fake: FakeHandler, syscall: RecordingSyscall, tmp_path: Path) -> None:
    container_id = broken_create(containers, fake, tmp_path)
    directory = containers.root / container_id
    # the unmounts ran although the runtime's delete raised: nothing stays mounted
    assert str(directory / "rootfs" / "merged") in unmounted(syscall)
    assert str(directory / "image-volumes" / IMAGE_ID.removeprefix("sha256:")) in unmounted(syscall)
    assert fake.called("release") == [(container_id,)]
    # the runtime may still have it: its row and files stay for a retry (a leftover, not listed)
    assert [(r.id, r.state) for r in containers.table.all()] == [(container_id, CREATING)]
    assert (directory / "bundle" / "config.json").exists()
    assert containers.list() == [] and containers.find(container_id) is None
    assert containers.image_users(IMAGE_ID) == [container_id]  # its images stay while it does
    assert not (tmp_path / "logs" / "main.log").exists()


def test_the_sweep_removes_a_leftover_once_its_runtime_delete_works(
        containers: ContainerService, fake: FakeHandler, syscall: RecordingSyscall, tmp_path: Path) -> None:
    container_id = broken_create(containers, fake, tmp_path)
    assert containers.sweep() == []  # still broken: it stays (and the sweep does not fail)
    assert [r.id for r in containers.table.all()] == [container_id]
    assert len(fake.called("delete")) == 2
    del fake.failures["delete"]
    syscall.calls.clear()
    assert containers.sweep() == []  # (the ids of containers found exited: none)
    assert containers.table.all() == [] and not (containers.root / container_id).exists()
    assert fake.called("delete")[-1] == (container_id, True)
    assert str(containers.root / container_id / "rootfs" / "merged") in unmounted(syscall)
    assert containers.image_users(IMAGE_ID) == []


def test_recover_keeps_a_leftover_it_cannot_remove_and_removes_it_once_it_can(
        containers: ContainerService, fake: FakeHandler, tmp_path: Path) -> None:
    container_id = broken_create(containers, fake, tmp_path)
    restarted = ContainerService(containers.db, containers.root, containers.exits, {"fake": fake}, "fake",
                                 RecordingSyscall())
    restarted.recover()  # does not fail the start-up
    assert [r.id for r in restarted.table.all()] == [container_id]
    del fake.failures["delete"]
    restarted.recover()
    assert restarted.table.all() == [] and not (restarted.root / container_id).exists()


def test_a_failed_unmount_keeps_the_files_and_the_row(containers: ContainerService, fake: FakeHandler,
                                                      syscall: RecordingSyscall, tmp_path: Path) -> None:
    fake.failures["create"] = RuntimeFailed("create: no")
    syscall.failures["umount"] = OSError(16, "Device or resource busy")
    with pytest.raises(RuntimeFailed, match="^create: "):
        containers.create(new(tmp_path))
    ((container_id, *_),) = fake.called("create")
    assert fake.called("delete") == [(container_id, True)]  # the runtime's part is done
    # never rm -rf through a mount: the directory and the row stay until an unmount works
    assert (containers.root / container_id / "rootfs").exists()
    assert [r.id for r in containers.table.all()] == [container_id]
    del syscall.failures["umount"]
    containers.sweep()
    assert containers.table.all() == [] and not (containers.root / container_id).exists()


# -- RemoveContainer ------------------------------------------------------------------

def test_remove_fails_and_keeps_the_container_while_its_runtime_delete_fails(
        containers: ContainerService, fake: FakeHandler, syscall: RecordingSyscall, tmp_path: Path) -> None:
    record = running(containers, tmp_path)
    deleted: list[str] = []
    containers.events.subscribe(lambda event: deleted.append(event.subject_id) if event.kind == DELETED else None)
    fake.failures["delete"] = RuntimeFailed(f"delete: {BROKEN}")
    with pytest.raises(RuntimeFailed, match="^delete: "):  # an error kubelet retries, not a success
        containers.remove(record.id)
    assert str(containers.root / record.id / "rootfs" / "merged") in unmounted(syscall)  # unmounted anyway
    assert containers.get(record.id).state == EXITED and deleted == []  # still there, still listed
    assert [r.id for r in containers.list()] == [record.id]
    del fake.failures["delete"]
    containers.remove(record.id)
    assert containers.table.all() == [] and deleted == [record.id]
    assert not (containers.root / record.id).exists()


# -- a create under way is not a leftover ---------------------------------------------

class Blocked:
    """The fake handler's create, held until `release` (a create under way)."""

    def __init__(self, handler: FakeHandler) -> None:
        self.entered, self.released = threading.Event(), threading.Event()
        self._create = handler.begin_create

        def create(*args: Any, **kwargs: Any) -> Any:
            self.entered.set()
            assert self.released.wait(DEADLINE)
            return self._create(*args, **kwargs)

        handler.begin_create = create  # type: ignore[method-assign]


def test_the_sweep_leaves_a_create_under_way_alone(containers: ContainerService, fake: FakeHandler,
                                                   syscall: RecordingSyscall, tmp_path: Path) -> None:
    blocked = Blocked(fake)
    made: list[str] = []
    creating = threading.Thread(target=lambda: made.append(containers.create(new(tmp_path)).id))
    creating.start()
    try:
        assert blocked.entered.wait(DEADLINE)
        containers.sweep()
        containers.remove_leftovers()
        assert [r.state for r in containers.table.all()] == [CREATING]
        assert fake.called("delete") == [] and unmounted(syscall) == []
    finally:
        blocked.released.set()
        creating.join(DEADLINE)
    assert containers.get(made[0]).state == "created"


# -- RemovePodSandbox -----------------------------------------------------------------

@pytest.fixture
def t(tmp_path: Path) -> CriUnderTest:
    return new_test_cri_service(tmp_path)


def test_remove_pod_sandbox_removes_the_leftovers_of_failed_creates_first(t: CriUnderTest) -> None:
    pod_id = t.run_pod()
    t.handler.failures["create"] = RuntimeFailed(f"create: {BROKEN}")
    t.handler.failures["delete"] = RuntimeFailed(f"delete: {BROKEN}")
    with pytest.raises(Exception) as failed:
        t.create(pod_id)
    assert failed.value.code == grpc.StatusCode.UNKNOWN and failed.value.details.startswith("create: ")
    ((container_id, *_),) = t.handler.called("create")
    directory = t.container_service.root / container_id
    assert str(directory / "rootfs" / "merged") in [args[0] for name, args in t.syscall.calls if name == "umount"]
    assert t.containers() == []
    # the leftover cannot go yet: neither does its pod (kubelet retries RemovePodSandbox)
    t.call("StopPodSandbox", cri.StopPodSandboxRequest(pod_sandbox_id=pod_id))
    assert t.fails("RemovePodSandbox", cri.RemovePodSandboxRequest(pod_sandbox_id=pod_id)) == grpc.StatusCode.UNKNOWN
    assert [p.id for p in t.pods()] == [pod_id]
    assert [r.id for r in t.container_service.table.all()] == [container_id]
    del t.handler.failures["delete"]
    t.call("RemovePodSandbox", cri.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
    assert t.pods() == [] and t.container_service.table.all() == [] and not directory.exists()
    assert t.handler.called("delete")[-1] == (container_id, True)


def test_remove_pod_sandbox_waits_for_a_create_under_way_or_fails_without_destroying_it(t: CriUnderTest) -> None:
    pod_id = t.run_pod()
    blocked = Blocked(t.handler)
    made: list[str] = []
    creating = threading.Thread(target=lambda: made.append(t.create(pod_id)))
    creating.start()
    try:
        assert blocked.entered.wait(DEADLINE)
        t.container_service.create_wait = 0  # no wait: FailedPrecondition, and the create goes on
        assert t.fails("RemovePodSandbox", cri.RemovePodSandboxRequest(pod_sandbox_id=pod_id)) == \
            grpc.StatusCode.FAILED_PRECONDITION
        assert [p.id for p in t.pods()] == [pod_id]
        assert [r.state for r in t.container_service.table.all()] == [CREATING]
        assert t.handler.called("delete") == []
        t.container_service.create_wait = DEADLINE
        removing = threading.Thread(target=t.call, args=(
            "RemovePodSandbox", cri.RemovePodSandboxRequest(pod_sandbox_id=pod_id)))
        removing.start()  # waits for the create (or, started late, finds what it made)
    finally:
        blocked.released.set()
        creating.join(DEADLINE)
    removing.join(DEADLINE)
    assert not removing.is_alive() and made  # the create succeeded, then went with its pod
    assert t.pods() == [] and t.container_service.table.all() == []
    assert (made[0], True) in t.handler.called("delete")
