"""bpf(2) for cgroup device programs: load, attach, query, detach (ctypes, x86_64).

Only what the cgroup v2 device filter needs (cgroups.v2). Errors raise OSError with errno and
the call; a program the verifier refuses raises with the verifier's log in the message.
"""
from __future__ import annotations

import ctypes
import os

SYS_bpf = 321  # x86_64
# enum bpf_cmd
BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_DETACH = 9
BPF_PROG_GET_FD_BY_ID = 13
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_PROG_QUERY = 16
BPF_PROG_TYPE_CGROUP_DEVICE = 15  # enum bpf_prog_type
BPF_CGROUP_DEVICE = 6  # enum bpf_attach_type
BPF_F_ALLOW_MULTI = 1 << 1
BPF_OBJ_NAME_LEN = 16
_ATTR_SIZE = 128  # larger than every command's part of union bpf_attr used here; the rest is zero
_INFO_SIZE = 80  # struct bpf_prog_info up to and including name[16]
_LOG_SIZE = 1 << 16
_ENOSPC = 28

_libc = ctypes.CDLL(None, use_errno=True)


def _bpf(cmd: int, attr: ctypes.Array[ctypes.c_char], what: str) -> int:
    result = _libc.syscall(ctypes.c_long(SYS_bpf), ctypes.c_long(cmd), attr, ctypes.c_uint(len(attr)))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return int(result)


def _attr(*fields: tuple[int, str, int]) -> ctypes.Array[ctypes.c_char]:
    """A zeroed union bpf_attr with (offset, struct format, value) fields set."""
    import struct

    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    for offset, fmt, value in fields:
        struct.pack_into("<" + fmt, attr, offset, value)
    return attr


class LinuxBpf:
    """The bpf(2) calls of cgroups.v2's device filter (the interface its tests fake)."""

    def load_device_program(self, instructions: bytes, license: str, name: str) -> int:
        """BPF_PROG_LOAD of a BPF_PROG_TYPE_CGROUP_DEVICE program: its fd (close-on-exec)."""
        if len(instructions) % 8 or not instructions:
            raise ValueError("a BPF program is a non-empty sequence of 8-byte instructions")
        insns = ctypes.create_string_buffer(instructions, len(instructions))
        lic = ctypes.create_string_buffer(license.encode())
        raw_name = name.encode()[:BPF_OBJ_NAME_LEN - 1]

        def attr(log: ctypes.Array[ctypes.c_char] | None) -> ctypes.Array[ctypes.c_char]:
            a = _attr((0, "I", BPF_PROG_TYPE_CGROUP_DEVICE), (4, "I", len(instructions) // 8),
                      (8, "Q", ctypes.addressof(insns)), (16, "Q", ctypes.addressof(lic)),
                      (24, "I", 1 if log is not None else 0), (28, "I", len(log) if log is not None else 0),
                      (32, "Q", ctypes.addressof(log) if log is not None else 0),
                      (68, "I", BPF_CGROUP_DEVICE))  # expected_attach_type
            a[48:48 + len(raw_name)] = raw_name  # prog_name
            return a

        try:
            return _bpf(BPF_PROG_LOAD, attr(None), f"bpf(BPF_PROG_LOAD, {name})")
        except OSError:
            pass
        log = ctypes.create_string_buffer(_LOG_SIZE)
        try:  # again with the verifier's log, to say why
            return _bpf(BPF_PROG_LOAD, attr(log), f"bpf(BPF_PROG_LOAD, {name})")
        except OSError as e:
            text = log.value.decode(errors="replace").strip()
            raise OSError(e.errno, f"{e.strerror}; verifier: {text[-2000:]}" if text else e.strerror) from None

    def attach_device_program(self, cgroup_fd: int, program_fd: int) -> None:
        """BPF_PROG_ATTACH (BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI) to the cgroup's directory fd."""
        _bpf(BPF_PROG_ATTACH, _attr((0, "I", cgroup_fd), (4, "I", program_fd), (8, "I", BPF_CGROUP_DEVICE),
                                    (12, "I", BPF_F_ALLOW_MULTI)),
             f"bpf(BPF_PROG_ATTACH, cgroup fd {cgroup_fd}, program fd {program_fd})")

    def detach_device_program(self, cgroup_fd: int, program_fd: int) -> None:
        _bpf(BPF_PROG_DETACH, _attr((0, "I", cgroup_fd), (4, "I", program_fd), (8, "I", BPF_CGROUP_DEVICE)),
             f"bpf(BPF_PROG_DETACH, cgroup fd {cgroup_fd}, program fd {program_fd})")

    def device_program_ids(self, cgroup_fd: int) -> list[int]:
        """BPF_PROG_QUERY: the ids of the device programs attached to the cgroup itself."""
        count = 64
        for _ in range(10):
            ids = (ctypes.c_uint32 * count)()
            attr = _attr((0, "I", cgroup_fd), (4, "I", BPF_CGROUP_DEVICE), (16, "Q", ctypes.addressof(ids)),
                         (24, "I", count))
            try:
                _bpf(BPF_PROG_QUERY, attr, f"bpf(BPF_PROG_QUERY, cgroup fd {cgroup_fd})")
            except OSError as e:
                if e.errno == _ENOSPC:  # more than `count`: the kernel wrote the real count
                    count = int.from_bytes(attr[24:28], "little")
                    continue
                raise
            found = int.from_bytes(attr[24:28], "little")
            return list(ids[:found])
        raise OSError(_ENOSPC, "bpf(BPF_PROG_QUERY): the attached programs kept changing")

    def program_fd(self, program_id: int) -> int:
        """BPF_PROG_GET_FD_BY_ID (close-on-exec)."""
        return _bpf(BPF_PROG_GET_FD_BY_ID, _attr((0, "I", program_id)), f"bpf(BPF_PROG_GET_FD_BY_ID, {program_id})")

    def program_name(self, program_fd: int) -> str:
        """The name given at load (BPF_OBJ_GET_INFO_BY_FD)."""
        info = ctypes.create_string_buffer(_INFO_SIZE)
        _bpf(BPF_OBJ_GET_INFO_BY_FD, _attr((0, "I", program_fd), (4, "I", _INFO_SIZE),
                                            (8, "Q", ctypes.addressof(info))),
             f"bpf(BPF_OBJ_GET_INFO_BY_FD, {program_fd})")
        return info.raw[64:80].split(b"\0", 1)[0].decode(errors="replace")
