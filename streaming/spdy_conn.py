"""A SPDY/3.1 connection over a byte transport: streams, flow control, PING, GOAWAY, errors.

`SpdyConnection` runs two daemon threads: a reader (frames in, dispatched under one lock) and a
writer (frames out, in queue order, so header blocks are compressed in wire order). Both roles
are here: a server accepts streams the peer opens (`on_stream` decides, then SYN_REPLY or
RST_STREAM REFUSED_STREAM); a client opens them with `create_stream`. `SpdyStream` is a
file-like duplex: `read` (b"" at the peer's FIN), `write`, `close` (our FIN: half-close),
`reset` (RST_STREAM).

Errors, never a hang: a session error (see `spdy.FrameDecoder`) sends GOAWAY with its status,
flushes, half-closes the transport, drains what the peer still sends for up to `linger` seconds
and closes. A stream error sends RST_STREAM: DATA for a stream never opened gets INVALID_STREAM,
DATA after the peer's FIN gets STREAM_ALREADY_CLOSED, a SYN_STREAM whose id is not the peer's
parity or repeats the last one gets PROTOCOL_ERROR (one whose id goes down is a session error,
draft 2.3.2), a WINDOW_UPDATE of 0 gets PROTOCOL_ERROR (on stream 0: GOAWAY), one that takes a
window past 2^31-1 gets FLOW_CONTROL_ERROR (on stream 0: GOAWAY). Unknown control frames are
ignored, as the draft says.

Flow control (SPDY/3.1 has a window per stream and one for the session, both 64 KiB at the
start). We always account both directions and grant the peer window (WINDOW_UPDATE for the
stream and for stream 0) as the application reads, so a peer that honours windows gets real
back-pressure. The Go client, github.com/moby/spdystream (kubectl, crictl, critest, client-go),
implements no flow control at all: it never sends WINDOW_UPDATE, ignores ours, and sends
without regard to our window. Hence `FlowControl.AUTO` (the default): our sends honour the
peer's windows only once the peer has shown it does flow control (sent a WINDOW_UPDATE or a
SETTINGS INITIAL_WINDOW_SIZE); `STRICT` honours them from the start; `OFF` never. A peer that
overruns our window is tolerated unless `strict_receive` (then RST FLOW_CONTROL_ERROR); instead a
stream buffers at most `max_buffer` bytes and the reader waits for the application past that,
which pushes back on the transport.

A server sends nothing before the peer's first frame: the Go client reads the HTTP 101 through
a buffered reader it then drops, so bytes sent right after the 101 can be lost.
"""
from __future__ import annotations

import enum
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from pycri.streaming import spdy
from pycri.streaming.spdy import (
    BadFrame, DataFrame, Frame, GoAway, GoAwayStatus, Headers, HeadersFrame, Ping, RstStatus,
    RstStream, SessionError, Settings, SettingId, SynReply, SynStream, UnknownControl, WindowUpdate,
)
from pycri.streaming.transport import Transport

log = structlog.get_logger("pycri.streaming")

DATA_CHUNK = 32 * 1024
RECV_SIZE = 64 * 1024
RECENTLY_FINISHED = 1024


class FlowControl(enum.Enum):
    """When our sends wait for the peer's windows (see the module docstring)."""

    OFF = "off"
    AUTO = "auto"
    STRICT = "strict"


class StreamReset(ConnectionResetError):
    """The stream was reset (by the peer, by us, or because the connection ended)."""


@dataclass
class _Out:
    frame: Frame
    done: threading.Event | None = None
    error: BaseException | None = None


_SHUTDOWN = object()  # writer: flush, half-close the transport, stop


