"""Capability names (CAP_*) and numbers, and applying the five sets of process.capabilities.

Order, like runc: drop the bounding set while still root, keep the permitted set across the
switch to the container user (PR_SET_KEEPCAPS), then capset effective/permitted/
inheritable and raise the ambient ones (a raise the kernel refuses, because the capability
is not both permitted and inheritable, is skipped).
"""
from __future__ import annotations

import errno

from pycri.kernel.syscall import (
    PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, PR_CAP_AMBIENT_RAISE, PR_CAPBSET_DROP, CapSets, Syscall,
)
from pycri.runtime.errors import RuntimeFailure
from pycri.runtime.spec import Capabilities

NAMES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
    "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)
NUMBERS = {name: number for number, name in enumerate(NAMES)}


def last_cap(path: str = "/proc/sys/kernel/cap_last_cap") -> int:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return len(NAMES) - 1


def to_mask(names: list[str], unknown: list[str] | None = None, top: int | None = None) -> int:
    """Names -> bit mask. Names this table or kernel does not know are left out (and listed
    in `unknown`), as runc does, so a newer config still runs on an older kernel."""
    mask = 0
    for name in names:
        number = NUMBERS.get(name.upper() if name.upper().startswith("CAP_") else "CAP_" + name.upper())
        if number is None or (top is not None and number > top):
            if unknown is not None:
                unknown.append(name)
            continue
        mask |= 1 << number
    return mask


def to_names(mask: int) -> list[str]:
    return [name for number, name in enumerate(NAMES) if mask & (1 << number)]


class CapabilityPlan:
    """The five sets as masks."""

    def __init__(self, caps: Capabilities | None, top: int) -> None:
        caps = caps or Capabilities()
        self.unknown: list[str] = []
        self.bounding = to_mask(caps.bounding, self.unknown, top)
        self.effective = to_mask(caps.effective, self.unknown, top)
        self.permitted = to_mask(caps.permitted, self.unknown, top)
        self.inheritable = to_mask(caps.inheritable, self.unknown, top)
        self.ambient = to_mask(caps.ambient, self.unknown, top)
        self.top = top


def drop_bounding(kernel: Syscall, plan: CapabilityPlan) -> None:
    for number in range(plan.top + 1):
        if plan.bounding & (1 << number):
            continue
        try:
            kernel.prctl(PR_CAPBSET_DROP, number)
        except OSError as e:
            if e.errno != errno.EINVAL:  # a capability this kernel does not have
                raise RuntimeFailure(f"drop capability {NAMES[number]} from the bounding set: {e.strerror}") from None


def apply_sets(kernel: Syscall, plan: CapabilityPlan) -> None:
    try:
        kernel.capset(CapSets(effective=plan.effective, permitted=plan.permitted, inheritable=plan.inheritable))
    except OSError as e:
        raise RuntimeFailure(f"capset: {e.strerror or e}") from None
    try:
        kernel.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError:
        return
    for number in range(plan.top + 1):
        if plan.ambient & (1 << number):
            try:
                kernel.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, number)
            except OSError:
                pass
