"""Messages between the runtime process and the children it forks: JSON lines over pipes.

A child reports `{"type": "pid", "pid": N}` (the container process's host pid),
`{"type": "ready"}` (set-up done, about to wait for `start` or to exec), or
`{"type": "error", "message": "..."}`; the parent says `{"type": "go"}` once it has put
the child in its cgroups. End of file means every writer is gone.
"""
from __future__ import annotations

import os
import select
import time

from pycri.runtime import jsonlite


class ChannelClosed(Exception):
    pass


class Channel:
    """One direction of a pipe, used from one process."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buffer = b""

    def send(self, kind: str, **data: object) -> None:
        payload = (jsonlite.dumps({"type": kind, **data}) + "\n").encode()
        while payload:
            written = os.write(self.fd, payload)
            payload = payload[written:]

    def receive(self, timeout: float | None = None) -> dict[str, object]:
        """The next message; ChannelClosed at end of file, TimeoutError after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._buffer:
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("no message from the container process")
                poller = select.poll()  # not select.select: it fails on fds past 1023
                poller.register(self.fd, select.POLLIN)
                if not poller.poll(max(1, int(remaining * 1000 + 0.999))):
                    continue
            chunk = os.read(self.fd, 65536)
            if not chunk:
                raise ChannelClosed()
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        message = jsonlite.loads(line)
        if not isinstance(message, dict):
            raise ValueError(f"bad message {line!r}")
        return message

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def channel_pair() -> tuple[Channel, Channel]:
    """(reader, writer) of a new close-on-exec pipe."""
    read_fd, write_fd = os.pipe()
    return Channel(read_fd), Channel(write_fd)
