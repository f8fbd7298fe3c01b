"""Watching containers' monitors without asking each one: a file descriptor per live monitor
(a pidfd of the monitor process) in one epoll set, so "which monitors have ended?" is one epoll_wait(2) for
all of them, and a thread can sleep until one ends.

A descriptor is the runtime handler's (`RuntimeHandler.watch`); it polls readable once the
monitor has ended and stays so (level-triggered) until it is dropped. Watches are capped at
half of the process's open-file limit: a container past the cap is not watched, and its exit
is looked for as before, by asking its handler.
"""
from __future__ import annotations

import os
import resource
import select
import threading


def default_cap() -> int:
    """Half the soft open-file limit: the other half stays for everything else."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(0, soft // 2) if soft != resource.RLIM_INFINITY else 1 << 20


class MonitorWatches:
    """Container id -> the descriptor of its live monitor, all in one epoll set."""

    def __init__(self, cap: int | None = None) -> None:
        self.cap = default_cap() if cap is None else cap
        self._epoll = select.epoll()
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)  # ends a wait at once (`wake`)
        self._epoll.register(self._wake, select.EPOLLIN)
        self._lock = threading.Lock()
        self._fds: dict[str, int] = {}  # container id -> descriptor
        self._ids: dict[int, str] = {}  # descriptor -> container id

    def full(self) -> bool:
        return len(self._fds) >= self.cap

    def add(self, container_id: str, fd: int) -> None:
        """Watch `fd` for `container_id` (the watches own it from now on; a container's
        earlier descriptor is closed)."""
        with self._lock:
            self._drop(container_id)
            try:
                self._epoll.register(fd, select.EPOLLIN)
            except OSError:
                os.close(fd)
                return
            self._fds[container_id], self._ids[fd] = fd, container_id

    def watching(self, container_id: str) -> bool:
        return container_id in self._fds

    def has_ended(self, container_id: str) -> bool | None:
        """Whether the container's watched monitor has ended; None when it is not watched."""
        with self._lock:
            fd = self._fds.get(container_id)
            if fd is None:
                return None
            poll = select.poll()
            poll.register(fd, select.POLLIN)
            return bool(poll.poll(0))

    def wait_ended(self, container_id: str, timeout: float) -> bool | None:
        """Wait up to `timeout` seconds for the container's watched monitor to end: whether it
        has; None (at once) when it is not watched."""
        with self._lock:
            fd = self._fds.get(container_id)
            if fd is None:
                return None
            fd = os.dup(fd)  # ours while we wait: a discard meanwhile closes only the watch's
        try:
            poll = select.poll()
            poll.register(fd, select.POLLIN)
            return bool(poll.poll(max(0, int(timeout * 1000))))
        finally:
            os.close(fd)

    def discard(self, container_id: str) -> None:
        with self._lock:
            self._drop(container_id)

    def ended(self, timeout: float = 0) -> set[str]:
        """The containers whose monitor has ended (waiting up to `timeout` seconds for one
        when none has, or until `wake`)."""
        events = self._epoll.poll(timeout, len(self._ids) + 1)
        if timeout and any(fd == self._wake for fd, _ in events):
            try:  # (a waiter takes the wake; a look without waiting leaves it)
                os.eventfd_read(self._wake)
            except BlockingIOError:
                pass
        with self._lock:
            return {self._ids[fd] for fd, _ in events if fd in self._ids}

    def wake(self) -> None:
        """End a wait in `ended` now (a watcher that is told to stop)."""
        os.eventfd_write(self._wake, 1)

    def close(self) -> None:
        with self._lock:
            for container_id in list(self._fds):
                self._drop(container_id)
            self._epoll.close()
            os.close(self._wake)

    def _drop(self, container_id: str) -> None:
        fd = self._fds.pop(container_id, None)
        if fd is None:
            return
        del self._ids[fd]
        try:
            self._epoll.unregister(fd)
        except OSError:
            pass
        os.close(fd)
