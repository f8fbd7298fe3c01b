"""The cgroup v2 device filter assembler: the instructions it emits, and what they decide
(run through a small interpreter of the instructions it uses)."""
from __future__ import annotations

import struct

import pytest

from pycri.cgroups import CgroupError
from pycri.cgroups.devices_bpf import (
    ACC_MKNOD, ACC_READ, ACC_WRITE, DEV_BLOCK, DEV_CHAR, decode, device_filter, emulate, insn,
)
from pycri.cgroups.resources import DEFAULT_ALLOWED_DEVICES, DeviceRule, Resources

ACCESS = {"m": ACC_MKNOD, "r": ACC_READ, "w": ACC_WRITE}
TYPES = {"b": DEV_BLOCK, "c": DEV_CHAR}
U32 = 0xFFFFFFFF


def run(program: bytes, kind: str, access: str, major: int, minor: int) -> int:
    """Execute the program on one struct bpf_cgroup_dev_ctx (only the opcodes the assembler uses)."""
    bits = 0
    for char in access:
        bits |= ACCESS[char]
    ctx = struct.pack("<III", (bits << 16) | TYPES[kind], major, minor)
    regs = [0] * 11
    pc = 0
    steps = 0
    code = decode(program)
    while True:
        steps += 1
        assert steps < 10_000, "no exit"
        op, dst, src, off, imm = code[pc]
        pc += 1
        uimm = imm & U32
        if op == 0x61:  # ldxw dst, [src + off]: src must be the context
            assert src == 1 and off in (0, 4, 8)
            regs[dst] = struct.unpack_from("<I", ctx, off)[0]
        elif op == 0x54:
            regs[dst] = (regs[dst] & uimm) & U32
        elif op == 0x74:
            regs[dst] = (regs[dst] & U32) >> uimm
        elif op == 0xB4:
            regs[dst] = uimm
        elif op == 0xBC:
            regs[dst] = regs[src] & U32
        elif op == 0x56:  # jne32 dst, imm
            if regs[dst] & U32 != uimm:
                pc += off
        elif op == 0x5E:  # jne32 dst, src
            if regs[dst] & U32 != regs[src] & U32:
                pc += off
        elif op == 0x95:
            return regs[0]
        else:
            raise AssertionError(f"unexpected opcode {op:#x}")
        assert 0 <= pc < len(code)


def container_rules(*spec_rules: dict[str, object]) -> list[DeviceRule]:
    """What pycri-runtime's create applies: the spec's rules, then the always-allowed devices."""
    return Resources.from_spec({"devices": list(spec_rules)}).devices + list(DEFAULT_ALLOWED_DEVICES)


DENY_ALL = {"allow": False, "access": "rwm"}


def test_the_default_rules_deny_a_host_disk_and_allow_the_standard_devices() -> None:
    program = device_filter(container_rules(DENY_ALL))
    for major, minor in ((1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 2), (136, 0), (136, 17)):
        for access in ("r", "w", "rw", "m", "rwm"):
            assert run(program, "c", access, major, minor) == 1, (major, minor, access)
    # mknod of any node is allowed (as runc: the node alone opens nothing)...
    assert run(program, "b", "m", 254, 0) == 1
    assert run(program, "c", "m", 10, 200) == 1
    # ...but not reading or writing a device outside the list
    for kind, major, minor in (("b", 254, 0), ("b", 8, 0), ("c", 1, 1), ("c", 10, 200), ("c", 4, 0), ("c", 5, 1)):
        for access in ("r", "w", "rw", "rm", "wm"):
            assert run(program, kind, access, major, minor) == 0, (kind, major, minor, access)
    # /dev/pts/* is char 136 only
    assert run(program, "b", "r", 136, 0) == 0


def test_an_allow_rule_opens_exactly_its_device_and_access() -> None:
    program = device_filter(container_rules(DENY_ALL, {"allow": True, "type": "b", "major": 254, "minor": 0,
                                                       "access": "r"}))
    assert run(program, "b", "r", 254, 0) == 1
    assert run(program, "b", "w", 254, 0) == 0
    assert run(program, "b", "rw", 254, 0) == 0
    assert run(program, "b", "r", 254, 1) == 0
    assert run(program, "c", "r", 254, 0) == 0


