"""The pod infra process (sandbox.infra, sandbox.pause) without starting anything: which ids
it runs as, its launcher's command line, records of older versions, and the kernel calls of
its set-up through the recording fake."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from pycri.kernel.fake import RecordingSyscall
from pycri.kernel.syscall import (
    CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWUSER, CLONE_NEWUTS, MNT_DETACH, MS_BIND, MS_NODEV, MS_NOSUID, MS_PRIVATE,
    MS_RDONLY, MS_REC, MS_REMOUNT, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, CapSets,
)
from pycri.sandbox import infra, pause


def test_ids() -> None:
    assert infra.infra_ids(None) == (65535, 65535)
    maps = {"uids": [{"container_id": 0, "host_id": 1000, "length": 100000}],
            "gids": [{"container_id": 0, "host_id": 1000, "length": 65535}]}
    assert infra.infra_ids(maps) == (65535, 0)  # 65535 is not a mapped gid: the pod's root group


def test_launcher_command() -> None:
    command = infra.launcher_command({"network": "/run/ns/p/net", "uts": "/run/ns/p/uts", "user": "/run/ns/p/user"},
                                     65535, 65535, "/usr/bin/catatonit", python="/venv/bin/python")
    assert command[:4] == ["/venv/bin/python", "-IS", "-c", pause.bootstrap(infra.SRC_ROOT)]
    assert command[4:] == ["--uid", "65535", "--gid", "65535", "--sandbox", "", "--user", "/run/ns/p/user",
                           "--network", "/run/ns/p/net", "--uts", "/run/ns/p/uts", "/usr/bin/catatonit"]
    args = pause.parse_args(command[4:])
    assert (args.uid, args.user, args.ipc, args.pause) == (65535, "/run/ns/p/user", "", "/usr/bin/catatonit")


def test_launcher_arguments_are_checked() -> None:
    assert pause.parse_args(["--uid", "1", "--gid", "2", "/p"]) == pause.LauncherArgs(1, 2, "/p")
    for bad in (["--uid", "1", "/p"], ["--uid", "1", "--gid", "2"], ["--uid", "x", "--gid", "2", "/p"],
                ["--uid", "1", "--gid", "2", "--root", "/", "/p"], ["--uid", "1", "--gid", "2", "/p", "/q"],
                ["--uid", "1", "--gid", "2", "/p", "--sandbox"]):
        with pytest.raises(ValueError):
            pause.parse_args(bad)


def test_the_launcher_runs_isolated_without_site_packages(tmp_path: Path) -> None:
    """The real command line on the real interpreter, up to the argument check: the bootstrap
    finds pycri.sandbox.pause without site-packages (-IS) and exits 2 with the usage."""
    command = infra.launcher_command({}, 1, 1, "/p")[:4] + ["--uid", "1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 2 and "usage: pycri-infra" in done.stderr
    assert command[1] == "-IS" and Path(command[0]).resolve() == Path(command[0])


def test_records_of_older_versions_still_read() -> None:
    old = infra.Infra.from_dict({"pid": 10, "start_time": 20, "holder": 9, "holder_start_time": 19})
    assert (old.pid, old.holder, old.holder_start_time) == (10, 9, 19)
    new = infra.Infra.from_dict(infra.Infra(10, 20).to_dict())
    assert new == infra.Infra(10, 20, 0, 0) and new.pid_namespace == "/proc/10/ns/pid"


def test_stop_of_a_gone_or_reused_pid_signals_nothing() -> None:
    infra.stop_process(0, 5)  # no holder (this version's records): nothing, not waitpid(0)
    infra.stop_process(os.getpid(), None)
    infra.stop_process(os.getpid(), 1)  # this process started later: not the one recorded
    assert infra.Infra(os.getpid(), 1).alive() is False


def test_join_enters_the_user_namespace_first(tmp_path: Path) -> None:
    for name in ("user", "net", "ipc", "uts"):
        (tmp_path / name).write_text("")
    kernel = RecordingSyscall()
    pause.join(kernel, {"network": str(tmp_path / "net"), "user": str(tmp_path / "user"), "ipc": str(tmp_path / "ipc"),
                        "uts": str(tmp_path / "uts")})
    flags = [args[1] for name, args in kernel.calls if name == "setns"]
    assert flags == [CLONE_NEWUSER, CLONE_NEWNET, CLONE_NEWIPC, CLONE_NEWUTS]
    assert kernel.calls[1:3] == [("setresgid", (0, 0, 0)), ("setresuid", (0, 0, 0))]
    host = RecordingSyscall()
    pause.join(host, {"network": str(tmp_path / "net")})
    assert [name for name, _ in host.calls] == ["setns"]


def test_make_root_holds_only_the_pause_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pause, "STAGING", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    kernel = RecordingSyscall()
    pause.make_root(kernel, b"\x7fELF pause")
    assert (tmp_path / "catatonit").read_bytes() == b"\x7fELF pause"
    assert (tmp_path / "catatonit").stat().st_mode & 0o777 == 0o555
    assert kernel.calls == [
        ("mount", ("", "/", "", MS_REC | MS_PRIVATE, "")),
        ("mount", ("tmpfs", str(tmp_path), "tmpfs", MS_NOSUID | MS_NODEV, "mode=0555,size=4m,nr_inodes=16")),
        ("mount", ("", str(tmp_path), "", MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, "")),
        ("pivot_root", (".", ".")),
        ("umount", (".", MNT_DETACH)),
    ]


def test_drop_privileges_leaves_no_capability() -> None:
    kernel = RecordingSyscall()
    pause.drop_privileges(kernel, 65535, 65534, 40)
    drops = [args[1] for name, args in kernel.calls if name == "prctl" and args[0] == PR_CAPBSET_DROP]
    assert drops == list(range(41))
    rest = [c for c in kernel.calls if not (c[0] == "prctl" and c[1][0] == PR_CAPBSET_DROP)]
    assert rest == [("setgroups", ([],)), ("setresgid", (65534, 65534, 65534)), ("setresuid", (65535, 65535, 65535)),
                    ("capset", (CapSets(0, 0, 0),)), ("prctl", (PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))]


def test_strays_found_by_their_pod_marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for pid, environ in (("101", b"PYCRI_SANDBOX=abc\0"), ("102", b"PYCRI_SANDBOX=abcd\0"),
                         ("103", b"PATH=/bin\0PYCRI_SANDBOX=abc\0"), ("104", b"")):
        (tmp_path / pid).mkdir()
        (tmp_path / pid / "environ").write_bytes(environ)
    (tmp_path / "self").mkdir()
    stopped: list[int] = []
    monkeypatch.setattr(infra, "stop_process", lambda pid, start: stopped.append(pid))
    assert infra.stop_strays("abc", proc=str(tmp_path)) == [101] and stopped == [101]
    assert infra.stop_strays("", proc=str(tmp_path)) == []


def test_launcher_command_with_the_sealed_pause_binary() -> None:
    command = infra.launcher_command({}, 65535, 65535, "/usr/bin/catatonit", python="/py", pause_fd=7)
    assert command[-3:] == ["--pause-fd", "7", "/usr/bin/catatonit"]
    args = pause.parse_args(command[4:])
    assert (args.pause_fd, args.pause) == (7, "/usr/bin/catatonit")
    assert pause.parse_args(infra.launcher_command({}, 1, 1, "/p")[4:]).pause_fd == -1


def test_make_root_is_empty_when_the_pause_binary_runs_from_a_memfd(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pause, "STAGING", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    kernel = RecordingSyscall()
    pause.make_root(kernel, None)
    assert list(tmp_path.iterdir()) == []
    assert [name for name, _ in kernel.calls] == ["mount", "mount", "mount", "pivot_root", "umount"]


@pytest.fixture
def sealed(monkeypatch: pytest.MonkeyPatch) -> list[infra._Sealed]:
    """sealed_pause's copies, this test's only (closed at its end)."""
    made: list[infra._Sealed] = []
    monkeypatch.setattr(infra, "_sealed", made)
    yield made
    for s in made:
        os.close(s.fd)


def test_the_sealed_pause_binary_is_one_copy_nobody_can_change(tmp_path: Path, sealed: list) -> None:
    binary = tmp_path / "catatonit"
    binary.write_bytes(Path("/bin/true").read_bytes())
    fd = infra.sealed_pause(str(binary))
    assert fd is not None and infra.sealed_pause(str(binary)) == fd  # one copy for every pod
    assert os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:catatonit")
    assert os.get_inheritable(fd) is False  # passed to the launcher only (pass_fds)
    assert os.pread(fd, 1 << 20, 0) == binary.read_bytes()
    assert os.fstat(fd).st_mode & 0o7777 == 0o555
    with pytest.raises(PermissionError):
        os.pwrite(fd, b"x", 0)
    with pytest.raises(PermissionError):
        os.ftruncate(fd, 1)
    writer = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY)  # as through /proc/PID/exe
    try:
        with pytest.raises(PermissionError):
            os.pwrite(writer, b"x", 0)
    finally:
        os.close(writer)
    # and it runs (execveat of the memfd, as the launcher does)
    assert subprocess.run([f"/proc/self/fd/{fd}"], pass_fds=(fd,)).returncode == 0
    binary.write_bytes(Path("/bin/false").read_bytes())  # an upgrade: a new copy, the old one stays open
    newer = infra.sealed_pause(str(binary))
    assert newer is not None and newer != fd and os.fstat(fd).st_nlink == 0
    assert subprocess.run([f"/proc/self/fd/{newer}"], pass_fds=(newer,)).returncode == 1
