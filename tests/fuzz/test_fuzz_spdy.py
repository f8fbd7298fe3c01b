"""The SPDY/3.1 frame reader and connection under random and mutated bytes: frames, "need more
bytes", or a SessionError; never another exception, never a hang. A connection fed garbage ends
(GOAWAY and close) and never with an internal error."""
from __future__ import annotations

import struct
import time

from hypothesis import example, given, strategies as st

from pycri.streaming import spdy
from pycri.streaming.spdy_conn import SpdyConnection
from tests.fuzz.fakes import ScriptedTransport, mutate, split

HEADERS = st.lists(st.tuples(st.text("abcdefghijklmnopqrstuvwxyz-:", min_size=1, max_size=12), st.text(max_size=20)),
                   max_size=4, unique_by=lambda h: h[0])
STREAM_ID = st.integers(min_value=1, max_value=spdy.MAX_STREAM_ID)
FRAMES = st.one_of(
    st.builds(spdy.DataFrame, STREAM_ID, st.binary(max_size=64), st.sampled_from([0, spdy.FLAG_FIN])),
    st.builds(spdy.SynStream, STREAM_ID, HEADERS, flags=st.sampled_from([0, 1, 2, 3])),
    st.builds(spdy.SynReply, STREAM_ID, HEADERS, flags=st.sampled_from([0, 1])),
    st.builds(spdy.HeadersFrame, STREAM_ID, HEADERS, flags=st.sampled_from([0, 1])),
    st.builds(spdy.RstStream, STREAM_ID, st.integers(0, 12)),
    st.builds(spdy.Settings, st.lists(st.tuples(st.integers(0, 3), st.integers(0, 9), st.integers(0, 2**32 - 1)),
                                      max_size=3).map(tuple)),
    st.builds(spdy.Ping, st.integers(0, 2**32 - 1)),
    st.builds(spdy.GoAway, st.integers(0, spdy.MAX_STREAM_ID), st.integers(0, 3)),
    st.builds(spdy.WindowUpdate, st.integers(0, spdy.MAX_STREAM_ID), st.integers(1, spdy.MAX_WINDOW)),
    st.builds(spdy.UnknownControl, st.integers(10, 0xFFFF), st.integers(0, 255), st.binary(max_size=16)),
)


def encode(frames: list[spdy.Frame]) -> bytes:
    encoder = spdy.FrameEncoder()
    return b"".join(encoder.encode(f) for f in frames)


def decode_all(chunks: list[bytes]) -> list[spdy.Frame]:
    """Feed chunk by chunk; stop at the first SessionError (the decoder stays failed)."""
    decoder = spdy.FrameDecoder(max_control_length=4096)
    frames: list[spdy.Frame] = []
    for chunk in chunks:
        decoder.feed(chunk)
        try:
            while (frame := decoder.next_frame()) is not None:
                frames.append(frame)
        except spdy.SessionError:
            try:
                decoder.next_frame()
            except spdy.SessionError:
                return frames
            raise AssertionError("decoder forgot its session error")
    return frames


EDITS = st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6)
CUTS = st.lists(st.integers(0, 10_000), max_size=8)


@given(st.binary(max_size=512), CUTS)
@example(b"\x80\x03\x00\x01\x00\x00\x00\x0a" + b"\x00" * 10, [])  # SYN_STREAM with an empty header block
@example(b"\x80\x03\x00\x04\x00\x00\x00\x04\xff\xff\xff\xff", [])  # SETTINGS claiming 2^32-1 entries
@example(b"\x00\x00\x00\x00\x00\x00\x00\x00", [])  # DATA on stream 0
def test_random_bytes(data: bytes, cuts: list[int]) -> None:
    decode_all(split(data, cuts))


@given(st.lists(FRAMES, min_size=1, max_size=6), EDITS, CUTS)
def test_mutated_frames(frames: list[spdy.Frame], edits: list[tuple[int, int]], cuts: list[int]) -> None:
    data = encode(frames)
    decoded = decode_all(split(mutate(data, edits), cuts))
    if not edits:
        assert len(decoded) == len(frames)


def run_connection(chunks: list[bytes]) -> SpdyConnection:
    transport = ScriptedTransport(chunks)
    conn = SpdyConnection(transport, server=True, on_stream=lambda stream: True, linger=0.05, max_buffer=1 << 16)
    conn.start()
    assert conn.wait_closed(120), "the connection did not end after the peer's end of stream"
    assert not (conn.error or "").startswith("internal error"), conn.error
    deadline = time.monotonic() + 60  # closed is set just before the transport is closed
    while not transport.closed and time.monotonic() < deadline:
        time.sleep(0.001)
    assert transport.closed
    return conn


@given(st.binary(max_size=256), CUTS)
@example(struct.pack(">HHI", 0x8003, spdy.WINDOW_UPDATE, 8) + struct.pack(">II", 0, 0), [])
def test_connection_random_bytes(data: bytes, cuts: list[int]) -> None:
    run_connection(split(data, cuts))


@given(st.lists(FRAMES, min_size=1, max_size=8), EDITS, CUTS)
def test_connection_mutated_frames(frames: list[spdy.Frame], edits: list[tuple[int, int]], cuts: list[int]) -> None:
    run_connection(split(mutate(encode(frames), edits), cuts))