def test_wildcards_allow_all_and_order() -> None:
    major_only = device_filter(container_rules(DENY_ALL, {"allow": True, "type": "c", "major": 10, "access": "rw"}))
    assert run(major_only, "c", "rw", 10, 200) == 1 and run(major_only, "c", "rw", 11, 200) == 0
    minus_one = device_filter(container_rules(DENY_ALL, {"allow": True, "type": "c", "major": -1, "minor": 7,
                                                         "access": "rwm"}))
    assert run(minus_one, "c", "rw", 99, 7) == 1 and run(minus_one, "c", "rw", 99, 8) == 0
    # no rules at all: deny everything (v1's emulated start), then the default allows
    empty = device_filter(container_rules())
    assert run(empty, "b", "r", 8, 0) == 0 and run(empty, "c", "rw", 1, 3) == 1
    # "a" allow resets to allow-all; a later "a" deny to deny-all again
    allow_all = device_filter([DeviceRule(True), DeviceRule(False, "b", 8, 0, "w")])
    assert run(allow_all, "b", "r", 8, 0) == 1 and run(allow_all, "b", "w", 8, 0) == 0
    assert run(allow_all, "c", "rwm", 4, 4) == 1
    again = device_filter([DeviceRule(True), DeviceRule(False)] + list(DEFAULT_ALLOWED_DEVICES))
    assert run(again, "c", "rw", 4, 4) == 0 and run(again, "c", "rw", 1, 3) == 1
    # a deny after an allow of the same device takes the access away again
    taken = device_filter([DeviceRule(False), DeviceRule(True, "b", 8, 0, "rwm"), DeviceRule(False, "b", 8, 0, "w")])
    assert run(taken, "b", "r", 8, 0) == 1 and run(taken, "b", "w", 8, 0) == 0 and run(taken, "b", "m", 8, 0) == 1


def test_numbers_above_2_to_the_31_compare_exactly() -> None:
    program = device_filter([DeviceRule(False), DeviceRule(True, "c", 0xFFFFFFF0, 0x80000001, "rwm")])
    assert run(program, "c", "r", 0xFFFFFFF0, 0x80000001) == 1
    assert run(program, "c", "r", 0x7FFFFFF0, 0x80000001) == 0
    with pytest.raises(CgroupError, match="bad major"):
        device_filter([DeviceRule(True, "c", 1 << 32, 0, "r")])


def test_hole_punching_into_a_wildcard_is_refused() -> None:
    with pytest.raises(CgroupError, match="punch a hole"):
        emulate([DeviceRule(False), DeviceRule(True, "c", None, None, "rwm"), DeviceRule(False, "c", 1, 3, "w")])
    with pytest.raises(CgroupError, match="punch a hole"):
        emulate([DeviceRule(True), DeviceRule(False, "b", 8, None, "rw"), DeviceRule(True, "b", 8, 0, "r")])
    # not overlapping access: fine (the default rules' c *:* m, then a deny of r on one device)
    assert emulate([DeviceRule(False), DeviceRule(True, "c", None, None, "m"), DeviceRule(False, "c", 1, 3, "r")]) \
        == (False, {("c", None, None): ACC_MKNOD})


def test_bad_rules() -> None:
    with pytest.raises(CgroupError, match="bad type"):
        device_filter([DeviceRule(True, "p", 1, 1, "r")])
    with pytest.raises(CgroupError, match="bad access"):
        device_filter([DeviceRule(True, "c", 1, 1, "x")])


def test_the_emitted_instructions() -> None:
    program = device_filter([DeviceRule(False), DeviceRule(True, "b", 254, 0, "r"),
                             DeviceRule(True, "c", 1, None, "rwm")])
    assert decode(program) == [
        (0x61, 2, 1, 0, 0),  # r2 = *(u32 *)(r1 + 0): access_type
        (0x54, 2, 0, 0, 0xFFFF),  # w2 &= 0xffff: type
        (0x61, 3, 1, 0, 0),
        (0x74, 3, 0, 0, 16),  # w3 >>= 16: access
        (0x61, 4, 1, 4, 0),  # major
        (0x61, 5, 1, 8, 0),  # minor
        # c 1:* rwm (sorted by major): type, major; no access test for rwm
        (0x56, 2, 0, 3, DEV_CHAR),
        (0x56, 4, 0, 2, 1),
        (0xB4, 0, 0, 0, 1),
        (0x95, 0, 0, 0, 0),
        # b 254:0 r
        (0x56, 2, 0, 7, DEV_BLOCK),
        (0xBC, 1, 3, 0, 0),  # w1 = w3
        (0x54, 1, 0, 0, ACC_READ),  # w1 &= r
        (0x5E, 1, 3, 4, 0),  # if w1 != w3 goto next
        (0x56, 4, 0, 3, 254),
        (0x56, 5, 0, 2, 0),
        (0xB4, 0, 0, 0, 1),
        (0x95, 0, 0, 0, 0),
        # the default: deny
        (0xB4, 0, 0, 0, 0),
        (0x95, 0, 0, 0, 0),
    ]
    assert program[:8] == insn(0x61, 2, 1, 0) == bytes([0x61, 0x12, 0, 0, 0, 0, 0, 0])


def test_allow_by_default_with_deny_exceptions() -> None:
    program = device_filter([DeviceRule(True), DeviceRule(False, "b", None, None, "rw")])
    code = decode(program)
    assert code[-2:] == [(0xB4, 0, 0, 0, 1), (0x95, 0, 0, 0, 0)]  # the default: allow
    assert (0xB4, 0, 0, 0, 0) in code  # the exception: deny
    assert run(program, "b", "r", 8, 0) == 0 and run(program, "b", "m", 8, 0) == 1
