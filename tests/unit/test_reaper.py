"""The orphan reaper with real processes: only zombies seen in two sweeps are reaped. Each case
runs in a fresh interpreter, so the zombies are its own and no other test's children are touched."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PRELUDE = """
import os, time
from criserver.reaper import OrphanReaper, zombie_children

def exited_child():
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    deadline = time.monotonic() + 5
    while pid not in zombie_children(os.getpid()):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return pid

pid = exited_child()
reaper = OrphanReaper()
"""


def run(case: str) -> None:
    result = subprocess.run([sys.executable, "-c", PRELUDE + case], cwd=REPO, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr


def test_a_zombie_is_reaped_on_the_second_sweep_only() -> None:
    run("""
assert reaper.sweep() == []  # its parent may be about to wait for it
assert pid in zombie_children(os.getpid())
assert reaper.sweep() == [pid], "reaped on the second sweep"
assert pid not in zombie_children(os.getpid())
""")


def test_a_child_waited_for_in_between_is_left_alone() -> None:
    run("""
reaper.sweep()
assert os.waitpid(pid, 0)[1] >> 8 == 7  # its owner got the exit status
assert reaper.sweep() == []
""")
