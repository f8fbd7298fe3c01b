"""linux.seccomp -> SeccompProgram translation (runtime.seccomp), without loading anything."""
from __future__ import annotations

import pytest

from pycri.kernel.syscall import (
    SCMP_ACT_ALLOW, SCMP_ACT_KILL_PROCESS, SCMP_ACT_KILL_THREAD, SCMP_ACT_LOG, SCMP_ACT_TRAP, SCMP_CMP_EQ,
    SCMP_CMP_MASKED_EQ, SeccompArg, SeccompRule, scmp_act_errno, scmp_act_trace,
)
from pycri.runtime.seccomp import SeccompError, action_value, architecture, translate


def test_actions() -> None:
    assert action_value("SCMP_ACT_ALLOW") == SCMP_ACT_ALLOW == 0x7FFF0000
    assert action_value("SCMP_ACT_ERRNO") == scmp_act_errno(1) == 0x00050001
    assert action_value("SCMP_ACT_ERRNO", 38) == 0x00050026
    assert action_value("SCMP_ACT_KILL") == action_value("SCMP_ACT_KILL_THREAD") == SCMP_ACT_KILL_THREAD == 0
    assert action_value("SCMP_ACT_KILL_PROCESS") == SCMP_ACT_KILL_PROCESS == 0x80000000
    assert action_value("SCMP_ACT_TRAP") == SCMP_ACT_TRAP
    assert action_value("SCMP_ACT_LOG") == SCMP_ACT_LOG
    assert action_value("SCMP_ACT_TRACE", 7) == scmp_act_trace(7) == 0x7FF00007
    with pytest.raises(SeccompError, match="NOTIFY"):
        action_value("SCMP_ACT_NOTIFY")
    with pytest.raises(SeccompError, match="unknown seccomp action"):
        action_value("SCMP_ACT_MAYBE")


def test_architectures() -> None:
    assert architecture("SCMP_ARCH_X86_64") == "x86_64"
    assert architecture("SCMP_ARCH_AARCH64") == "aarch64"
    with pytest.raises(SeccompError):
        architecture("x86_64")


def test_translate_a_profile() -> None:
    program = translate({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 38,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "flags": ["SECCOMP_FILTER_FLAG_LOG"],
        "syscalls": [
            {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}, {"index": 0, "value": 0x20000, "op": "SCMP_CMP_EQ"}]},
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 0x7E020000, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"},
                      {"index": 1, "value": 0, "op": "SCMP_CMP_EQ"}]},
            {"names": ["reboot"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},  # same as the default: left out
        ],
    }, no_new_privs=True)
    assert program.default_action == scmp_act_errno(38)
    assert program.architectures == ("x86_64", "x86")
    assert program.no_new_privs and program.log
    assert program.rules == (
        SeccompRule("read", SCMP_ACT_ALLOW),
        SeccompRule("write", SCMP_ACT_ALLOW),
        # the same argument twice: "either", one rule each
        SeccompRule("personality", SCMP_ACT_ALLOW, (SeccompArg(0, SCMP_CMP_EQ, 8),)),
        SeccompRule("personality", SCMP_ACT_ALLOW, (SeccompArg(0, SCMP_CMP_EQ, 0x20000),)),
        SeccompRule("clone", SCMP_ACT_ALLOW, (SeccompArg(0, SCMP_CMP_MASKED_EQ, 0x7E020000, 0),
                                              SeccompArg(1, SCMP_CMP_EQ, 0))),
    )


@pytest.mark.parametrize(("profile", "message"), [
    ({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_BOGUS"]}, "unknown seccomp flag"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"], "action": "SCMP_ACT_ERRNO",
                                                       "args": [{"index": 9, "op": "SCMP_CMP_EQ"}]}]}, "out of range"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"], "action": "SCMP_ACT_ERRNO",
                                                       "args": [{"index": 0, "op": "SCMP_CMP_SIMILAR"}]}]}, "comparison"),
])
def test_bad_profiles(profile: dict, message: str) -> None:
    with pytest.raises(SeccompError, match=message):
        translate(profile)
