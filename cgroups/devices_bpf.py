"""The cgroup v2 device filter: linux.resources.devices -> a BPF_PROG_TYPE_CGROUP_DEVICE program.

Pure (no syscalls): `device_filter(rules)` returns the program's instructions as bytes
(struct bpf_insn, 8 bytes each, little-endian); kernel.bpf loads and attaches it.

The rules mean what they mean on cgroup v1 (as runc's emulator makes them): they apply in
order from "deny everything"; an `a` rule resets to allow-all (allow) or deny-all (deny) and
drops the exceptions so far; any other rule adds an exception to the current default (or
takes access away from one). A deny that would punch a hole into a wildcard exception
(`c *:* rwm` allowed, then `c 1:3 w` denied) is refused: v1 silently ignores it, which
would leave the device open.

The program: load the context (struct bpf_cgroup_dev_ctx { u32 access_type; u32 major;
u32 minor; }, access_type = access << 16 | type), then one block an exception (match type,
access within the rule's, major, minor -> return the opposite of the default), then return
the default. Comparisons are 32-bit (BPF_JMP32), so any u32 major/minor is exact.
"""
from __future__ import annotations

import struct

from pycri.cgroups.base import CgroupError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pycri.cgroups.resources import DeviceRule

LICENSE = "Apache"
PROGRAM_NAME = "pycri_devices"  # BPF_OBJ_NAME_LEN is 16; how pycri finds its own program again

# uapi/linux/bpf.h
DEV_BLOCK, DEV_CHAR = 1, 2  # BPF_DEVCG_DEV_*
ACC_MKNOD, ACC_READ, ACC_WRITE = 1, 2, 4  # BPF_DEVCG_ACC_*
_ACCESS_BITS = {"m": ACC_MKNOD, "r": ACC_READ, "w": ACC_WRITE}
_TYPES = {"b": DEV_BLOCK, "c": DEV_CHAR}

# opcodes: class | op | source
_LDX_MEM_W = 0x61  # BPF_LDX | BPF_MEM | BPF_W
_ALU32_AND_K = 0x54  # BPF_ALU | BPF_AND | BPF_K
_ALU32_RSH_K = 0x74  # BPF_ALU | BPF_RSH | BPF_K
_ALU32_MOV_K = 0xB4  # BPF_ALU | BPF_MOV | BPF_K
_ALU32_MOV_X = 0xBC  # BPF_ALU | BPF_MOV | BPF_X
_JMP32_JNE_K = 0x56  # BPF_JMP32 | BPF_JNE | BPF_K
_JMP32_JNE_X = 0x5E  # BPF_JMP32 | BPF_JNE | BPF_X
_EXIT = 0x95  # BPF_JMP | BPF_EXIT
R0, R1, R2, R3, R4, R5 = range(6)
U32_MAX = 0xFFFFFFFF


def insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    """One struct bpf_insn; imm is taken as 32 bits (a u32 above 2^31 keeps its bit pattern)."""
    if imm > 0x7FFFFFFF:
        imm -= 1 << 32
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def _number(value: int | None, what: str) -> int | None:
    if value is None or value < 0:  # unset or -1: any
        return None
    if value > U32_MAX:
        raise CgroupError(f"device rule: bad {what} {value}")
    return value


def _access(text: str) -> int:
    bits = 0
    for char in text:
        if char not in _ACCESS_BITS:
            raise CgroupError(f"device rule: bad access {text!r}")
        bits |= _ACCESS_BITS[char]
    return bits


