"""StartContainer on pycri's own runtime runs the runtime's `start` in the daemon's process
(containers/own_runtime.py): the init waiting on its exec fifo is released, and the errors
are those of the command (NotFound, RuntimeFailed). A stand-in init: a process that blocks
opening the fifo for writing and writes one byte, as runtime/init.py does before execve."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pycri.common.errors import NotFound, RuntimeFailed
from pycri.containers import own_runtime
from pycri.containers.conmon import ConmonHandler
from pycri.runtime.state import ContainerState, StateStore, read_proc_stat

INIT = "import sys; f = open(sys.argv[1], 'wb', buffering=0); f.write(b'0'); f.close(); print('released', flush=True)"


class FakeInit:
    """A process waiting on <root>/<id>/exec.fifo, with the state.json `create` would write."""

    def __init__(self, root: Path, container_id: str) -> None:
        self.store = StateStore(str(root))
        self.store.make_dir(container_id)
        fifo = self.store.make_fifo(container_id)
        self.process = subprocess.Popen([sys.executable, "-c", INIT, fifo], stdout=subprocess.PIPE, text=True)
        stat = read_proc_stat(self.process.pid)
        assert stat is not None
        self.store.save(ContainerState(id=container_id, pid=self.process.pid, pid_start=stat.start_time,
                                       bundle=str(root), rootfs=str(root / "rootfs"), created="2026-01-01T00:00:00Z"))
        self.fifo = Path(fifo)

    def released(self) -> bool:
        assert self.process.stdout is not None
        out = self.process.stdout.read()
        return self.process.wait(timeout=30) == 0 and out == "released\n"

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def init(tmp_path: Path):  # type: ignore[no-untyped-def]
    made = FakeInit(tmp_path / "runtime", "c1")
    yield made
    made.kill()


def test_start_releases_the_init_and_removes_the_fifo(init: FakeInit, tmp_path: Path) -> None:
    own_runtime.start("pycri", tmp_path / "runtime", "c1")
    assert init.released()
    assert not init.fifo.exists()


def test_a_started_container_cannot_start_again(init: FakeInit, tmp_path: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        own_runtime.start("pycri", tmp_path / "runtime", "c1")
        assert init.released()
        state = init.store.load("c1")  # the init has exec'd: another process, running
        stat = read_proc_stat(sleeper.pid)
        assert stat is not None
        state.pid, state.pid_start = sleeper.pid, stat.start_time
        init.store.save(state)
        with pytest.raises(RuntimeFailed, match="pycri start failed: cannot start an already running container"):
            own_runtime.start("pycri", tmp_path / "runtime", "c1")
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_stopped_container_cannot_start(init: FakeInit, tmp_path: Path) -> None:
    init.kill()
    with pytest.raises(RuntimeFailed, match="pycri start failed: cannot start a container that has stopped"):
        own_runtime.start("pycri", tmp_path / "runtime", "c1")


def test_a_container_the_runtime_does_not_have_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="container does not exist"):
        own_runtime.start("pycri", tmp_path / "runtime", "nope")


def test_two_starts_at_once_release_the_init_once(init: FakeInit, tmp_path: Path) -> None:
    """Both open the fifo, one reads the init's byte; the other sees the init go (or the fifo
    gone) and fails, as two `start` commands would."""
    outcomes: list[str] = []

    def one() -> None:
        try:
            own_runtime.start("pycri", tmp_path / "runtime", "c1")
            outcomes.append("ok")
        except RuntimeFailed as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert init.released()
    assert sorted(outcomes)[0] == "ok" and outcomes.count("ok") == 1, outcomes


def test_the_handler_runs_its_own_runtimes_start_in_process(init: FakeInit, tmp_path: Path) -> None:
    """The runtime path is /bin/false: only an in-process start succeeds."""
    ConmonHandler("pycri", "/bin/false", tmp_path / "runtime", own_runtime=True).start("c1")
    assert init.released()


def test_another_runtimes_start_stays_a_command(init: FakeInit, tmp_path: Path) -> None:
    with pytest.raises(RuntimeFailed, match="runc start failed"):
        ConmonHandler("runc", "/bin/false", tmp_path / "runtime").start("c1")
    assert init.fifo.exists()
    assert os.path.exists(init.store.dir("c1"))