class SpdyStream:
    """One SPDY stream, a file-like duplex. Reads are thread-safe; use one writer thread."""

    def __init__(self, conn: SpdyConnection, stream_id: int, headers: Headers, send_window: int) -> None:
        self.id = stream_id
        self.headers = headers
        self._conn = conn
        self._cond = conn._cond
        self._buffer = bytearray()
        self._replied = threading.Event()  # set at the SYN_REPLY, and to wake waiters at a reset or the end
        self.reply_received = False  # a stream we opened: the peer's SYN_REPLY came
        self.remote_closed = False
        self.local_closed = False
        self.reset_status: int | None = None
        self.discarding = False
        self.send_window = send_window
        self.recv_window = spdy.DEFAULT_INITIAL_WINDOW
        self._unacked = 0

    def __repr__(self) -> str:
        return f"<SpdyStream {self.id} {self.header('streamtype')}>"

    def header(self, name: str) -> str | None:
        return spdy.header_value(self.headers, name)

    @property
    def is_reset(self) -> bool:
        return self.reset_status is not None

    # -- reading ---------------------------------------------------------------------------

    def read(self, n: int = -1, timeout: float | None = None) -> bytes:
        """Up to n bytes (n < 0: all buffered), blocking for at least one; b"" at end of stream."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._buffer and not self._at_eof():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"no data on stream {self.id}")
                self._cond.wait(remaining)
            if not self._buffer:
                return b""
            take = len(self._buffer) if n < 0 else min(n, len(self._buffer))
            data = bytes(self._buffer[:take])
            del self._buffer[:take]
            self._consumed(take)
            self._cond.notify_all()
        return data

    read1 = read

    def readall(self, timeout: float | None = None) -> bytes:
        """Everything up to the end of the stream."""
        chunks = []
        while chunk := self.read(-1, timeout):
            chunks.append(chunk)
        return b"".join(chunks)

    def discard(self) -> None:
        """Drop what the peer sends on this stream from now on (granting window as if read)."""
        with self._cond:
            self.discarding = True
            self._consumed(len(self._buffer))
            self._buffer.clear()
            self._cond.notify_all()

    def _at_eof(self) -> bool:
        return self.remote_closed or self.is_reset or self._conn.is_closed

    def _consumed(self, n: int) -> None:
        """Credit n read bytes to the stream and session windows (caller holds the lock)."""
        if n <= 0:
            return
        self._unacked += n
        threshold = spdy.DEFAULT_INITIAL_WINDOW // 2
        if self._unacked >= threshold and not self.remote_closed and not self.is_reset:
            self._conn._enqueue(WindowUpdate(self.id, self._unacked))
            self.recv_window += self._unacked
            self._unacked = 0
        self._conn._session_consumed(n)

    # -- writing ---------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Send all of data as DATA frames; BrokenPipeError after close, StreamReset after reset."""
        view = memoryview(bytes(data))
        self._wait_replied()
        sent = 0
        while sent < len(view):
            with self._cond:
                n = self._wait_window(len(view) - sent)
                self.send_window -= n
                self._conn._session_send_window -= n
            self._conn._enqueue(DataFrame(self.id, bytes(view[sent:sent + n])), wait=True)
            sent += n
        return sent

    def _wait_window(self, want: int) -> int:
        while True:
            self._check_writable()
            if not self._conn._enforce_send:
                return min(want, DATA_CHUNK)
            room = min(self.send_window, self._conn._session_send_window)
            if room > 0:
                return min(want, DATA_CHUNK, room)
            self._cond.wait()

    def _check_writable(self) -> None:
        if self.is_reset:
            raise StreamReset(f"stream {self.id} was reset ({self.reset_status})")
        if self.local_closed:
            raise BrokenPipeError(f"stream {self.id} is closed for writing")
        if self._conn.is_closed:
            raise BrokenPipeError("SPDY connection closed")

    def _wait_replied(self) -> None:
        self._replied.wait()
        with self._cond:
            self._check_writable()

    def flush(self) -> None:
        """Writes are sent before write returns; nothing to do."""

    def close(self) -> None:
        """Half-close: send FIN. Idempotent; errors (reset, closed connection) are swallowed."""
        self._replied.wait()
        with self._cond:
            if self.local_closed or self.is_reset or self._conn.is_closed:
                return
            self.local_closed = True
            self._conn._forget_if_done(self)
        try:
            self._conn._enqueue(DataFrame(self.id, b"", spdy.FLAG_FIN), wait=True)
        except OSError:
            pass

    def reset(self, status: int = RstStatus.CANCEL) -> None:
        """RST_STREAM: both directions end now."""
        with self._cond:
            if self.is_reset or (self.local_closed and self.remote_closed) or self._conn.is_closed:
                return
            self._conn._reset_locked(self, status, send=True)

    def wait_remote_closed(self, timeout: float | None = None) -> bool:
        """Wait for the peer's FIN (or a reset); True if it came."""
        with self._cond:
            return self._cond.wait_for(self._at_eof, timeout)