def emulate(rules: list[DeviceRule]) -> tuple[bool, dict[tuple[str, int | None, int | None], int]]:
    """The v1 meaning of the rules: (allow by default, exception (type, major, minor) -> access
    bits), from the initial deny-all."""
    default_allow = False
    exceptions: dict[tuple[str, int | None, int | None], int] = {}
    for rule in rules:
        if rule.type == "a":
            default_allow = rule.allow
            exceptions = {}
            continue
        if rule.type not in _TYPES:
            raise CgroupError(f"device rule: bad type {rule.type!r}")
        key = (rule.type, _number(rule.major, "major"), _number(rule.minor, "minor"))
        access = _access(rule.access)
        if not access:
            raise CgroupError("device rule: empty access")
        if rule.allow != default_allow:  # an exception to the default: add its access
            exceptions[key] = exceptions.get(key, 0) | access
            continue
        # same action as the default: take the access away from the matching exception,
        # refusing to punch a hole into a wider one (v1 would ignore it and keep the device open)
        kind, major, minor = key
        for wider in ((kind, None, minor), (kind, major, None), (kind, None, None)):
            if wider != key and exceptions.get(wider, 0) & access:
                raise CgroupError(
                    f"device rule {'allow' if rule.allow else 'deny'} {kind} {_show(major)}:{_show(minor)} "
                    f"{rule.access} cannot punch a hole into the wider exception {kind} "
                    f"{_show(wider[1])}:{_show(wider[2])}")
        left = exceptions.get(key, 0) & ~access
        if left:
            exceptions[key] = left
        else:
            exceptions.pop(key, None)
    return default_allow, exceptions


def _show(value: int | None) -> str:
    return "*" if value is None else str(value)


def _sort_key(item: tuple[tuple[str, int | None, int | None], int]) -> tuple[int, int, str]:
    (kind, major, minor), _ = item
    return (-1 if major is None else major, -1 if minor is None else minor, kind)


def device_filter(rules: list[DeviceRule]) -> bytes:
    """The BPF_PROG_TYPE_CGROUP_DEVICE program for the rules (see the module's docstring)."""
    default_allow, exceptions = emulate(rules)
    program = [
        insn(_LDX_MEM_W, R2, R1, 0),  # r2 = ctx->access_type
        insn(_ALU32_AND_K, R2, imm=0xFFFF),  # r2 = type
        insn(_LDX_MEM_W, R3, R1, 0),
        insn(_ALU32_RSH_K, R3, imm=16),  # r3 = access
        insn(_LDX_MEM_W, R4, R1, 4),  # r4 = major
        insn(_LDX_MEM_W, R5, R1, 8),  # r5 = minor
    ]
    verdict = 0 if default_allow else 1  # what a matching exception returns
    for (kind, major, minor), access in sorted(exceptions.items(), key=_sort_key):
        tests: list[tuple[int, int, int, int]] = [(_JMP32_JNE_K, R2, 0, _TYPES[kind])]  # (code, dst, src, imm)
        if access != ACC_MKNOD | ACC_READ | ACC_WRITE:
            # the access asked for must lie within the rule's: (r3 & access) == r3
            tests += [(_ALU32_MOV_X, R1, R3, 0), (_ALU32_AND_K, R1, 0, access), (_JMP32_JNE_X, R1, R3, 0)]
        if major is not None:
            tests.append((_JMP32_JNE_K, R4, 0, major))
        if minor is not None:
            tests.append((_JMP32_JNE_K, R5, 0, minor))
        block = len(tests) + 2  # the tests, then mov r0 + exit
        for i, (code, dst, src, imm) in enumerate(tests):
            is_jump = code in (_JMP32_JNE_K, _JMP32_JNE_X)
            off = block - i - 1 if is_jump else 0  # a failed test skips to the next block
            program.append(insn(code, dst, src, off, imm))
        program += [insn(_ALU32_MOV_K, R0, imm=verdict), insn(_EXIT)]
    program += [insn(_ALU32_MOV_K, R0, imm=1 if default_allow else 0), insn(_EXIT)]
    return b"".join(program)


def decode(program: bytes) -> list[tuple[int, int, int, int, int]]:
    """(code, dst, src, off, imm) an instruction: for tests and debugging."""
    result = []
    for i in range(0, len(program), 8):
        code, regs, off, imm = struct.unpack_from("<BBhi", program, i)
        result.append((code, regs & 0xF, regs >> 4, off, imm))
    return result
