"""The process attributes (runtime.process) with the recording kernel fake: capability
names and sets, user switch, rlimits, PATH lookup, and the order of setup.prepare."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from pycri.kernel.fake import RecordingSyscall
from pycri.kernel.syscall import (
    PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, PR_CAP_AMBIENT_RAISE, PR_CAPBSET_DROP, PR_SET_KEEPCAPS,
    PR_SET_NO_NEW_PRIVS, CapSets, SeccompProgram,
)
from pycri.runtime.errors import RuntimeFailure
from pycri.runtime.process import capabilities, lookup, rlimits, setup, user
from pycri.runtime.spec import Capabilities, Process, Rlimit, User


def test_capability_names() -> None:
    assert capabilities.NUMBERS["CAP_CHOWN"] == 0
    assert capabilities.NUMBERS["CAP_NET_BIND_SERVICE"] == 10
    assert capabilities.NUMBERS["CAP_SYS_ADMIN"] == 21
    assert capabilities.NUMBERS["CAP_AUDIT_WRITE"] == 29
    assert capabilities.NUMBERS["CAP_CHECKPOINT_RESTORE"] == 40
    unknown: list[str] = []
    mask = capabilities.to_mask(["CAP_KILL", "net_raw", "CAP_NOPE", "CAP_BPF"], unknown, top=38)
    assert mask == (1 << 5) | (1 << 13)
    assert unknown == ["CAP_NOPE", "CAP_BPF"]  # CAP_BPF (39) is past this kernel's last capability
    assert capabilities.to_names(0x20000420) == ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_AUDIT_WRITE"]


def test_apply_capabilities() -> None:
    kernel = RecordingSyscall()
    plan = capabilities.CapabilityPlan(Capabilities(bounding=["CAP_KILL", "CAP_CHOWN"], effective=["CAP_KILL"],
                                                    permitted=["CAP_KILL"], inheritable=["CAP_KILL"],
                                                    ambient=["CAP_KILL"]), top=40)
    capabilities.drop_bounding(kernel, plan)
    dropped = [args[1] for name, args in kernel.calls if args[0] == PR_CAPBSET_DROP]
    assert dropped == [n for n in range(41) if n not in (0, 5)]
    kernel.calls.clear()
    capabilities.apply_sets(kernel, plan)
    assert kernel.calls == [
        ("capset", (CapSets(effective=1 << 5, permitted=1 << 5, inheritable=1 << 5),)),
        ("prctl", (PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)),
        ("prctl", (PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, 5, 0, 0)),
    ]


def test_no_capabilities_object_drops_everything() -> None:
    kernel = RecordingSyscall()
    plan = capabilities.CapabilityPlan(None, top=40)
    capabilities.drop_bounding(kernel, plan)
    capabilities.apply_sets(kernel, plan)
    assert len([c for c in kernel.calls if c[1][0] == PR_CAPBSET_DROP]) == 41
    assert ("capset", (CapSets(0, 0, 0),)) in kernel.calls


def test_switch_user_order_and_home(tmp_path: Path) -> None:
    kernel = RecordingSyscall()
    user.switch_user(kernel, User(uid=1000, gid=100, additional_gids=[29, 44]))
    assert kernel.calls == [("setgroups", ([29, 44],)), ("setresgid", (100, 100, 100)), ("setresuid", (1000, 1000, 1000))]
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\nbad line\n")
    assert user.home_of(1000, str(passwd)) == "/home/user"
    assert user.home_of(0, str(passwd)) == "/root"
    assert user.home_of(5, str(passwd)) == "/"
    failing = RecordingSyscall(failures={"setresuid": PermissionError(1, "Operation not permitted")})
    with pytest.raises(RuntimeFailure, match="set user 1000:100"):
        user.switch_user(failing, User(uid=1000, gid=100))


def test_home_of_reads_only_a_bounded_regular_file(tmp_path: Path) -> None:
    """The container's /etc/passwd may be a FIFO (the runtime would block for ever), a device
    that never ends, or huge: HOME falls back to "/" and at most MAX_PASSWD_BYTES are read."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert user.home_of(0, str(fifo)) == "/"
    assert user.home_of(0, "/dev/zero") == "/"
    big = tmp_path / "big"
    big.write_text("x" * user.MAX_PASSWD_BYTES + "\nlate:x:7:7::/late:/bin/sh\n")
    assert user.home_of(7, str(big)) == "/"


