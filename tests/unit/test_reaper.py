"""The orphan reaper with real processes and a fake clock: a zombie is reaped only once it has
been one for the grace period. Each case runs in a fresh interpreter, so the zombies are its own
and no other test's children are touched."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PRELUDE = """
import os, time
from pycri.criserver.reaper import OrphanReaper, children, zombie_children

def exited_child():
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    deadline = time.monotonic() + 60
    while pid not in zombie_children():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return pid

now = [100.0]
pid = exited_child()
reaper = OrphanReaper(grace=10, clock=lambda: now[0])
"""


def run(case: str) -> None:
    result = subprocess.run([sys.executable, "-c", PRELUDE + case], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr


def test_a_zombie_is_reaped_once_the_grace_period_has_passed() -> None:
    run("""
assert reaper.sweep() == []  # its parent may be about to wait for it
now[0] += 9.9
assert reaper.sweep() == []
assert pid in zombie_children()
now[0] += 0.1
assert reaper.sweep() == [pid], "reaped after the grace period"
assert pid not in zombie_children() and pid not in children()
""")


def test_a_child_waited_for_in_between_is_left_alone() -> None:
    run("""
reaper.sweep()
assert os.waitpid(pid, 0)[1] >> 8 == 7  # its owner got the exit status
now[0] += 60
assert reaper.sweep() == []
""")


def test_a_running_child_is_never_reaped() -> None:
    run("""
import subprocess
child = subprocess.Popen(["sleep", "1000"])
reaper.sweep()
now[0] += 1000
assert child.pid in children() and reaper.sweep() == [pid]
assert child.poll() is None
child.kill(); child.wait()
""")


def test_children_of_every_thread_are_seen() -> None:
    run("""
import threading
found = []
def spawn():
    p = os.fork()
    if p == 0:
        os._exit(0)
    found.append(p)
t = threading.Thread(target=spawn); t.start(); t.join()
deadline = time.monotonic() + 60
while found[0] not in zombie_children():
    assert time.monotonic() < deadline
    time.sleep(0.01)
reaper.sweep(); now[0] += 10
assert sorted(reaper.sweep()) == sorted([pid, found[0]])
""")


def test_the_sweep_peeks_with_waitid_and_reaps_nothing_by_it() -> None:
    run("""
from pycri.criserver.reaper import has_zombie_child
assert has_zombie_child() and has_zombie_child(), "WNOWAIT: the peek leaves the zombie there"
assert pid in zombie_children()
assert os.waitpid(pid, 0)[0] == pid
assert not has_zombie_child(), "no zombie left (and no child at all)"
sleeper = os.fork()
if sleeper == 0:
    time.sleep(60)
    os._exit(0)
assert not has_zombie_child(), "a running child is not a zombie"
os.kill(sleeper, 9)
os.waitpid(sleeper, 0)
""")
