"""The orphan reaper with real processes: only zombies seen in two sweeps are reaped."""
from __future__ import annotations

import os
import time

from criserver.reaper import OrphanReaper, zombie_children


def exited_child() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    deadline = time.monotonic() + 5
    while pid not in zombie_children(os.getpid()):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return pid


def test_a_zombie_is_reaped_on_the_second_sweep_only() -> None:
    pid = exited_child()
    reaper = OrphanReaper()
    assert reaper.sweep() == []  # its parent may be about to wait for it
    assert pid in zombie_children(os.getpid())
    assert reaper.sweep() == [pid]
    assert pid not in zombie_children(os.getpid())


def test_a_child_waited_for_in_between_is_left_alone() -> None:
    pid = exited_child()
    reaper = OrphanReaper()
    reaper.sweep()
    assert os.waitpid(pid, 0)[1] >> 8 == 7  # its owner got the exit status
    assert reaper.sweep() == []