@dataclass
class _PingWait:
    event: threading.Event = field(default_factory=threading.Event)
    sent: float = 0.0


class SpdyConnection:
    """A SPDY/3.1 session over `transport` (see the module docstring for behaviour)."""

    def __init__(self, transport: Transport, *, server: bool,
                 on_stream: Callable[[SpdyStream], bool] | None = None,
                 flow_control: FlowControl = FlowControl.AUTO, strict_receive: bool = False,
                 max_buffer: int = 4 * 1024 * 1024, max_streams: int = 1000,
                 max_header_block: int = 256 * 1024, max_frame_length: int = spdy.MAX_FRAME_LENGTH,
                 linger: float = 2.0, name: str = "spdy") -> None:
        self._transport = transport
        self._server = server
        self._on_stream = on_stream
        self._flow_control = flow_control
        self._enforce_send = flow_control is FlowControl.STRICT
        self._strict_receive = strict_receive
        self._max_buffer = max_buffer
        self._max_streams = max_streams
        self._linger = linger
        self.name = name
        self._decoder = spdy.FrameDecoder(max_frame_length=max_frame_length, max_header_block=max_header_block)
        self._encoder = spdy.FrameEncoder()
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._streams: dict[int, SpdyStream] = {}
        self._recently_finished: OrderedDict[int, None] = OrderedDict()
        self._last_peer_id = 0
        self._next_id = 2 if server else 1
        self._next_ping = 2 if server else 1
        self._pings: dict[int, _PingWait] = {}
        self._peer_initial_window = spdy.DEFAULT_INITIAL_WINDOW
        self._session_send_window = spdy.DEFAULT_INITIAL_WINDOW
        self._session_recv_window = spdy.DEFAULT_INITIAL_WINDOW
        self._session_unacked = 0
        self._create_lock = threading.Lock()
        self._out: queue.SimpleQueue[_Out | object] = queue.SimpleQueue()
        self._out_lock = threading.Lock()
        self._writer_done = False
        self._goaway_sent = False
        self._closing = False
        self.goaway_received = threading.Event()
        self.closed = threading.Event()
        self.error: str | None = None
        self.last_activity = time.monotonic()
        self._reader = threading.Thread(target=self._read_loop, name=f"{name}-read", daemon=True)
        self._writer = threading.Thread(target=self._write_loop, name=f"{name}-write", daemon=True)

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> SpdyConnection:
        self._writer.start()
        self._reader.start()
        return self

    @property
    def is_closed(self) -> bool:
        return self.closed.is_set()

    def wait_closed(self, timeout: float | None = None) -> bool:
        return self.closed.wait(timeout)

    def go_away(self, status: int = GoAwayStatus.OK) -> None:
        """Send GOAWAY (once): no new streams; the ones open go on."""
        with self._cond:
            if self._goaway_sent:
                return
            self._goaway_sent = True
            last = self._last_peer_id
        self._enqueue(GoAway(last, status))

    def close(self, status: int = GoAwayStatus.OK) -> None:
        """GOAWAY, flush, half-close; wait up to `linger` s for the peer to close, then close."""
        with self._cond:
            already, self._closing = self._closing, True
            self._cond.notify_all()  # a reader waiting for buffer room stops waiting
        if not already:
            self.go_away(status)
            self._stop_writer()
        if threading.current_thread() is not self._reader:
            if not self.closed.wait(self._linger):
                self._transport.close()
                self.closed.wait(self._linger)

    def abort(self) -> None:
        """Close the transport now, without GOAWAY."""
        self._transport.close()

    def ping(self, timeout: float = 10.0) -> float:
        """Round-trip time of a PING; TimeoutError if no answer."""
        with self._cond:
            ping_id = self._next_ping
            self._next_ping += 2
            wait = self._pings[ping_id] = _PingWait(sent=time.monotonic())
        self._enqueue(Ping(ping_id))
        wait.event.wait(timeout)
        with self._cond:
            unanswered = self._pings.pop(ping_id, None) is not None
        if unanswered:
            raise TimeoutError("no PING reply")
        return time.monotonic() - wait.sent

    # -- client side -----------------------------------------------------------------------

    def create_stream(self, headers: Headers, *, fin: bool = False, timeout: float = 30.0) -> SpdyStream:
        """Open a stream (SYN_STREAM) and wait for the peer's SYN_REPLY."""
        with self._create_lock:
            with self._cond:
                if self.is_closed or self._closing or self.goaway_received.is_set():
                    raise BrokenPipeError("SPDY connection is going away")
                stream_id = self._next_id
                self._next_id += 2
                stream = SpdyStream(self, stream_id, headers, self._peer_initial_window)
                stream.local_closed = fin
                self._streams[stream_id] = stream
            self._enqueue(SynStream(stream_id, headers, flags=spdy.FLAG_FIN if fin else 0))
        if not stream._replied.wait(timeout):
            stream.reset()
            raise TimeoutError(f"no SYN_REPLY for stream {stream_id}")
        with self._cond:  # the connection may have ended since the SYN_REPLY: the stream holds what came
            if stream.is_reset:
                raise StreamReset(f"stream {stream_id} refused ({stream.reset_status})")
            if not stream.reply_received:
                raise BrokenPipeError("SPDY connection closed before the SYN_REPLY")
        return stream

    # -- writer ----------------------------------------------------------------------------

    def _enqueue(self, frame: Frame, wait: bool = False) -> None:
        item = _Out(frame, threading.Event() if wait else None)
        with self._out_lock:
            if self._writer_done:
                if wait:
                    raise BrokenPipeError("SPDY connection closed")
                return
            self._out.put(item)
        if item.done is not None:
            item.done.wait()
            if item.error is not None:
                raise BrokenPipeError(f"SPDY connection closed: {item.error}")

    def _stop_writer(self) -> None:
        with self._out_lock:
            if not self._writer_done:
                self._out.put(_SHUTDOWN)

    def _write_loop(self) -> None:
        error: BaseException | None = None
        try:
            while True:
                item = self._out.get()
                batch: list[_Out] = []
                stop = item is _SHUTDOWN
                if not stop:
                    batch.append(item)  # type: ignore[arg-type]
                    while len(batch) < 64:
                        try:
                            more = self._out.get_nowait()
                        except queue.Empty:
                            break
                        if more is _SHUTDOWN:
                            stop = True
                            break
                        batch.append(more)  # type: ignore[arg-type]
                try:
                    if batch:
                        self._transport.sendall(b"".join(self._encoder.encode(out.frame) for out in batch))
                        self.last_activity = time.monotonic()
                except OSError as exc:
                    error = exc
                for out in batch:
                    out.error = error
                    if out.done is not None:
                        out.done.set()
                if error is not None:
                    break
                if stop:
                    self._transport.shutdown_write()
                    error = BrokenPipeError("connection shut down")
                    break
        finally:
            with self._out_lock:
                self._writer_done = True
            while True:
                try:
                    leftover = self._out.get_nowait()
                except queue.Empty:
                    break
                if isinstance(leftover, _Out):
                    leftover.error = error or BrokenPipeError("connection closed")
                    if leftover.done is not None:
                        leftover.done.set()

    # -- reader ----------------------------------------------------------------------------

    def _read_loop(self) -> None:
        try:
            while True:
                try:
                    data = self._transport.recv(RECV_SIZE)
                except OSError as exc:  # not the peer's close: say so, the streams end short
                    if not self._closing:
                        log.info("SPDY connection lost", connection=self.name, error=str(exc),
                                 streams=len(self._streams))
                    break
                if not data:
                    if self._decoder.pending and not self._closing:
                        raise SessionError("connection closed inside a frame")
                    break
                self.last_activity = time.monotonic()
                if self._closing:
                    continue  # draining after GOAWAY: the peer may still be sending
                self._decoder.feed(data)
                while (frame := self._decoder.next_frame()) is not None:
                    self._dispatch(frame)
        except SessionError as exc:
            self._session_error(exc)
        except Exception as exc:  # a bug must not leave the peer hanging
            log.exception("SPDY connection internal error", connection=self.name)
            self._session_error(SessionError(f"internal error: {exc}", GoAwayStatus.INTERNAL_ERROR))
        finally:
            self._finish()

    def _session_error(self, exc: SessionError) -> None:
        log.info("SPDY protocol error", connection=self.name, error=str(exc))
        self.error = str(exc)
        with self._cond:
            self._closing = True
        self.go_away(exc.status)
        self._stop_writer()
        self._writer.join(self._linger)
        timer = threading.Timer(self._linger, self._transport.close)
        timer.daemon = True
        timer.start()
        try:  # drain until the peer closes, so our GOAWAY is not lost to a TCP reset
            while self._transport.recv(RECV_SIZE):
                pass
        except OSError:
            pass
        timer.cancel()

    def _finish(self) -> None:
        with self._cond:
            self.closed.set()
            for stream in self._streams.values():
                stream._replied.set()
            for wait in self._pings.values():
                wait.event.set()
            self._cond.notify_all()
        self._stop_writer()
        self._writer.join(self._linger)
        self._transport.close()

    def _dispatch(self, frame: Frame) -> None:
        with self._cond:
            handler = _HANDLERS.get(type(frame))
            if handler is not None:
                handler(self, frame)

    # -- frame handlers (hold the lock) ----------------------------------------------------

    def _peer_parity(self, stream_id: int) -> bool:
        return stream_id % 2 == (1 if self._server else 0)

    def _on_syn_stream(self, frame: SynStream) -> None:
        sid = frame.stream_id
        if sid < self._last_peer_id:  # draft 2.3.2: a session error
            raise SessionError(f"SYN_STREAM {sid} after SYN_STREAM {self._last_peer_id}")
        if not self._peer_parity(sid) or sid == self._last_peer_id:  # not the peer's, or a second one
            self._rst(sid, RstStatus.PROTOCOL_ERROR)
            return
        self._last_peer_id = sid
        if self._goaway_sent or self._closing or len(self._streams) >= self._max_streams \
                or self._on_stream is None:
            self._rst(sid, RstStatus.REFUSED_STREAM)
            return
        stream = SpdyStream(self, sid, frame.headers, self._peer_initial_window)
        stream.remote_closed = frame.fin
        stream.local_closed = bool(frame.flags & spdy.FLAG_UNIDIRECTIONAL)
        self._streams[sid] = stream
        try:
            accepted = self._on_stream(stream)
        except Exception:
            log.exception("SPDY stream handler failed", connection=self.name)
            accepted = False
        if not accepted:
            del self._streams[sid]
            self._rst(sid, RstStatus.REFUSED_STREAM)
            return
        self._enqueue(SynReply(sid, []))
        stream._replied.set()
        self._forget_if_done(stream)

    def _on_syn_reply(self, frame: SynReply) -> None:
        stream = self._streams.get(frame.stream_id)
        if stream is None or self._peer_parity(frame.stream_id):
            self._unknown_stream(frame.stream_id)
            return
        if stream.reply_received:
            self._reset_locked(stream, RstStatus.STREAM_IN_USE, send=True)
            return
        stream.reply_received = True
        stream._replied.set()
        if frame.fin:
            self._remote_fin(stream)
        self._cond.notify_all()

    def _on_headers(self, frame: HeadersFrame) -> None:
        stream = self._streams.get(frame.stream_id)
        if stream is None:
            self._unknown_stream(frame.stream_id)
        elif stream.remote_closed:
            self._reset_locked(stream, RstStatus.STREAM_ALREADY_CLOSED, send=True)
        elif frame.fin:
            self._remote_fin(stream)

    def _on_data(self, frame: DataFrame) -> None:
        size = len(frame.data)
        self._session_recv_window -= size
        stream = self._streams.get(frame.stream_id)
        if stream is None:
            self._session_consumed(size)
            self._unknown_stream(frame.stream_id)
            return
        if stream.remote_closed:
            self._session_consumed(size)
            self._reset_locked(stream, RstStatus.STREAM_ALREADY_CLOSED, send=True)
            return
        if not self._peer_parity(stream.id) and not stream.reply_received:
            self._session_consumed(size)
            self._reset_locked(stream, RstStatus.PROTOCOL_ERROR, send=True)
            return
        stream.recv_window -= size
        if self._strict_receive and (stream.recv_window < 0 or self._session_recv_window < 0):
            self._session_consumed(size)
            self._reset_locked(stream, RstStatus.FLOW_CONTROL_ERROR, send=True)
            return
        if stream.discarding:
            stream._consumed(size)
        elif size:
            while len(stream._buffer) >= self._max_buffer and not stream.is_reset and not self._closing \
                    and not stream.discarding:
                self._cond.wait(1.0)
            if stream.is_reset or self._closing:
                self._session_consumed(size)
            elif stream.discarding:
                stream._consumed(size)
            else:
                stream._buffer += frame.data
        if frame.fin:
            self._remote_fin(stream)
        self._cond.notify_all()

    def _on_rst(self, frame: RstStream) -> None:
        stream = self._streams.get(frame.stream_id)
        if stream is not None:
            self._reset_locked(stream, frame.status, send=False)

    def _on_settings(self, frame: Settings) -> None:
        value = frame.value(SettingId.INITIAL_WINDOW_SIZE)
        if value is None:
            return
        if value > spdy.MAX_WINDOW:
            raise SessionError(f"INITIAL_WINDOW_SIZE {value} is past 2^31-1")
        delta = value - self._peer_initial_window
        self._peer_initial_window = value
        self._peer_does_flow_control()
        for stream in list(self._streams.values()):
            stream.send_window += delta
            if stream.send_window > spdy.MAX_WINDOW:
                self._reset_locked(stream, RstStatus.FLOW_CONTROL_ERROR, send=True)
        self._cond.notify_all()

    def _on_ping(self, frame: Ping) -> None:
        if self._peer_parity(frame.ping_id) or frame.ping_id == 0:
            self._enqueue(Ping(frame.ping_id))
            return
        wait = self._pings.pop(frame.ping_id, None)
        if wait is not None:
            wait.event.set()

    def _on_goaway(self, frame: GoAway) -> None:
        self.goaway_received.set()
        for stream in list(self._streams.values()):
            if not self._peer_parity(stream.id) and stream.id > frame.last_good_stream_id:
                self._reset_locked(stream, RstStatus.REFUSED_STREAM, send=False)
        self._cond.notify_all()

    def _on_window_update(self, frame: WindowUpdate) -> None:
        if frame.stream_id == 0:
            if frame.delta == 0:
                raise SessionError("session WINDOW_UPDATE of 0")
            self._session_send_window += frame.delta
            if self._session_send_window > spdy.MAX_WINDOW:
                raise SessionError("session window past 2^31-1")
            self._peer_does_flow_control()
            self._cond.notify_all()
            return
        stream = self._streams.get(frame.stream_id)
        if stream is None:
            if self._never_opened(frame.stream_id):
                self._rst(frame.stream_id, RstStatus.INVALID_STREAM)
            return
        if frame.delta == 0:
            self._reset_locked(stream, RstStatus.PROTOCOL_ERROR, send=True)
            return
        stream.send_window += frame.delta
        if stream.send_window > spdy.MAX_WINDOW:
            self._reset_locked(stream, RstStatus.FLOW_CONTROL_ERROR, send=True)
            return
        self._peer_does_flow_control()
        self._cond.notify_all()

    def _on_bad_frame(self, frame: BadFrame) -> None:
        log.info("bad SPDY frame", connection=self.name, stream_id=frame.stream_id, reason=frame.reason)
        if frame.frame_type == spdy.SYN_STREAM and self._peer_parity(frame.stream_id) \
                and frame.stream_id > self._last_peer_id:
            self._last_peer_id = frame.stream_id
        stream = self._streams.get(frame.stream_id)
        if stream is not None:
            self._reset_locked(stream, frame.status, send=True)
        else:
            self._rst(frame.stream_id, frame.status)

    def _on_unknown(self, frame: UnknownControl) -> None:
        log.debug("ignoring SPDY control frame", connection=self.name, frame_type=frame.frame_type)

    # -- helpers (hold the lock) -----------------------------------------------------------

    def _peer_does_flow_control(self) -> None:
        if self._flow_control is FlowControl.AUTO:
            self._enforce_send = True

    def _never_opened(self, stream_id: int) -> bool:
        if self._peer_parity(stream_id):
            return stream_id > self._last_peer_id
        return stream_id >= self._next_id

    def _unknown_stream(self, stream_id: int) -> None:
        """A frame for a stream not open: never opened, finished, or reset (then ignored)."""
        if self._never_opened(stream_id):
            self._rst(stream_id, RstStatus.INVALID_STREAM)
        elif stream_id in self._recently_finished:
            self._rst(stream_id, RstStatus.STREAM_ALREADY_CLOSED)

    def _rst(self, stream_id: int, status: int) -> None:
        self._enqueue(RstStream(stream_id, status))

    def _remote_fin(self, stream: SpdyStream) -> None:
        stream.remote_closed = True
        self._forget_if_done(stream)
        self._cond.notify_all()

    def _reset_locked(self, stream: SpdyStream, status: int, send: bool) -> None:
        stream.reset_status = status
        stream.remote_closed = stream.local_closed = True
        stream._replied.set()
        self._session_consumed(len(stream._buffer))
        stream._buffer.clear()
        self._streams.pop(stream.id, None)
        self._recently_finished.pop(stream.id, None)
        if send:
            self._rst(stream.id, status)
        self._cond.notify_all()

    def _forget_if_done(self, stream: SpdyStream) -> None:
        if stream.local_closed and stream.remote_closed and not stream.is_reset:
            if self._streams.pop(stream.id, None) is not None:
                self._recently_finished[stream.id] = None
                while len(self._recently_finished) > RECENTLY_FINISHED:
                    self._recently_finished.popitem(last=False)

    def _session_consumed(self, n: int) -> None:
        if n <= 0:
            return
        self._session_unacked += n
        if self._session_unacked >= spdy.DEFAULT_INITIAL_WINDOW // 2:
            self._enqueue(WindowUpdate(0, self._session_unacked))
            self._session_recv_window += self._session_unacked
            self._session_unacked = 0


_HANDLERS: dict[type, Callable[[SpdyConnection, Frame], None]] = {  # type: ignore[dict-item]
    SynStream: SpdyConnection._on_syn_stream,
    SynReply: SpdyConnection._on_syn_reply,
    HeadersFrame: SpdyConnection._on_headers,
    DataFrame: SpdyConnection._on_data,
    RstStream: SpdyConnection._on_rst,
    Settings: SpdyConnection._on_settings,
    Ping: SpdyConnection._on_ping,
    GoAway: SpdyConnection._on_goaway,
    WindowUpdate: SpdyConnection._on_window_update,
    BadFrame: SpdyConnection._on_bad_frame,
    UnknownControl: SpdyConnection._on_unknown,
}
