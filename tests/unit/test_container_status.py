"""ContainerStatus, ListContainers, StopContainer and attach of containers whose rows were
written before the typed container columns: the replies and calls are those the old reads
of `extra` gave."""
from __future__ import annotations

import io
import json
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from pycri.api.cri import api_pb2 as cri
from pycri.containers.fake import RUNNING, FakeHandler
from pycri.containers.handler import StreamIO
from pycri.containers.oci_config import Capabilities, Linux, Process, Resources, Root, Spec, User
from pycri.containers.service import ContainerService
from pycri.criserver.pods import PodCalls
from pycri.kernel.fake import RecordingSyscall
from pycri.store.db import Database
from tests.unit.test_container_records import OLD_EXTRA, VOLUME_ID, old_database


def old_mount_status(m: Mapping[str, Any]) -> cri.Mount:
    """criserver/pods.py's _mount_status before the typed columns, reading extra's mounts."""
    mount = cri.Mount(container_path=m["container_path"], host_path=m["host_path"], readonly=m["readonly"],
                      recursive_read_only=m.get("recursive_read_only", False), propagation=m["propagation"],
                      image_sub_path=m.get("image_sub_path", ""))
    image = m.get("image")
    if image:
        mount.image.CopyFrom(cri.ImageSpec(image=image["image"], image_ref=image["image"],
                                           user_specified_image=image.get("user_specified_image", "")))
    return mount


def old_container_user(user: Mapping[str, Any]) -> cri.ContainerUser:
    """criserver/pods.py's container_user before the typed columns."""
    return cri.ContainerUser(linux=cri.LinuxContainerUser(
        uid=int(user.get("uid", 0)), gid=int(user.get("gid", 0)),
        supplemental_groups=[int(g) for g in user.get("additionalGids") or []],
    ))


@pytest.fixture
def fake() -> FakeHandler:
    handler = FakeHandler(name="runc")
    handler.states["c1"] = RUNNING  # its monitor still watches it
    return handler


@pytest.fixture
def pods(tmp_path: Path, fake: FakeHandler) -> PodCalls:
    old_database(tmp_path / "db.sqlite").close()
    calls = PodCalls()
    calls.containers = ContainerService(Database(tmp_path / "db.sqlite"), tmp_path / "containers",
                                        tmp_path / "exits", {"runc": fake}, "runc", RecordingSyscall())
    return calls


def test_status_of_an_old_running_row(pods: PodCalls) -> None:
    status = pods.ContainerStatus(cri.ContainerStatusRequest(container_id="c1"), None).status
    assert status.state == cri.ContainerState.CONTAINER_RUNNING and status.started_at == 110
    assert dict(status.labels) == OLD_EXTRA["labels"] and dict(status.annotations) == OLD_EXTRA["annotations"]
    assert list(status.mounts) == [old_mount_status(m) for m in OLD_EXTRA["mounts"]]
    assert status.mounts[1].image.image == status.mounts[1].image.image_ref == VOLUME_ID
    assert status.user == old_container_user(OLD_EXTRA["user"])
    assert list(status.user.linux.supplemental_groups) == [1000, 1234]


def test_status_of_an_old_row_without_a_user_reads_its_spec(pods: PodCalls, tmp_path: Path) -> None:
    old = {"container_path": "/etc/x", "host_path": "/x", "readonly": True, "propagation": 2}
    status = pods.ContainerStatus(cri.ContainerStatusRequest(container_id="c2"), None).status
    assert list(status.mounts) == [old_mount_status(old)] and not status.HasField("user")
    assert (status.exit_code, status.reason, status.message) == (137, "OOMKilled", "out of memory")
    spec = Spec(process=Process(terminal=False, user=User(33, 33, [33]), args=["sh"], env=[], cwd="/",
                                capabilities=Capabilities([], [], []), no_new_privileges=True),
                root=Root("rootfs", False), mounts=[], annotations={},
                linux=Linux(namespaces=[], resources=Resources(), cgroups_path="", masked_paths=[],
                            readonly_paths=[], sysctl={}, devices=[]))
    bundle = tmp_path / "containers" / "c2" / "bundle"
    bundle.mkdir(parents=True)
    (bundle / "config.json").write_text(json.dumps(spec.to_dict()))
    status = pods.ContainerStatus(cri.ContainerStatusRequest(container_id="c2"), None).status
    assert status.user == old_container_user(spec.to_dict()["process"]["user"])


def test_list_of_old_rows(pods: PodCalls) -> None:
    reply = pods.ListContainers(cri.ListContainersRequest(filter=cri.ContainerFilter(
        label_selector={"io.kubernetes.container.name": "web"})), None)
    assert [c.id for c in reply.containers] == ["c1"]
    assert dict(reply.containers[0].annotations) == {"note": "a;b"}
    everything = pods.ListContainers(cri.ListContainersRequest(), None)
    assert [c.id for c in everything.containers] == ["c1", "c2", "c4"]  # c3 is half-made
    assert [dict(c.labels) for c in everything.containers] == [OLD_EXTRA["labels"], {"a": "b"}, {}]


def test_an_old_row_stops_with_its_stop_signal_and_attaches_with_its_tty(pods: PodCalls, fake: FakeHandler) -> None:
    pods.containers.attach("c1", StreamIO(stdout=io.BytesIO()))
    assert fake.called("attach") == [("c1", True)]
    pods.StopContainer(cri.StopContainerRequest(container_id="c1", timeout=5), None)
    assert [args[:2] for args in fake.called("kill")] == [("c1", int(signal.SIGQUIT))]
