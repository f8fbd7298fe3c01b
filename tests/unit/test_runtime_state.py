"""The state dir and the status logic (runtime.state), with a fake /proc."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from pycri.runtime.errors import ContainerNotExist, RuntimeFailure
from pycri.runtime.state import (
    CREATED, RUNNING, STOPPED, ContainerState, StateStore, container_status, oci_state, read_proc_stat, rfc3339_nano,
)


def fake_proc(tmp_path: Path, pid: int, state: str, start: int, comm: str = "sleep") -> str:
    proc = tmp_path / "proc"
    (proc / str(pid)).mkdir(parents=True, exist_ok=True)
    fields = [state, "1"] + ["0"] * 17 + [str(start)] + ["0"] * 10
    (proc / str(pid) / "stat").write_text(f"{pid} ({comm}) {' '.join(fields)}\n")
    return str(proc)


def state(pid: int = 42, start: int = 1000) -> ContainerState:
    return ContainerState(id="c1", pid=pid, pid_start=start, bundle="/b", rootfs="/b/rootfs", created="2024-01-01T00:00:00Z")


def test_read_proc_stat_handles_odd_names(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, 42, "S", 1234, comm="a) (b c")
    stat = read_proc_stat(42, proc)
    assert stat is not None and stat.state == "S" and stat.start_time == 1234 and stat.ppid == 1
    assert read_proc_stat(43, proc) is None
    real = read_proc_stat(os.getpid())
    assert real is not None and real.state in "RS"


@pytest.mark.parametrize(("proc_state", "start", "fifo", "expected"), [
    ("S", 1000, True, CREATED),
    ("S", 1000, False, RUNNING),
    ("R", 1000, False, RUNNING),
    ("Z", 1000, False, STOPPED),  # exited, not reaped yet
    ("S", 999, False, STOPPED),  # the pid was reused by another process
])
def test_status(tmp_path: Path, proc_state: str, start: int, fifo: bool, expected: str) -> None:
    proc = fake_proc(tmp_path, 42, proc_state, start)
    assert container_status(state(), fifo_exists=fifo, proc=proc) == expected


def test_status_of_a_gone_process(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    assert container_status(state(), fifo_exists=True, proc=str(tmp_path / "proc")) == STOPPED


def test_oci_state_shape() -> None:
    current = state()
    assert oci_state(current, RUNNING) == {
        "ociVersion": "1.2.0", "id": "c1", "pid": 42, "status": "running", "bundle": "/b", "rootfs": "/b/rootfs",
        "created": "2024-01-01T00:00:00Z", "owner": ""}
    current.annotations = {"a": "b"}
    stopped = oci_state(current, STOPPED)
    assert stopped["pid"] == 0 and stopped["annotations"] == {"a": "b"}


def test_rfc3339_nano() -> None:
    assert rfc3339_nano(1_700_000_000_123_456_789) == "2023-11-14T22:13:20.123456789Z"
    assert rfc3339_nano(1_700_000_000_120_000_000) == "2023-11-14T22:13:20.12Z"
    assert rfc3339_nano(1_700_000_000_000_000_000) == "2023-11-14T22:13:20Z"


def test_store_round_trip(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path / "root"))
    store.make_dir("c1")
    assert oct((tmp_path / "root" / "c1").stat().st_mode & 0o777) == "0o711"
    with pytest.raises(RuntimeFailure, match="exists"):
        store.make_dir("c1")
    fifo = store.make_fifo("c1")
    assert oct(os.stat(fifo).st_mode & 0o777) == "0o622"
    current = state()
    current.cgroup = {"version": 1}
    current.namespaces = ["pid", "mount"]
    store.save(current)
    loaded = store.load("c1")
    assert loaded.to_dict() == current.to_dict()
    assert store.ids() == ["c1"]
    store.remove("c1")
    assert not (tmp_path / "root" / "c1").exists()
    with pytest.raises(ContainerNotExist):
        store.load("c1")
    for bad in ("", "..", "a/b"):
        with pytest.raises(RuntimeFailure, match="invalid container id"):
            store.dir(bad)