def test_rlimits() -> None:
    kernel = RecordingSyscall()
    rlimits.apply_rlimits(kernel, [Rlimit("RLIMIT_NOFILE", 1024, 4096), Rlimit("RLIMIT_CORE", 0, 2 ** 64 - 1)])
    assert kernel.calls == [("setrlimit", (7, 1024, 4096)), ("setrlimit", (4, 0, -1))]
    with pytest.raises(RuntimeFailure, match="unknown rlimit"):
        rlimits.apply_rlimits(kernel, [Rlimit("RLIMIT_BOGUS", 1, 1)])


def test_look_path(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    (bin_dir / "data").write_text("")
    assert lookup.look_path("tool", [f"PATH=/nonexistent:{bin_dir}"]) == str(tool)
    assert lookup.look_path(str(tool), []) == str(tool)
    with pytest.raises(RuntimeFailure, match='exec: "data": executable file not found in \\$PATH'):
        lookup.look_path("data", [f"PATH={bin_dir}"])
    with pytest.raises(RuntimeFailure, match='executable file not found'):
        lookup.look_path("tool", [])
    with pytest.raises(RuntimeFailure, match='exec: "/nope": stat /nope: no such file or directory'):
        lookup.look_path("/nope", [])


def test_prepare_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """no_new_privs, then (for nnp=False) seccomp while privileged, bounding set, keepcaps
    around the user switch, then capset; the nnp seccomp filter is left for execute()."""
    monkeypatch.setattr(setup.os, "chdir", lambda path: None)
    monkeypatch.setattr(setup.os, "umask", lambda mask: 0)
    monkeypatch.setattr(setup.fds, "keep_only", lambda n: None)
    monkeypatch.setattr(setup, "look_path", lambda name, env: "/bin/" + name)
    monkeypatch.setattr(setup.capabilities, "last_cap", lambda: 1)
    program = SeccompProgram(default_action=0)
    process = Process(args=["sh"], env=["PATH=/bin", "HOME=/x"], user=User(uid=5, gid=6),
                      capabilities=Capabilities(bounding=["CAP_CHOWN"]), no_new_privileges=False)
    kernel = RecordingSyscall()
    prepared = setup.prepare(kernel, process, seccomp=program)
    assert kernel.names() == ["load_seccomp", "prctl", "prctl", "setgroups", "setresgid", "setresuid", "prctl",
                              "capset", "prctl"]
    assert kernel.calls[1][1][:2] == (PR_CAPBSET_DROP, 1)
    assert kernel.calls[2][1][:2] == (PR_SET_KEEPCAPS, 1) and kernel.calls[6][1][:2] == (PR_SET_KEEPCAPS, 0)
    assert prepared.late_seccomp is None
    assert prepared.path == "/bin/sh" and prepared.env == {"PATH": "/bin", "HOME": "/x"}

    kernel = RecordingSyscall()
    process.no_new_privileges = True
    prepared = setup.prepare(kernel, process, seccomp=program)
    assert kernel.calls[0] == ("prctl", (PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
    assert "load_seccomp" not in kernel.names() and prepared.late_seccomp is program


def test_environment_adds_home() -> None:
    env = setup.environment(Process(args=["x"], env=["A=1", "B=x=y", "bogus"], user=User(uid=424242)))
    assert env == {"A": "1", "B": "x=y", "HOME": "/"}
