"""SPDY/3.1 framing: frame types, their wire encoding and the zlib-compressed header blocks.

This module holds no sockets and no threads (those are in `spdy_conn.py`). It has:

- the frame dataclasses (`DataFrame`, `SynStream`, `SynReply`, `RstStream`, `Settings`, `Ping`,
  `GoAway`, `HeadersFrame`, `WindowUpdate`, `UnknownControl`);
- `FrameEncoder`, which turns frames into bytes; it owns the sending direction's header
  compression context (zlib with the SPDY/3 dictionary, one context for the whole connection,
  every header block ended with a sync flush, as the draft requires);
- `FrameDecoder`, a push parser (`feed` bytes, take frames with `next_frame`) that owns the
  receiving direction's decompression context and checks every frame: a fault that leaves the
  connection unusable (wrong version, a length that does not fit the frame type, a header block
  that does not inflate, a frame longer than allowed) raises `SessionError` (answer: GOAWAY and
  close); a fault confined to one stream (a malformed but inflatable header block) comes back as
  a `BadFrame` (answer: RST_STREAM), so the compression context stays in step. What a frame's
  8-byte head tells (version, a length wrong for the type or too long) is checked as soon as the
  head is in, so a bad length is refused at once rather than waited for.

Wire facts follow draft-mbelshe-httpbis-spdy-00 (SPDY/3) with the SPDY/3.1 additions (session
flow control: WINDOW_UPDATE on stream 0). The framing version field is 3 for SPDY/3.1 too.
"""
from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Union

VERSION = 3

# control frame types
SYN_STREAM = 1
SYN_REPLY = 2
RST_STREAM = 3
SETTINGS = 4
PING = 6
GOAWAY = 7
HEADERS = 8
WINDOW_UPDATE = 9

FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02  # SYN_STREAM only
FLAG_SETTINGS_CLEAR = 0x01  # SETTINGS only

MAX_STREAM_ID = 0x7FFFFFFF
MAX_WINDOW = 0x7FFFFFFF
DEFAULT_INITIAL_WINDOW = 64 * 1024
MAX_FRAME_LENGTH = 0xFFFFFF  # the 24-bit length field
DEFAULT_MAX_CONTROL_LENGTH = 1024 * 1024  # control frames are small; longer ones are refused unread
HEADER_LENGTH = 8


class RstStatus(IntEnum):
    """RST_STREAM status codes."""

    PROTOCOL_ERROR = 1
    INVALID_STREAM = 2
    REFUSED_STREAM = 3
    UNSUPPORTED_VERSION = 4
    CANCEL = 5
    INTERNAL_ERROR = 6
    FLOW_CONTROL_ERROR = 7
    STREAM_IN_USE = 8
    STREAM_ALREADY_CLOSED = 9
    INVALID_CREDENTIALS = 10
    FRAME_TOO_LARGE = 11


class GoAwayStatus(IntEnum):
    """GOAWAY status codes (SPDY/3 has three)."""

    OK = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2


class SettingId(IntEnum):
    """SETTINGS entry ids."""

    UPLOAD_BANDWIDTH = 1
    DOWNLOAD_BANDWIDTH = 2
    ROUND_TRIP_TIME = 3
    MAX_CONCURRENT_STREAMS = 4
    CURRENT_CWND = 5
    DOWNLOAD_RETRANS_RATE = 6
    INITIAL_WINDOW_SIZE = 7
    CLIENT_CERTIFICATE_VECTOR_SIZE = 8


