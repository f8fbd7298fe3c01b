"""The infra process of a pod sharing its PID namespace, started for real (root, catatonit):
every pod's PID 1 runs the one sealed copy of the pause binary (its pages shared, not one copy
a pod), in an empty root; it still reaps the orphans of its namespace, ends the namespace when
it dies, and a killed one is told from a live one."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycri.sandbox import infra
from pycri.sandbox.warm_launcher import WarmLauncher

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(shutil.which(infra.PAUSE_BINARY) is None, reason="catatonit is not installed"),
]


class Started(list):  # type: ignore[type-arg]
    """Infra processes a test started, and the warm launcher that started them (None: cold)."""

    warm: WarmLauncher | None = None


@pytest.fixture(params=["cold", "warm"])
def started(request: pytest.FixtureRequest) -> Iterator[Started]:
    """Infra processes the test starts (stopped at its end), by a launcher of their own (cold)
    or the warm launcher (sandbox/warm_launcher.py)."""
    processes = Started()
    if request.param == "warm":
        processes.warm = WarmLauncher(infra.PYTHON, infra.SRC_ROOT, infra.START_TIMEOUT)
    yield processes
    for process in processes:
        infra.stop(process)
    if processes.warm is not None:
        processes.warm.close()


def start(started: Started, name: str) -> infra.Infra:
    process = infra.start(sandbox_id=f"it-{name}-{os.getpid()}", warm=started.warm)
    started.append(process)
    return process


def children(pid: int) -> list[tuple[int, str]]:
    """(pid, state) of the processes whose parent is `pid`."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            out.append((int(entry), fields[0]))
    return out


def poll(condition, what: str, seconds: float = 30.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not in {seconds} s: {what}")
        time.sleep(0.05)


def test_every_pod_runs_one_shared_copy_in_an_empty_root(started: Started) -> None:
    first, second = start(started, "a"), start(started, "b")
    for process in (first, second):
        assert os.readlink(f"/proc/{process.pid}/exe") == "/memfd:catatonit (deleted)"
        assert Path(f"/proc/{process.pid}/cmdline").read_bytes() == b"catatonit\0-P\0"
        assert os.listdir(f"/proc/{process.pid}/root") == []
        fds = [os.readlink(f"/proc/{process.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{process.pid}/fd")]
        assert not [fd for fd in fds if "memfd" in fd], fds  # its mapping only, no descriptor
        # nothing of pycri's or of a launcher's (no descriptor was open at its exec but stdio on
        # /dev/null: catatonit's own signalfd takes the lowest free number, 3)
        def numbered(pid: int = process.pid) -> dict[str, str]:
            return {fd: os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}

        poll(lambda: "anon_inode:[signalfd]" in numbered().values(), "catatonit's signalfd, made after its exec")
        assert numbered() == {"0": "/dev/null", "1": "/dev/null", "2": "/dev/null", "3": "anon_inode:[signalfd]"}
    assert os.stat(f"/proc/{first.pid}/exe").st_ino == os.stat(f"/proc/{second.pid}/exe").st_ino
    # the binary's pages are shared: each PID 1 holds little of its own (kB; a copy of
    # catatonit of its own is ~700). A page counts as shared once the second process has
    # touched it too, which it does in its first moments after exec: wait for that.
    def private(pid: int) -> int:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        return sum(int(line.split()[1]) for line in text.splitlines() if line.startswith("Private_"))

    poll(lambda: private(first.pid) < 256 and private(second.pid) < 256,
         "each PID 1 holds under 256 kB of its own")


def test_pid_1_reaps_orphans_and_its_death_is_seen(started: Started) -> None:
    process = start(started, "reap")
    # an orphan in the pod's PID namespace: the shell backgrounds a sleep and exits at once
    subprocess.run(["nsenter", "--target", str(process.pid), "--pid", "--", "/bin/sh", "-c", "sleep 1000 &"],
                   check=True)
    poll(lambda: len(children(process.pid)) == 1, "the orphan adopted by PID 1")
    [(orphan, state)] = children(process.pid)
    assert state != "Z"
    os.kill(orphan, 9)
    poll(lambda: children(process.pid) == [], "the orphan reaped by PID 1 (no zombie left)")
    sleeper = subprocess.Popen(["nsenter", "--target", str(process.pid), "--pid", "--", "sleep", "1000"])
    try:
        poll(lambda: children(sleeper.pid) != [], "a process in the namespace")
        assert process.alive()
        os.kill(process.pid, 9)  # PID 1 killed: the kernel ends its namespace
        assert sleeper.wait(timeout=30) != 0
        poll(lambda: not process.alive(), "the killed infra process seen as dead")
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()


def test_without_a_memfd_the_pod_gets_a_copy_of_its_own(started: Started,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(infra, "sealed_pause", lambda path: None)  # as where vm.memfd_noexec=2
    process = start(started, "copy")
    assert os.readlink(f"/proc/{process.pid}/exe") == "/catatonit"
    assert os.listdir(f"/proc/{process.pid}/root") == ["catatonit"]
    assert process.alive()
