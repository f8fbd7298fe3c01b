"""The runtime's default seccomp profile (criserver.seccomp): no new namespaces without
CAP_SYS_ADMIN, as the default profiles of Docker and containerd; and what pycri-runtime makes of it."""
from __future__ import annotations

from pycri.criserver.seccomp import default_profile
from pycri.kernel.syscall import SCMP_ACT_ALLOW, SCMP_CMP_MASKED_EQ, SeccompArg, SeccompRule, scmp_act_errno
from pycri.runtime.seccomp import translate

NAMESPACE_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000


def _allowed(profile: dict) -> set[str]:
    return {n for rule in profile["syscalls"] if rule["action"] == "SCMP_ACT_ALLOW" and not rule.get("args")
            for n in rule["names"]}


def test_without_sys_admin_clone_is_checked_and_clone3_is_enosys() -> None:
    profile = default_profile(["CAP_CHOWN", "CAP_SYS_PTRACE"])
    assert not {"clone", "clone3", "unshare", "setns", "mount"} & _allowed(profile)
    assert {"fork", "vfork", "ptrace"} <= _allowed(profile)
    assert {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": NAMESPACE_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]} \
        in profile["syscalls"]
    assert {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38} in profile["syscalls"]
    program = translate(profile)
    assert program.default_action == scmp_act_errno(1)
    assert SeccompRule("clone", SCMP_ACT_ALLOW, (SeccompArg(0, SCMP_CMP_MASKED_EQ, NAMESPACE_FLAGS, 0),)) \
        in program.rules
    assert SeccompRule("clone3", scmp_act_errno(38)) in program.rules
    assert not [r for r in program.rules if r.syscall in ("unshare", "setns")]


def test_with_sys_admin_namespaces_are_allowed() -> None:
    profile = default_profile(["CAP_SYS_ADMIN"])
    assert {"clone", "clone3", "unshare", "setns"} <= _allowed(profile)
    assert [r for r in profile["syscalls"] if r.get("args") or r["action"] != "SCMP_ACT_ALLOW"] == []
    rules = [r for r in translate(profile).rules if r.syscall in ("clone", "clone3")]
    assert rules == [SeccompRule("clone", SCMP_ACT_ALLOW), SeccompRule("clone3", SCMP_ACT_ALLOW)]