# --- the SPDY/3 header compression dictionary (draft section 2.6.10.1) ----------------------
# The draft defines it as a run of length-prefixed words followed by a block of text.
_DICTIONARY_WORDS = (
    "options", "head", "post", "put", "delete", "trace", "accept", "accept-charset",
    "accept-encoding", "accept-language", "accept-ranges", "age", "allow", "authorization",
    "cache-control", "connection", "content-base", "content-encoding", "content-language",
    "content-length", "content-location", "content-md5", "content-range", "content-type", "date",
    "etag", "expect", "expires", "from", "host", "if-match", "if-modified-since", "if-none-match",
    "if-range", "if-unmodified-since", "last-modified", "location", "max-forwards", "pragma",
    "proxy-authenticate", "proxy-authorization", "range", "referer", "retry-after", "server", "te",
    "trailer", "transfer-encoding", "upgrade", "user-agent", "vary", "via", "warning",
    "www-authenticate", "method", "get", "status", "200 OK", "version", "HTTP/1.1", "url", "public",
    "set-cookie", "keep-alive", "origin",
)
_DICTIONARY_TEXT = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information" "204 No Content" "301 Moved Permanently" "400 Bad Request"
    "401 Unauthorized" "403 Forbidden" "404 Not Found" "500 Internal Server Error"
    "501 Not Implemented" "503 Service Unavailable"
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 "
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,"
    "text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdch"
    "charset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
DICTIONARY: bytes = b"".join(
    struct.pack(">I", len(word)) + word.encode("ascii") for word in _DICTIONARY_WORDS
) + _DICTIONARY_TEXT.encode("ascii")
DICTIONARY_ADLER32 = 0xE3C6A7C2  # the DICTID a peer's zlib stream carries

Headers = list[tuple[str, str]]
"""A name/value header block: lowercase names; a value holding several values joins them with NUL."""


def header_value(headers: Headers, name: str) -> str | None:
    """The value of `name` in a header block (names compare case-insensitively), or None."""
    name = name.lower()
    for key, value in headers:
        if key == name:
            return value
    return None


# --- frames ---------------------------------------------------------------------------------

class _Finishing:
    """Frames that can carry FLAG_FIN (the sender's last frame on the stream)."""

    flags: int

    @property
    def fin(self) -> bool:
        return bool(self.flags & FLAG_FIN)


@dataclass(frozen=True)
class DataFrame(_Finishing):
    stream_id: int
    data: bytes = b""
    flags: int = 0


@dataclass(frozen=True)
class SynStream(_Finishing):
    stream_id: int
    headers: Headers = field(default_factory=list)
    associated_id: int = 0
    priority: int = 0
    slot: int = 0
    flags: int = 0


@dataclass(frozen=True)
class SynReply(_Finishing):
    stream_id: int
    headers: Headers = field(default_factory=list)
    flags: int = 0


@dataclass(frozen=True)
class RstStream:
    stream_id: int
    status: int


@dataclass(frozen=True)
class Settings:
    entries: tuple[tuple[int, int, int], ...] = ()  # (flags, id, value)
    flags: int = 0

    def value(self, setting: int) -> int | None:
        for _, ident, value in self.entries:
            if ident == setting:
                return value
        return None


@dataclass(frozen=True)
class Ping:
    ping_id: int


@dataclass(frozen=True)
class GoAway:
    last_good_stream_id: int
    status: int = GoAwayStatus.OK


@dataclass(frozen=True)
class HeadersFrame(_Finishing):
    stream_id: int
    headers: Headers = field(default_factory=list)
    flags: int = 0


@dataclass(frozen=True)
class WindowUpdate:
    stream_id: int
    delta: int


@dataclass(frozen=True)
class UnknownControl:
    """A control frame of a type this implementation does not know; the draft says to ignore it."""

    frame_type: int
    flags: int
    payload: bytes


@dataclass(frozen=True)
class BadFrame:
    """A frame that parsed far enough to name its stream but is malformed: answer RST_STREAM."""

    stream_id: int
    status: int
    reason: str
    frame_type: int


Frame = Union[DataFrame, SynStream, SynReply, RstStream, Settings, Ping, GoAway, HeadersFrame,
              WindowUpdate, UnknownControl, BadFrame]


