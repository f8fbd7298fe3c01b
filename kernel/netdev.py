"""Network interfaces of the calling thread's network namespace, through ioctl(2) on a socket.

`link_up("lo")` is what the CNI `loopback` plugin does (netlink LinkSetUp): IFF_UP on the
interface, nothing else. Bringing `lo` up makes the kernel give it 127.0.0.1/8 and, where IPv6
is on, ::1/128, as with the plugin. The socket is made in, and the ioctl acts on, the network
namespace of the calling thread (sandbox/namespaces.py `enter_netns` moves a thread there).
"""
from __future__ import annotations

import fcntl
import socket
import struct

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
IFNAMSIZ = 16
_IFREQ_FLAGS = f"{IFNAMSIZ}sh"  # struct ifreq: the name, then ifr_flags (short)


def link_flags(name: str) -> int:
    """The interface flags (IFF_*) of `name`; OSError (ENODEV) when there is no such interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        return _get_flags(sock, _ifname(name))


def link_up(name: str) -> None:
    """Set IFF_UP on interface `name` (a no-op when it is up already)."""
    raw = _ifname(name)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        flags = _get_flags(sock, raw)
        if not flags & IFF_UP:
            fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack(_IFREQ_FLAGS, raw, flags | IFF_UP))


def _get_flags(sock: socket.socket, raw: bytes) -> int:
    return int(struct.unpack(_IFREQ_FLAGS, fcntl.ioctl(sock, SIOCGIFFLAGS, struct.pack(_IFREQ_FLAGS, raw, 0)))[1])


def _ifname(name: str) -> bytes:
    raw = name.encode()
    if not raw or len(raw) >= IFNAMSIZ or b"\0" in raw or b"/" in raw:
        raise ValueError(f"invalid interface name {name!r}")
    return raw
