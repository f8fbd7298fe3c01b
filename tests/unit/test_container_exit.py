"""How a container's exit is read from conmon's files (ContainerService.refresh), including the
moment conmon writes its exit file and exits between two looks."""
from __future__ import annotations

from pathlib import Path

import pytest

from pycri.containers import service as service_module
from pycri.containers.service import ContainerService
from pycri.containers.store import RUNNING, ContainerRecord
from pycri.kernel.fake import RecordingSyscall
from pycri.store.db import Database


@pytest.fixture
def containers(tmp_path: Path) -> ContainerService:
    return ContainerService(Database(tmp_path / "db.sqlite"), tmp_path / "containers", tmp_path / "exits",
                            {}, "pycri", RecordingSyscall())


def running(containers: ContainerService) -> ContainerRecord:
    record = ContainerRecord(id="c" * 64, pod_id="p" * 64, name="main", attempt=0, state=RUNNING, handler="pycri",
                             image="busybox", image_id="sha256:1", image_ref="busybox", log_path="", created_at=1)
    with containers.db.transaction() as tx:
        containers.table.insert(tx, record)
    containers.paths(record).persist.mkdir(parents=True)
    return record


def test_exit_code_zero_in_the_exit_dir(containers: ContainerService) -> None:
    record = running(containers)
    containers.paths(record).exit_file.write_text("0")  # persist/exit not written yet
    assert containers.refresh(record).exit_code == 0 and record.reason == "Completed"


def test_conmon_writes_and_exits_between_the_two_looks(containers: ContainerService,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    record = running(containers)

    def conmon_just_finished(pidfile: Path, container_id: str) -> bool:
        containers.paths(record).exit_file.write_text("3")
        return False

    monkeypatch.setattr(service_module, "_alive", conmon_just_finished)
    refreshed = containers.refresh(record)
    assert (refreshed.exit_code, refreshed.reason) == (3, "Error")


def test_monitor_gone_without_an_exit_code(containers: ContainerService, monkeypatch: pytest.MonkeyPatch) -> None:
    record = running(containers)
    monkeypatch.setattr(service_module, "_alive", lambda pidfile, container_id: False)
    refreshed = containers.refresh(record)
    assert (refreshed.exit_code, refreshed.reason) == (255, "Unknown")


def test_running_while_conmon_lives(containers: ContainerService, monkeypatch: pytest.MonkeyPatch) -> None:
    record = running(containers)
    monkeypatch.setattr(service_module, "_alive", lambda pidfile, container_id: True)
    assert containers.refresh(record).state == RUNNING