class SessionError(Exception):
    """A fault that ends the connection: answer GOAWAY with `status`, then close."""

    def __init__(self, message: str, status: int = GoAwayStatus.PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.status = status


# --- header blocks --------------------------------------------------------------------------

def pack_header_block(headers: Headers) -> bytes:
    """The uncompressed name/value block: 32-bit count, then 32-bit-length-prefixed names and values."""
    parts = [struct.pack(">I", len(headers))]
    for name, value in headers:
        raw_name, raw_value = name.lower().encode("utf-8"), value.encode("utf-8")
        parts += [struct.pack(">I", len(raw_name)), raw_name, struct.pack(">I", len(raw_value)), raw_value]
    return b"".join(parts)


def unpack_header_block(block: bytes) -> Headers:
    """Parse an uncompressed name/value block; ValueError says what is wrong with it."""
    if len(block) < 4:
        raise ValueError("header block shorter than its count")
    (count,) = struct.unpack_from(">I", block, 0)
    offset, headers, seen = 4, [], set()
    for _ in range(count):
        pair: list[str] = []
        for what in ("name", "value"):
            if offset + 4 > len(block):
                raise ValueError(f"header block ends inside a {what} length")
            (length,) = struct.unpack_from(">I", block, offset)
            offset += 4
            if offset + length > len(block):
                raise ValueError(f"header {what} runs past the end of the block")
            try:
                pair.append(block[offset:offset + length].decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise ValueError(f"header {what} is not UTF-8") from exc
            offset += length
        name, value = pair
        if not name:
            raise ValueError("empty header name")
        if name != name.lower():
            raise ValueError(f"header name {name!r} is not lowercase")
        if name in seen:
            raise ValueError(f"duplicate header name {name!r}")
        seen.add(name)
        headers.append((name, value))
    if offset != len(block):
        raise ValueError("trailing bytes after the header block")
    return headers


class HeaderCompressor:
    """One direction's compression context: every block ends with a sync flush."""

    def __init__(self, level: int = zlib.Z_DEFAULT_COMPRESSION) -> None:
        self._zlib = zlib.compressobj(level, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY, DICTIONARY)

    def compress(self, headers: Headers) -> bytes:
        return self._zlib.compress(pack_header_block(headers)) + self._zlib.flush(zlib.Z_SYNC_FLUSH)


class HeaderDecompressor:
    """One direction's decompression context, with a bound on the inflated size of a block."""

    def __init__(self, max_block: int = 256 * 1024) -> None:
        self._zlib = zlib.decompressobj(15, DICTIONARY)
        self._max_block = max_block

    def decompress(self, data: bytes) -> bytes:
        """Inflate one block; SessionError if it does not inflate or inflates too large."""
        if not data:
            raise SessionError("empty compressed header block")
        try:
            out = self._zlib.decompress(data, self._max_block + 1)
        except zlib.error as exc:
            raise SessionError(f"header block does not inflate: {exc}") from exc
        if len(out) > self._max_block or self._zlib.unconsumed_tail:
            raise SessionError(f"header block inflates past {self._max_block} bytes")
        if self._zlib.eof or self._zlib.unused_data:
            raise SessionError("header compression stream ended")
        return out


# --- encoding -------------------------------------------------------------------------------

def _control(frame_type: int, flags: int, payload: bytes) -> bytes:
    if len(payload) > MAX_FRAME_LENGTH:
        raise ValueError("control frame too long")
    return struct.pack(">HHI", 0x8000 | VERSION, frame_type, (flags << 24) | len(payload)) + payload


def _check_id(stream_id: int, allow_zero: bool = False) -> None:
    if not (0 if allow_zero else 1) <= stream_id <= MAX_STREAM_ID:
        raise ValueError(f"stream id {stream_id} out of range")


class FrameEncoder:
    """Frames to bytes, with the sending direction's header compression context.

    Encode frames in the order they go on the wire: the header blocks share one zlib stream.
    """

    def __init__(self) -> None:
        self._headers = HeaderCompressor()

    def encode(self, frame: Frame) -> bytes:
        if isinstance(frame, DataFrame):
            _check_id(frame.stream_id)
            if len(frame.data) > MAX_FRAME_LENGTH:
                raise ValueError("data frame too long")
            return struct.pack(">II", frame.stream_id, (frame.flags << 24) | len(frame.data)) + frame.data
        if isinstance(frame, SynStream):
            _check_id(frame.stream_id)
            _check_id(frame.associated_id, allow_zero=True)
            payload = struct.pack(">IIBB", frame.stream_id, frame.associated_id, (frame.priority & 7) << 5,
                                  frame.slot) + self._headers.compress(frame.headers)
            return _control(SYN_STREAM, frame.flags, payload)
        if isinstance(frame, SynReply):
            _check_id(frame.stream_id)
            return _control(SYN_REPLY, frame.flags,
                            struct.pack(">I", frame.stream_id) + self._headers.compress(frame.headers))
        if isinstance(frame, HeadersFrame):
            _check_id(frame.stream_id)
            return _control(HEADERS, frame.flags,
                            struct.pack(">I", frame.stream_id) + self._headers.compress(frame.headers))
        if isinstance(frame, RstStream):
            _check_id(frame.stream_id)
            return _control(RST_STREAM, 0, struct.pack(">II", frame.stream_id, frame.status))
        if isinstance(frame, Settings):
            payload = struct.pack(">I", len(frame.entries)) + b"".join(
                struct.pack(">II", (flags << 24) | ident, value) for flags, ident, value in frame.entries)
            return _control(SETTINGS, frame.flags, payload)
        if isinstance(frame, Ping):
            return _control(PING, 0, struct.pack(">I", frame.ping_id))
        if isinstance(frame, GoAway):
            _check_id(frame.last_good_stream_id, allow_zero=True)
            return _control(GOAWAY, 0, struct.pack(">II", frame.last_good_stream_id, frame.status))
        if isinstance(frame, WindowUpdate):
            _check_id(frame.stream_id, allow_zero=True)
            if not 1 <= frame.delta <= MAX_WINDOW:
                raise ValueError("window delta out of range")
            return _control(WINDOW_UPDATE, 0, struct.pack(">II", frame.stream_id, frame.delta))
        if isinstance(frame, UnknownControl):
            return _control(frame.frame_type, frame.flags, frame.payload)
        raise TypeError(f"cannot encode {type(frame).__name__}")


# --- decoding -------------------------------------------------------------------------------

_FIXED_LENGTH = {RST_STREAM: 8, PING: 4, GOAWAY: 8, WINDOW_UPDATE: 8}
_MIN_LENGTH = {SYN_STREAM: 10, SYN_REPLY: 4, HEADERS: 4, SETTINGS: 4}


class FrameDecoder:
    """Bytes to frames: `feed` what the transport gave, then take frames with `next_frame`.

    Holds the receiving direction's decompression context; every header block is inflated even
    when its frame is then refused, so later blocks still inflate.
    """

    def __init__(self, max_frame_length: int = MAX_FRAME_LENGTH, max_header_block: int = 256 * 1024,
                 max_control_length: int = DEFAULT_MAX_CONTROL_LENGTH) -> None:
        self._buffer = bytearray()
        self._headers = HeaderDecompressor(max_header_block)
        self._max_frame_length = max_frame_length
        self._max_control_length = max_control_length
        self._failed: SessionError | None = None

    def feed(self, data: bytes) -> None:
        self._buffer += data

    @property
    def pending(self) -> int:
        """Bytes received that do not yet make a whole frame (non-zero at EOF: a truncated frame)."""
        return len(self._buffer)

    def next_frame(self) -> Frame | None:
        """The next whole frame, None if more bytes are needed; SessionError once the stream is bad."""
        if self._failed is not None:
            raise self._failed
        try:
            return self._next()
        except SessionError as exc:
            self._failed = exc
            raise

    def _next(self) -> Frame | None:
        if len(self._buffer) < HEADER_LENGTH:
            return None
        first, second = struct.unpack_from(">II", self._buffer, 0)
        flags, length = second >> 24, second & 0xFFFFFF
        control = bool(first & 0x80000000)
        if control:  # everything the 8 bytes tell is checked before waiting for the payload
            self._check_control_head(first, length)
        elif first & MAX_STREAM_ID == 0:
            raise SessionError("data frame on stream 0")
        elif length > self._max_frame_length:
            raise SessionError(f"frame of {length} bytes is longer than {self._max_frame_length}")
        if len(self._buffer) < HEADER_LENGTH + length:
            return None
        payload = bytes(self._buffer[HEADER_LENGTH:HEADER_LENGTH + length])
        del self._buffer[:HEADER_LENGTH + length]
        if not control:
            return DataFrame(first & MAX_STREAM_ID, payload, flags)
        return self._control(first & 0xFFFF, flags, payload)

    def _check_control_head(self, first: int, length: int) -> None:
        """SessionError for a control frame whose version or length is wrong (known from its head)."""
        version, frame_type = (first >> 16) & 0x7FFF, first & 0xFFFF
        if version != VERSION:
            raise SessionError(f"unsupported SPDY version {version}")
        want = _FIXED_LENGTH.get(frame_type)
        if want is not None and length != want:
            raise SessionError(f"control frame type {frame_type} has length {length}, not {want}")
        least = _MIN_LENGTH.get(frame_type)
        if least is not None and length < least:
            raise SessionError(f"control frame type {frame_type} is truncated ({length} bytes)")
        if length > min(self._max_control_length, self._max_frame_length):
            raise SessionError(f"control frame type {frame_type} of {length} bytes is too long")

    def _control(self, frame_type: int, flags: int, payload: bytes) -> Frame:
        if frame_type == SYN_STREAM:
            stream_id, associated, pri, slot = struct.unpack_from(">IIBB", payload, 0)
            stream_id &= MAX_STREAM_ID
            return self._with_headers(frame_type, stream_id, payload[10:], lambda headers: SynStream(
                stream_id, headers, associated & MAX_STREAM_ID, pri >> 5, slot, flags))
        if frame_type in (SYN_REPLY, HEADERS):
            stream_id = struct.unpack_from(">I", payload, 0)[0] & MAX_STREAM_ID
            kind = SynReply if frame_type == SYN_REPLY else HeadersFrame
            return self._with_headers(frame_type, stream_id, payload[4:],
                                      lambda headers: kind(stream_id, headers, flags))
        if frame_type == RST_STREAM:
            stream_id, status = struct.unpack(">II", payload)
            stream_id &= MAX_STREAM_ID
            if stream_id == 0:
                raise SessionError("RST_STREAM on stream 0")
            return RstStream(stream_id, status)
        if frame_type == SETTINGS:
            (count,) = struct.unpack_from(">I", payload, 0)
            if len(payload) != 4 + 8 * count:
                raise SessionError(f"SETTINGS with {count} entries has length {len(payload)}")
            entries = []
            for i in range(count):
                flag_id, value = struct.unpack_from(">II", payload, 4 + 8 * i)
                entries.append((flag_id >> 24, flag_id & 0xFFFFFF, value))
            return Settings(tuple(entries), flags)
        if frame_type == PING:
            return Ping(struct.unpack(">I", payload)[0])
        if frame_type == GOAWAY:
            last, status = struct.unpack(">II", payload)
            return GoAway(last & MAX_STREAM_ID, status)
        if frame_type == WINDOW_UPDATE:
            stream_id, delta = struct.unpack(">II", payload)
            return WindowUpdate(stream_id & MAX_STREAM_ID, delta & MAX_WINDOW)
        return UnknownControl(frame_type, flags, payload)

    def _with_headers(self, frame_type: int, stream_id: int, compressed: bytes,
                      build: Callable[[Headers], Frame]) -> Frame:
        block = self._headers.decompress(compressed)  # SessionError: the context is lost
        if stream_id == 0:
            raise SessionError(f"control frame type {frame_type} on stream 0")
        try:
            headers = unpack_header_block(block)
        except ValueError as exc:
            return BadFrame(stream_id, RstStatus.PROTOCOL_ERROR, str(exc), frame_type)
        return build(headers)
