"""hack/pycri.sh took a just-killed (zombie) pycri, or any process that got its pid, for a running
pycri: `start` then started nothing and `stop` signalled a stranger. These run the script on a
throwaway daemon of their own (PYCRI_CONFIG, PYCRI_PIDFILE, PYCRI_LOG); the default daemon is
never touched."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import REPO, VENV_BIN, Pycri

pytestmark = pytest.mark.e2e

SCRIPT = REPO / "hack/pycri.sh"


class Scripted:
    """A daemon config of its own, run through hack/pycri.sh."""

    def __init__(self, base: Path) -> None:
        self.daemon = Pycri(base)  # writes the config and crictl.yaml; never started by the harness
        self.pidfile = base / "pycri.pid"
        self.log = base / "pycri-sh.log"
        self.env = {**os.environ, "PYCRI": str(VENV_BIN / "pycri"), "PYCRI_CONFIG": str(self.daemon.config),
                    "PYCRI_PIDFILE": str(self.pidfile), "PYCRI_LOG": str(self.log)}

    def sh(self, command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(SCRIPT), command], env=self.env, capture_output=True, text=True, timeout=300)

    def pid(self) -> int:
        return int(self.pidfile.read_text().strip())

    def answers(self) -> bool:
        return self.daemon.crictl("version", check=False, timeout=60).returncode == 0

    def cleanup(self) -> None:
        """Stop the daemon the script started, whatever the script says."""
        try:
            pid = self.pid()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            pid, cmdline = 0, []
        if pid and str(self.pidfile).encode() in cmdline:  # ours, not a stranger with the pid
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 60
            while Path(f"/proc/{pid}").exists() and _state(pid) != "Z" and time.monotonic() < deadline:
                time.sleep(0.1)
        self.daemon.unmount_pin_root()


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


@pytest.fixture
def scripted(tmp_path: Path) -> Iterator[Scripted]:
    if os.geteuid() != 0:
        pytest.skip("runs a pycri daemon: root")
    s = Scripted(tmp_path)
    yield s
    s.cleanup()


def zombie() -> subprocess.Popen[bytes]:
    """A killed child nobody has waited for: what a just-killed pycri is until it is reaped."""
    child = subprocess.Popen(["sleep", "1000"])
    child.kill()
    deadline = time.monotonic() + 60
    while _state(child.pid) != "Z" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _state(child.pid) == "Z"
    return child


def test_start_is_not_fooled_by_a_zombie(scripted: Scripted) -> None:
    dead = zombie()
    try:
        scripted.pidfile.write_text(f"{dead.pid}\n")
        assert scripted.sh("status").returncode == 1
        result = scripted.sh("start")
        assert result.returncode == 0 and "pycri started" in result.stdout, result.stdout + result.stderr
        assert scripted.pid() != dead.pid
        assert scripted.answers()
        stopped = scripted.sh("stop")
        assert stopped.returncode == 0 and "pycri stopped" in stopped.stdout, stopped.stdout + stopped.stderr
    finally:
        dead.wait()


def test_a_reused_pid_is_not_pycri(scripted: Scripted) -> None:
    stranger = subprocess.Popen(["sleep", "1000"])
    try:
        scripted.pidfile.write_text(f"{stranger.pid}\n")
        assert scripted.sh("status").returncode == 1
        assert scripted.sh("stop").returncode == 0
        assert stranger.poll() is None, "stop signalled a process that is not pycri"
        result = scripted.sh("start")
        assert result.returncode == 0 and "pycri started" in result.stdout, result.stdout + result.stderr
        assert scripted.pid() != stranger.pid and scripted.answers()
        assert scripted.sh("status").returncode == 0
        assert scripted.sh("stop").returncode == 0
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()
