"""Watching containers' monitors without asking each one: a file descriptor per live monitor
(a pidfd of the monitor process) in one epoll set, so "which monitors have ended?" is one epoll_wait(2) for
all of them, and a thread can sleep until one ends.

A descriptor is the runtime handler's (`RuntimeHandler.watch`); it polls readable once the
monitor has ended and stays so (level-triggered) until it is dropped. Watches are capped at
half of the process's open-file limit: a container past the cap is not watched, and its exit
is looked for as before, by asking its handler.

The same epoll set can also hold an inotify descriptor on the directory where monitors write
their exit files (`watch_directory`), so that a waiter (`wait`) also wakes when an exit file
appears, also for a container whose monitor is not watched.
"""
from __future__ import annotations

import ctypes
import os
import resource
import select
import threading
from pathlib import Path

IN_CLOSE_WRITE = 0x00000008  # a file opened for writing was closed
IN_MOVED_TO = 0x00000080  # a file was renamed into the directory (a monitor writes a temporary name first)
_READ_BYTES = 4096


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
        self._directory: int | None = None  # inotify: files completed in the exit files' directory

    def watch_directory(self, path: Path) -> bool:
        """Have `wait` (and a waiting `ended`) also wake when a file is completed in `path`
        (closed after writing, or renamed into it): a monitor's exit file. False when no inotify
        descriptor can be had (no such directory, no inotify, out of watches)."""
        with self._lock:
            if self._directory is None:
                fd = _inotify(path, IN_CLOSE_WRITE | IN_MOVED_TO)
                if fd is None:
                    return False
                self._epoll.register(fd, select.EPOLLIN)
                self._directory = fd
            return True

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
        when none has, or until `wake` or a file completed in the watched directory)."""
        events = self._poll(timeout)
        with self._lock:
            return {self._ids[fd] for fd in events if fd in self._ids}

    def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for a monitor to end (at once if one has), a file to be
        completed in the watched directory, or `wake`: whether one of those happened."""
        return bool(self._poll(timeout))

    def _poll(self, timeout: float) -> list[int]:
        """The descriptors that poll readable, waiting up to `timeout` seconds for one. A waiter
        takes the wake and the directory's news (a look without waiting leaves them)."""
        events = [fd for fd, _ in self._epoll.poll(timeout, len(self._ids) + 2)]
        if timeout:
            for fd in events:
                if fd == self._wake or fd == self._directory:
                    _drain(fd)
        return events

    def wake(self) -> None:
        """End a wait in `ended` now (a watcher that is told to stop)."""
        os.eventfd_write(self._wake, 1)

    def close(self) -> None:
        with self._lock:
            for container_id in list(self._fds):
                self._drop(container_id)
            self._epoll.close()
            os.close(self._wake)
            if self._directory is not None:
                os.close(self._directory)
                self._directory = None

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


def _drain(fd: int) -> None:
    """Read a non-blocking descriptor (an eventfd, an inotify one) until it has nothing more."""
    try:
        while os.read(fd, _READ_BYTES):
            pass
    except (BlockingIOError, OSError):
        pass


def _inotify(path: Path, mask: int) -> int | None:
    """A non-blocking inotify descriptor watching `path` for `mask`; None when there is none."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, AttributeError):
        return None
    if fd < 0:
        return None
    if libc.inotify_add_watch(fd, os.fsencode(path), ctypes.c_uint32(mask)) < 0:
        os.close(fd)
        return None
    return fd
