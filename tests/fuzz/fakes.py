"""What the fuzzers share: a scripted byte transport (hands out given chunks, then end of stream)
and `mutate`, which overwrites bytes of valid input at drawn positions."""
from __future__ import annotations

import threading


class ScriptedTransport:
    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = list(chunks)
        self._lock = threading.Lock()
        self.sent = bytearray()
        self.closed = False
        self.write_shut = False

    def recv(self, n: int) -> bytes:
        with self._lock:
            if self.closed or not self._chunks:
                return b""
            chunk = self._chunks.pop(0)
            if len(chunk) > n:
                self._chunks.insert(0, chunk[n:])
                chunk = chunk[:n]
            return chunk

    def sendall(self, data: bytes) -> None:
        if self.closed or self.write_shut:
            raise BrokenPipeError("closed")
        self.sent += data

    def shutdown_write(self) -> None:
        self.write_shut = True

    def close(self) -> None:
        self.closed = True


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """`data` cut at the given offsets (modulo its length): how a transport may hand it out."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:]) if b > a]


def mutate(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for position, value in edits:
        if out:
            out[position % len(out)] = value
    return bytes(out)
