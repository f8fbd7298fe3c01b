"""How a container's exit is read from conmon's files (ConmonHandler.exit_status), including the
moment conmon writes its exit file and exits between two looks. Whether conmon lives is the
handler's `monitor_pid` seam; nothing here runs conmon."""
from __future__ import annotations

from pathlib import Path

import pytest

from pycri.containers.conmon import ConmonHandler
from pycri.containers.handler import ContainerPaths

CID = "c" * 64


@pytest.fixture
def paths(tmp_path: Path) -> ContainerPaths:
    paths = ContainerPaths(bundle=tmp_path / CID / "bundle", persist=tmp_path / CID / "persist",
                           exit_file=tmp_path / "exits" / CID, log_path="")
    for directory in (paths.bundle, paths.persist, paths.exit_file.parent):
        directory.mkdir(parents=True)
    return paths


def handler(tmp_path: Path, monitor_pid=lambda pidfile, container_id: None) -> ConmonHandler:  # type: ignore[no-untyped-def]
    return ConmonHandler("pycri", "/bin/false", tmp_path / "runtime", monitor_pid=monitor_pid)


def test_exit_code_zero_in_the_exit_dir(tmp_path: Path, paths: ContainerPaths) -> None:
    paths.exit_file.write_text("0")  # persist/exit not written yet
    status = handler(tmp_path).exit_status(CID, paths)
    assert status is not None and (status.code, status.oom_killed, status.lost) == (0, False, False)
    assert status.finished_at == paths.exit_file.stat().st_mtime_ns


def test_exit_code_in_the_persist_dir_and_oom(tmp_path: Path, paths: ContainerPaths) -> None:
    (paths.persist / "exit").write_text("137\n")  # the exit dir is emptied by a reboot
    (paths.persist / "oom").write_text("")
    status = handler(tmp_path).exit_status(CID, paths)
    assert status is not None and (status.code, status.oom_killed) == (137, True)


def test_conmon_writes_and_exits_between_the_two_looks(tmp_path: Path, paths: ContainerPaths) -> None:
    def conmon_just_finished(pidfile: Path, container_id: str) -> int | None:
        assert (pidfile, container_id) == (paths.bundle / "conmon.pid", CID)
        paths.exit_file.write_text("3")
        return None

    status = handler(tmp_path, conmon_just_finished).exit_status(CID, paths)
    assert status is not None and (status.code, status.lost) == (3, False)


def test_monitor_gone_without_an_exit_code(tmp_path: Path, paths: ContainerPaths) -> None:
    status = handler(tmp_path).exit_status(CID, paths)
    assert status is not None and (status.code, status.lost) == (255, True)


def test_running_while_conmon_lives(tmp_path: Path, paths: ContainerPaths) -> None:
    assert handler(tmp_path, lambda pidfile, container_id: 4242).exit_status(CID, paths) is None
