"""Connections into a pod: a TCP socket opened inside the pod's network namespace.

The socket is created while the calling thread is in the pod's namespace, so it belongs
to it; connect() then reaches the pod's own 127.0.0.1 (what kubelet's port-forward does).
"""
from __future__ import annotations

import socket
from pathlib import Path

from pycri.common.errors import FailedPrecondition, Unavailable
from pycri.sandbox.namespaces import enter_netns

CONNECT_TIMEOUT = 10.0


def connect(netns: Path | None, port: int, timeout: float = CONNECT_TIMEOUT) -> socket.socket:
    """A TCP connection to localhost:`port` in the network namespace at `netns` (None: the host's)."""
    if not 0 < port < 65536:
        raise FailedPrecondition(f"invalid port {port}")
    if netns is None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    else:
        with enter_netns(netns):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        raise Unavailable(f"cannot connect to port {port} in the pod: {exc.strerror or exc}") from None
    sock.settimeout(None)
    return sock
