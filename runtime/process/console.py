"""--console-socket: a pseudo-terminal for the container process.

The runtime connects to the socket before entering the container; inside (after
pivot_root, so the pty comes from the container's own devpts) the process opens a pty,
sends the master over the socket (SCM_RIGHTS), makes the slave its controlling terminal and
its stdin/stdout/stderr, and for the init process bind-mounts it on /dev/console.
"""
from __future__ import annotations

import os
import sys

from pycri.kernel.syscall import MS_BIND, Syscall
from pycri.runtime.errors import RuntimeFailure


def connect(path: str) -> int:
    """A connected AF_UNIX stream socket; the caller owns the returned fd. (`_socket` is
    imported here, in the runtime, so that it is loaded before the child enters the
    container, where the standard library is out of reach, and only when needed. It is the
    C module under `socket`, whose enums and selectors would cost ~10 ms of start-up.)"""
    import _socket

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)  # close-on-exec, like socket.socket
    try:
        sock.connect(path)
    except OSError as e:
        sock.close()
        raise RuntimeFailure(f"connect to console socket {path}: {e.strerror or e}") from None
    return sock.detach()


def setup_console(kernel: Syscall, socket_fd: int, *, mount_dev_console: bool) -> None:
    """Consumes (closes) `socket_fd`, which `connect` made (so `_socket` is loaded)."""
    import _socket

    master, slave = os.openpty()
    try:
        slave_path = os.ttyname(slave)
        sock = _socket.socket(fileno=socket_fd)
        try:
            # socket.send_fds(sock, [b"/dev/ptmx"], [master])
            rights = master.to_bytes(4, sys.byteorder, signed=True)
            sock.sendmsg([b"/dev/ptmx"], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, rights)])
        finally:
            sock.close()
        os.close(master)
        master = -1
        if mount_dev_console:
            console = "/dev/console"
            if not os.path.lexists(console):
                os.close(os.open(console, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
            kernel.mount(slave_path, console, "bind", MS_BIND)
        kernel.set_controlling_terminal(slave)
        for fd in (0, 1, 2):
            os.dup2(slave, fd)
    except OSError as e:
        raise RuntimeFailure(f"set up the console: {e.strerror or e}") from None
    finally:
        if master >= 0:
            os.close(master)
        if slave > 2:
            os.close(slave)
