"""linux.seccomp of the spec -> a kernel.SeccompProgram (loaded with libseccomp by kernel.linux).

Names follow runtime-spec config-linux.md: actions SCMP_ACT_*, comparisons SCMP_CMP_*,
architectures SCMP_ARCH_*. A rule whose action is the default action is left out (libseccomp
refuses it); a rule that compares the same argument twice becomes one rule per comparison
(libseccomp allows one comparison per argument in a rule, and the spec means "any of").
"""
from __future__ import annotations

from pycri.kernel.syscall import (
    SCMP_ACT_ALLOW, SCMP_ACT_KILL_PROCESS, SCMP_ACT_KILL_THREAD, SCMP_ACT_LOG, SCMP_ACT_TRAP, SCMP_CMP_EQ,
    SCMP_CMP_GE, SCMP_CMP_GT, SCMP_CMP_LE, SCMP_CMP_LT, SCMP_CMP_MASKED_EQ, SCMP_CMP_NE, SeccompArg,
    SeccompProgram, SeccompRule, scmp_act_errno, scmp_act_trace,
)
from pycri.runtime.errors import RuntimeFailure

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

EPERM = 1
OPERATORS = {
    "SCMP_CMP_NE": SCMP_CMP_NE, "SCMP_CMP_LT": SCMP_CMP_LT, "SCMP_CMP_LE": SCMP_CMP_LE,
    "SCMP_CMP_EQ": SCMP_CMP_EQ, "SCMP_CMP_GE": SCMP_CMP_GE, "SCMP_CMP_GT": SCMP_CMP_GT,
    "SCMP_CMP_MASKED_EQ": SCMP_CMP_MASKED_EQ,
}
KNOWN_FLAGS = ("SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
               "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV")


class SeccompError(RuntimeFailure):
    pass


def action_value(name: str, errno_ret: int | None = None) -> int:
    if name in ("SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD"):
        return SCMP_ACT_KILL_THREAD
    if name == "SCMP_ACT_KILL_PROCESS":
        return SCMP_ACT_KILL_PROCESS
    if name == "SCMP_ACT_TRAP":
        return SCMP_ACT_TRAP
    if name == "SCMP_ACT_ERRNO":
        return scmp_act_errno(EPERM if errno_ret is None else errno_ret)
    if name == "SCMP_ACT_TRACE":
        return scmp_act_trace(EPERM if errno_ret is None else errno_ret)
    if name == "SCMP_ACT_ALLOW":
        return SCMP_ACT_ALLOW
    if name == "SCMP_ACT_LOG":
        return SCMP_ACT_LOG
    if name == "SCMP_ACT_NOTIFY":
        raise SeccompError("seccomp action SCMP_ACT_NOTIFY is not supported by pycri-runtime")
    raise SeccompError(f"unknown seccomp action {name!r}")


def architecture(name: str) -> str:
    """SCMP_ARCH_X86_64 -> x86_64 (libseccomp's name)."""
    if not name.startswith("SCMP_ARCH_"):
        raise SeccompError(f"unknown seccomp architecture {name!r}")
    return name[len("SCMP_ARCH_"):].lower()


def _arg(raw: Any, where: str) -> SeccompArg:
    if not isinstance(raw, dict):
        raise SeccompError(f"{where} must be an object")
    op = OPERATORS.get(raw.get("op", ""))
    if op is None:
        raise SeccompError(f"{where}: unknown comparison {raw.get('op')!r}")
    index = raw.get("index", 0)
    if not isinstance(index, int) or not 0 <= index <= 5:
        raise SeccompError(f"{where}: argument index {index!r} out of range 0-5")
    return SeccompArg(index=index, op=op, value=int(raw.get("value", 0)), value_two=int(raw.get("valueTwo", 0)))


def translate(seccomp: dict[str, Any], no_new_privs: bool = False) -> SeccompProgram:
    default = action_value(seccomp.get("defaultAction", ""), seccomp.get("defaultErrnoRet"))
    arches = tuple(architecture(a) for a in seccomp.get("architectures") or [])
    flags = seccomp.get("flags") or []
    for flag in flags:
        if flag not in KNOWN_FLAGS:
            raise SeccompError(f"unknown seccomp flag {flag!r}")
    rules: list[SeccompRule] = []
    for i, entry in enumerate(seccomp.get("syscalls") or []):
        where = f"linux.seccomp.syscalls[{i}]"
        if not isinstance(entry, dict):
            raise SeccompError(f"{where} must be an object")
        act = action_value(entry.get("action", ""), entry.get("errnoRet"))
        args = tuple(_arg(a, f"{where}.args[{j}]") for j, a in enumerate(entry.get("args") or []))
        if act == default:
            continue
        indexes = [a.index for a in args]
        groups = [(a,) for a in args] if len(set(indexes)) != len(indexes) else [args]
        for name in entry.get("names") or []:
            for group in groups:
                rules.append(SeccompRule(syscall=name, action=act, args=group))
    return SeccompProgram(default_action=default, architectures=arches, rules=tuple(rules),
                          no_new_privs=no_new_privs, log="SECCOMP_FILTER_FLAG_LOG" in flags)
