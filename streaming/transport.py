"""Byte transports the protocol layers run over: a socket (with the bytes an HTTP parser already
read past the request head), or anything else with the same four methods (the WebSocket byte
stream that tunnels SPDY, in `websocket.py`)."""
from __future__ import annotations

import socket
import threading
from typing import Protocol


class Transport(Protocol):
    """A reliable, ordered byte stream in both directions."""

    def recv(self, n: int) -> bytes:
        """Up to n bytes, blocking until at least one; b"" at end of stream. OSError when broken."""
        ...

    def sendall(self, data: bytes) -> None:
        """All of data, or OSError."""
        ...

    def shutdown_write(self) -> None:
        """No more sends (the peer reads end of stream); receiving goes on."""
        ...

    def close(self) -> None:
        """Release it; a blocked recv returns or raises."""
        ...


class SocketTransport:
    """A connected socket; `preread` is what was read from it beyond the HTTP request head."""

    def __init__(self, sock: socket.socket, preread: bytes = b"") -> None:
        self.sock = sock
        self._preread = bytearray(preread)
        self._lock = threading.Lock()
        self._closed = False

    def recv(self, n: int) -> bytes:
        if self._preread:
            with self._lock:
                data = bytes(self._preread[:n])
                del self._preread[:n]
            if data:
                return data
        return self.sock.recv(n)

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)

    def shutdown_write(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
