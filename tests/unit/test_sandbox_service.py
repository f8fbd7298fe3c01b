"""SandboxService.run with the fakes of sandbox/fake.py: what runs side by side on the way to a
ready pod, and what a failure of it leaves (nothing). (Through gRPC: tests/unit/test_cri_service.py.)"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from pycri.common.errors import Unavailable
from pycri.sandbox import files
from pycri.sandbox.fake import FakeCgroups, FakeInfra, FakeNetwork, FakePins
from pycri.sandbox.records import READY
from pycri.sandbox.service import NewSandbox, SandboxService
from pycri.store.db import Database


@pytest.fixture
def service(tmp_path: Path) -> SandboxService:
    return SandboxService(Database(tmp_path / "db.sqlite"), tmp_path / "sandboxes", tmp_path / "state", FakeNetwork(),
                          pins=FakePins(), infra=FakeInfra(), cgroups=FakeCgroups())


def new_pod(name: str = "web", shared_pid: bool = False) -> NewSandbox:
    return NewSandbox(name=name, namespace="ns", uid=f"uid-{name}", attempt=0, handler="", hostname=name,
                      log_directory="", dns=None, port_mappings=[], cgroup_parent="", host_network=False,
                      host_ipc=False, host_pid=False, shared_pid=shared_pid)


def nothing_left(service: SandboxService, pod_id: str) -> None:
    assert service.table.where() == []
    assert service.pins.pinned == set() and not (service.ns_root / pod_id).exists()  # type: ignore[attr-defined]
    assert service.cgroups.existing == set() and service.infra.running == {}  # type: ignore[attr-defined]
    assert not (service.root / pod_id).exists()


def test_a_ready_pod_has_its_cgroup_pins_network_and_files(service: SandboxService) -> None:
    record = service.run(new_pod(shared_pid=True))
    assert record.state == READY and service.get(record.id).state == READY
    assert service.cgroups.existing == {(f"/pycri/{record.id}", record.id)}  # type: ignore[attr-defined]
    assert len(service.pins.pinned) == 3 and list(service.infra.running) == [record.id]  # type: ignore[attr-defined]
    assert sorted(os.listdir(service.root / record.id)) == ["hostname", "hosts", "resolv.conf"]


@pytest.mark.parametrize("failing", ["cgroups", "pins"])
def test_a_failed_cgroup_or_pin_beside_the_other_leaves_nothing(service: SandboxService, failing: str) -> None:
    getattr(service, failing).failures["create" if failing == "cgroups" else "pin"] = Unavailable(f"{failing}: no")
    with pytest.raises(Unavailable, match=f"{failing}: no"):
        service.run(new_pod(shared_pid=True))
    # both were asked for (side by side); whatever was made is undone, and nothing ran after
    ((_, pod_id),) = service.cgroups.called("create")  # type: ignore[attr-defined]
    assert len(service.pins.called("pin")) == 1  # type: ignore[attr-defined]
    assert service.network.called("setup") == [] and service.infra.called("start") == []  # type: ignore[attr-defined]
    nothing_left(service, pod_id)


def test_the_pod_files_are_written_without_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    written = files.write_pod_files(tmp_path / "pod", "web", "10.88.0.2", None, host_resolv_conf=tmp_path / "none")
    assert synced == [] and written[files.HOSTS].read_text().count("10.88.0.2") == 1
    files.write_atomic(tmp_path / "other", "x")  # any other file: durable, fsynced
    assert len(synced) == 1


def test_recovery_warms_the_infra_launcher_up(service: SandboxService) -> None:
    """At start-up (recover): the warm launcher starts with the daemon, counted with it, not
    with the first pods that share their PID namespace."""
    assert service.infra.warmed == 0  # type: ignore[attr-defined]
    service.recover()
    assert service.infra.warmed == 1  # type: ignore[attr-defined]
