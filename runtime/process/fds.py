"""File descriptors the container process keeps: stdio, and with --preserve-fds N the N
after it (3 .. 3+N-1); every other descriptor is closed on exec."""
from __future__ import annotations

import os


def keep_only(preserve: int, proc_fd_dir: str = "/proc/self/fd") -> None:
    last = 2 + preserve
    try:
        fds = [int(name) for name in os.listdir(proc_fd_dir)]
    except OSError:
        fds = list(range(3, 1024))
    for fd in fds:
        if fd <= 2:
            continue
        try:
            os.set_inheritable(fd, fd <= last)
        except OSError:
            pass
