"""The warm infra launcher (sandbox/warm_launcher.py): what goes wrong in a launch comes back as
the cold launcher's error; if it dies, pods still start (cold) and the next start brings a new
one; it ends when its owner closes it and when its owner is killed, leaving nothing."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import pytest

from pycri.common.errors import Unavailable
from pycri.sandbox import infra
from pycri.sandbox.warm_launcher import WarmLauncher
from tests.integration.test_sandbox_infra import poll

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(shutil.which(infra.PAUSE_BINARY) is None, reason="catatonit is not installed"),
]


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_failed_launch_says_why_and_the_launcher_stays() -> None:
    warm = WarmLauncher(infra.PYTHON, infra.SRC_ROOT, infra.START_TIMEOUT)
    try:
        with pytest.raises(Unavailable, match="did not start: .*no-such-netns"):
            infra.start({"network": "/run/no-such-netns"}, sandbox_id="warm-fail", warm=warm)
        first = warm.pid
        process = infra.start(sandbox_id="warm-after-fail", warm=warm)
        try:
            assert warm.pid == first and process.alive()
        finally:
            infra.stop(process)
    finally:
        warm.close()


def test_a_killed_launcher_is_replaced_and_pods_still_start() -> None:
    warm = WarmLauncher(infra.PYTHON, infra.SRC_ROOT, infra.START_TIMEOUT)
    started: list[infra.Infra] = []
    try:
        started.append(infra.start(sandbox_id="warm-1", warm=warm))
        first = warm.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        poll(lambda: warm.pid is None, "the killed launcher seen as gone")
        started.append(infra.start(sandbox_id="warm-2", warm=warm))  # a new one (or a cold launcher)
        assert all(p.alive() for p in started)
        second = warm.pid
        assert second is not None and second != first
    finally:
        for process in started:
            infra.stop(process)
        warm.close()


OWNER = """
import sys
from pycri.sandbox import infra
from pycri.sandbox.warm_launcher import WarmLauncher
from tests.integration.test_sandbox_infra import poll
warm = WarmLauncher(infra.PYTHON, infra.SRC_ROOT, infra.START_TIMEOUT)
process = infra.start(sandbox_id="warm-owner", warm=warm)
print("PIDS", warm.pid, process.pid, process.start_time, flush=True)
sys.stdin.read()
"""


@pytest.mark.parametrize("end", ["closed", "killed"])
def test_the_launcher_ends_with_its_owner(end: str) -> None:
    owner = subprocess.Popen([sys.executable, "-c", OWNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        line = ""
        while not line.startswith("PIDS "):  # (after the owner's log lines)
            line = owner.stdout.readline()  # type: ignore[union-attr]
            assert line, "the owner ended before it started an infra process"
        launcher, pid, start_time = (int(v) for v in line.split()[1:])
        assert not gone(launcher) and not gone(pid)
        if end == "closed":
            owner.stdin.close()  # type: ignore[union-attr]
        else:
            owner.kill()
        owner.wait(timeout=30)
        poll(lambda: gone(launcher), f"the warm launcher gone once its owner {end}")
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
    infra.stop(infra.Infra(pid, start_time))  # (the pod's infra process outlives a launcher, as pods do)
