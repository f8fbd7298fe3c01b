"""Kubernetes channel protocols over WebSocket: each message is one channel's data.

Binary protocols (`channel.k8s.io`, `v4.channel.k8s.io`, `v5.channel.k8s.io`, and no subprotocol
at all) start each message with the channel byte; base64 protocols (`base64.channel.k8s.io`,
`v4.base64.channel.k8s.io`) send text messages that start with the channel as an ASCII digit
('0' + n) followed by the base64 data. `v5.channel.k8s.io` adds a CLOSE signal from the client:
the message [255, n] half-closes channel n (stdin EOF). The server never sends it (client-go
would log it as an unknown stream).

For remote commands the channels are 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize; for
port-forward, 2i data and 2i+1 error of the i-th port.
"""
from __future__ import annotations

import base64
import binascii
import threading
import time

import structlog

from pycri.streaming.websocket import CloseCode, WebSocketConnection

log = structlog.get_logger("pycri.streaming")

CLOSE_SIGNAL = 255
BASE64_PROTOCOLS = frozenset({"base64.channel.k8s.io", "v4.base64.channel.k8s.io"})
CLOSE_SIGNAL_PROTOCOLS = frozenset({"v5.channel.k8s.io"})


class ChannelReader:
    """What the client sends on one channel, as a blocking byte stream (b"" at end)."""

    def __init__(self, cond: threading.Condition, cap: int) -> None:
        self._cond = cond
        self._cap = cap
        self._buffer = bytearray()
        self.closed = False

    def read(self, n: int = -1, timeout: float | None = None) -> bytes:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._buffer and not self.closed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError("no data on channel")
                self._cond.wait(remaining)
            take = len(self._buffer) if n < 0 else min(n, len(self._buffer))
            data = bytes(self._buffer[:take])
            del self._buffer[:take]
            self._cond.notify_all()
            return data

    read1 = read

    def discard(self) -> None:
        """Nobody reads this channel any more: drop what is buffered and what comes later (so a
        client that goes on sending cannot stall the connection)."""
        with self._cond:
            self._buffer.clear()
            self._close()

    def _feed(self, data: bytes) -> None:  # holds the lock
        while len(self._buffer) >= self._cap and not self.closed:
            self._cond.wait()
        if not self.closed:
            self._buffer += data
            self._cond.notify_all()

    def _close(self) -> None:  # holds the lock
        self.closed = True
        self._cond.notify_all()


class ChannelWriter:
    """One channel towards the client. `close` only stops further writes (nothing is sent)."""

    def __init__(self, conn: ChannelConnection, channel: int) -> None:
        self._conn = conn
        self.channel = channel
        self.closed = False

    def write(self, data: bytes) -> int:
        if self.closed:
            raise BrokenPipeError(f"channel {self.channel} is closed")
        self._conn.send(self.channel, bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class ChannelDuplex:
    """A read/write channel (port-forward data): reads from the client, writes to it."""

    def __init__(self, reader: ChannelReader, writer: ChannelWriter) -> None:
        self._reader = reader
        self._writer = writer

    def read(self, n: int = -1, timeout: float | None = None) -> bytes:
        return self._reader.read(n, timeout)

    read1 = read

    def write(self, data: bytes) -> int:
        return self._writer.write(data)

    def close(self) -> None:
        self._writer.close()


class ChannelConnection:
    """Demultiplexes a WebSocket into channel readers and multiplexes channel writers onto it."""

    def __init__(self, ws: WebSocketConnection, protocol: str, readable: set[int], channels: int,
                 max_buffer: int = 4 * 1024 * 1024) -> None:
        self.ws = ws
        self.protocol = protocol
        self._base64 = protocol in BASE64_PROTOCOLS
        self._close_signal = protocol in CLOSE_SIGNAL_PROTOCOLS
        self._channels = channels
        self._cond = threading.Condition()
        self.readers = {ch: ChannelReader(self._cond, max_buffer) for ch in readable}
        self.closed = threading.Event()
        self.last_activity = time.monotonic()
        self._thread = threading.Thread(target=self._read_loop, name="ws-channels", daemon=True)

    def start(self) -> ChannelConnection:
        self._thread.start()
        return self

    def writer(self, channel: int) -> ChannelWriter:
        return ChannelWriter(self, channel)

    def send(self, channel: int, data: bytes) -> None:
        """One message on `channel` (BrokenPipeError once the connection is closing)."""
        if self.closed.is_set():
            raise BrokenPipeError("WebSocket connection closed")
        self.last_activity = time.monotonic()
        if self._base64:
            self.ws.send_text(chr(ord("0") + channel) + base64.b64encode(data).decode("ascii"))
        else:
            self.ws.send_binary(bytes([channel]) + data)

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """The closing handshake. Readers see EOF first and what they did not read is dropped, so
        the reading thread is free to see the peer's Close."""
        self._end()
        self.ws.close(code, reason)
        self._thread.join(self.ws.linger)

    def abort(self) -> None:
        self.ws.transport.close()

    def _end(self) -> None:
        with self._cond:
            self.closed.set()
            for reader in self.readers.values():
                reader._close()

    def _read_loop(self) -> None:
        try:
            while (message := self.ws.recv_message()) is not None:
                self.last_activity = time.monotonic()
                if not self._dispatch(message.data):
                    self.ws.fail(CloseCode.PROTOCOL_ERROR, "bad channel message")
                    break
        except Exception:  # a bug must not leave the session hanging
            log.exception("websocket channel reader failed")
            self.ws.fail(CloseCode.INTERNAL_ERROR, "internal error")
        finally:
            self._end()

    def _dispatch(self, data: bytes) -> bool:
        """Route one message; False for a fault that ends the connection."""
        if not data:
            return True
        if self._close_signal and data[0] == CLOSE_SIGNAL:
            return self._close_channel(data)
        if self._base64:
            channel = data[0] - ord("0")
            try:
                payload = base64.b64decode(data[1:], validate=True)
            except (binascii.Error, ValueError):
                log.info("websocket: bad base64 in a channel message")
                return True
        else:
            channel, payload = data[0], data[1:]
        with self._cond:
            reader = self.readers.get(channel)
            if reader is not None and payload:
                reader._feed(payload)
        return True

    def _close_channel(self, data: bytes) -> bool:
        """The v5 CLOSE signal [255, channel]; kubelet (wsstream) ends the connection when it is
        not two bytes long or names no channel."""
        if len(data) != 2 or data[1] >= self._channels:
            return False
        with self._cond:
            reader = self.readers.get(data[1])
            if reader is not None:
                reader._close()
        return True
