"""SPDY/3.1: frames built by hand, header compression against zlib with the SPDY/3 dictionary,
and a connection on a socketpair that answers every bad frame with a protocol error, never a hang."""
from __future__ import annotations

import random
import socket
import struct
import threading
import zlib

import pytest

from pycri.streaming import spdy
from pycri.streaming.spdy import (
    BadFrame, DataFrame, FrameDecoder, FrameEncoder, GoAway, GoAwayStatus, HeadersFrame, Ping, RstStatus,
    RstStream, SessionError, Settings, SettingId, SynReply, SynStream, UnknownControl, WindowUpdate,
)
from pycri.streaming.spdy_conn import FlowControl, SpdyConnection, StreamReset
from pycri.streaming.transport import SocketTransport
from tests.unit.test_streaming_support import (  # noqa: F401 (bounded: autouse)
    TIMEOUT, RawPeer, bounded, in_thread, serving_pair,
)


BLOCK = b"\x00\x00\x00\x01\x00\x00\x00\x0astreamtype\x00\x00\x00\x05error"


def decode_all(data: bytes, decoder: FrameDecoder | None = None) -> list[spdy.Frame]:
    decoder = decoder or FrameDecoder()
    decoder.feed(data)
    frames = []
    while (frame := decoder.next_frame()) is not None:
        frames.append(frame)
    return frames


def control(frame_type: int, payload: bytes, flags: int = 0, version: int = 3) -> bytes:
    return struct.pack(">HHI", 0x8000 | version, frame_type, flags << 24 | len(payload)) + payload


def independent_block(headers_block: bytes) -> bytes:
    """A header block compressed by plain zlib with the dictionary, as another implementation would."""
    z = zlib.compressobj(9, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY, spdy.DICTIONARY)
    return z.compress(headers_block) + z.flush(zlib.Z_SYNC_FLUSH)


# --- framing ------------------------------------------------------------------------------

def test_the_dictionary_is_the_drafts() -> None:
    assert len(spdy.DICTIONARY) == 1423
    assert zlib.adler32(spdy.DICTIONARY) == spdy.DICTIONARY_ADLER32
    assert spdy.DICTIONARY.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head")
    assert spdy.DICTIONARY.endswith(b"charset=iso-8859-1,utf-,*,enq=0.")


@pytest.mark.parametrize("frame", [
    DataFrame(1, b"hello"),
    DataFrame(0x7FFFFFFF, b"", spdy.FLAG_FIN),
    SynStream(3, [("streamtype", "stdout"), ("port", "80")], associated_id=1, priority=5, slot=2,
              flags=spdy.FLAG_FIN | spdy.FLAG_UNIDIRECTIONAL),
    SynReply(3, []),
    SynReply(5, [("a", "b\x00c")], spdy.FLAG_FIN),
    HeadersFrame(7, [("x", "y")], spdy.FLAG_FIN),
    RstStream(9, RstStatus.CANCEL),
    Settings(((0, SettingId.INITIAL_WINDOW_SIZE, 1 << 20), (1, SettingId.MAX_CONCURRENT_STREAMS, 100)), 1),
    Ping(0xFFFFFFFF),
    GoAway(11, GoAwayStatus.PROTOCOL_ERROR),
    WindowUpdate(0, 0x7FFFFFFF),
    UnknownControl(10, 0, b"credential"),
])
def test_frames_round_trip(frame: spdy.Frame) -> None:
    assert decode_all(FrameEncoder().encode(frame)) == [frame]


def test_control_frame_bytes_by_hand() -> None:
    assert FrameEncoder().encode(Ping(7)) == bytes.fromhex("80030006000000040000 0007".replace(" ", ""))
    assert FrameEncoder().encode(RstStream(1, 5)) == bytes.fromhex("8003000300000008" "00000001" "00000005")
    assert FrameEncoder().encode(WindowUpdate(3, 1024)) == bytes.fromhex("8003000900000008" "00000003" "00000400")
    assert FrameEncoder().encode(DataFrame(1, b"ab", 1)) == bytes.fromhex("00000001" "01000002") + b"ab"
    assert FrameEncoder().encode(GoAway(5, 0)) == bytes.fromhex("8003000700000008" "00000005" "00000000")


def test_frames_split_anywhere_still_decode() -> None:
    encoder = FrameEncoder()
    data = b"".join(encoder.encode(f) for f in (SynStream(1, [("streamtype", "error")]), DataFrame(1, b"x" * 300),
                                                Ping(1)))
    decoder, frames = FrameDecoder(), []
    for byte in data:
        decoder.feed(bytes([byte]))
        while (frame := decoder.next_frame()) is not None:
            frames.append(frame)
    assert [type(f) for f in frames] == [SynStream, DataFrame, Ping]
    assert decoder.pending == 0


def test_header_block_against_independent_zlib() -> None:
    assert spdy.pack_header_block([("streamtype", "error")]) == BLOCK
    # ours inflates with a plain zlib context that has the dictionary
    payload = FrameEncoder().encode(SynStream(1, [("streamtype", "error")]))[18:]
    assert zlib.decompressobj(15, spdy.DICTIONARY).decompress(payload) == BLOCK
    # and a plain zlib stream with the dictionary decodes
    frame = control(spdy.SYN_STREAM, struct.pack(">IIBB", 1, 0, 0, 0) + independent_block(BLOCK))
    assert decode_all(frame) == [SynStream(1, [("streamtype", "error")])]


def test_one_compression_context_per_direction() -> None:
    encoder = FrameEncoder()
    first = encoder.encode(SynStream(1, [("streamtype", "error")]))
    second = encoder.encode(SynStream(3, [("streamtype", "error")]))
    decoder = FrameDecoder()
    assert len(decode_all(first + second, decoder)) == 2
    with pytest.raises(SessionError, match="inflate"):  # the second block means nothing on its own
        decode_all(second)


@pytest.mark.parametrize("data, message", [
    (control(spdy.PING, b"\0\0\0\1", version=2), "unsupported SPDY version 2"),
    (control(spdy.RST_STREAM, b"\0\0\0\1"), "length 4, not 8"),
    (control(spdy.WINDOW_UPDATE, b"\0" * 12), "length 12, not 8"),
    (control(spdy.SYN_STREAM, b"\0\0\0\1\0\0"), "truncated"),
    (control(spdy.SETTINGS, b"\0\0\0\2" + b"\0" * 8), "2 entries"),
    (control(spdy.SYN_STREAM, struct.pack(">IIBB", 1, 0, 0, 0) + b"garbage!"), "does not inflate"),
    (control(spdy.SYN_REPLY, b"\0\0\0\1"), "empty compressed header block"),
    (struct.pack(">II", 0, 3) + b"abc", "data frame on stream 0"),
    (control(spdy.RST_STREAM, b"\0\0\0\0\0\0\0\1"), "RST_STREAM on stream 0"),
    (control(spdy.SYN_STREAM, struct.pack(">IIBB", 0, 0, 0, 0) + independent_block(BLOCK)), "type 1 on stream 0"),
    (control(spdy.HEADERS, struct.pack(">I", 0) + independent_block(BLOCK)), "type 8 on stream 0"),
    (control(spdy.PING, b"\0\0\0\1", version=1), "unsupported SPDY version 1"),
    (control(spdy.PING, b"\0\0\0\1", version=0x7FFF), "unsupported SPDY version 32767"),
    (control(spdy.SYN_STREAM, struct.pack(">IIBB", 1, 0, 0, 0) + zlib.compress(BLOCK)), "stream ended"),  # Z_FINISH
])
def test_session_errors(data: bytes, message: str) -> None:
    with pytest.raises(SessionError, match=message):
        decode_all(data)


@pytest.mark.parametrize("head, message", [
    (struct.pack(">HHI", 0x8003, spdy.PING, 0xFFFFFF), "length 16777215, not 4"),
    (struct.pack(">HHI", 0x8003, spdy.WINDOW_UPDATE, 0x10000), "length 65536, not 8"),
    (struct.pack(">HHI", 0x8003, spdy.SYN_STREAM, 9), "truncated"),
    (struct.pack(">HHI", 0x8003, spdy.SYN_REPLY, 3), "truncated"),
    (struct.pack(">HHI", 0x8003, spdy.SYN_STREAM, 0xFFFFFF), "too long"),
    (struct.pack(">HHI", 0x8003, 0x7777, spdy.DEFAULT_MAX_CONTROL_LENGTH + 1), "too long"),  # unknown, but absurd
    (struct.pack(">HHI", 0x8002, spdy.SYN_STREAM, 100), "version 2"),
    (struct.pack(">II", 0, 10), "data frame on stream 0"),
])
def test_a_bad_frame_head_is_refused_before_its_payload(head: bytes, message: str) -> None:
    decoder = FrameDecoder()
    decoder.feed(head)  # no payload follows: waiting for it would be the hang
    with pytest.raises(SessionError, match=message):
        decoder.next_frame()


def test_garbage_only_ever_gives_frames_or_a_session_error() -> None:
    """Valid frames with bytes flipped, cut or inserted at random: never another exception."""
    valid = _valid_session_bytes()
    rng = random.Random(1234)
    for _ in range(3000):
        decoder = FrameDecoder(max_header_block=4096)
        decoder.feed(_mutate(rng, valid))
        try:
            while decoder.next_frame() is not None:
                pass
        except SessionError:
            pass


def test_a_frame_longer_than_allowed_is_refused_before_it_is_read() -> None:
    decoder = FrameDecoder(max_frame_length=1024)
    decoder.feed(struct.pack(">II", 1, 4096))
    with pytest.raises(SessionError, match="longer than 1024"):
        decoder.next_frame()


def test_a_decoder_stays_failed() -> None:
    decoder = FrameDecoder()
    decoder.feed(control(spdy.PING, b"\0\0\0\1", version=4))
    for _ in range(2):
        with pytest.raises(SessionError):
            decoder.next_frame()


def test_a_block_that_inflates_too_large_is_a_session_error() -> None:
    block = spdy.pack_header_block([("big", "x" * 5000)])
    frame = control(spdy.SYN_REPLY, struct.pack(">I", 1) + independent_block(block))
    with pytest.raises(SessionError, match="inflates past"):
        decode_all(frame, FrameDecoder(max_header_block=1024))


@pytest.mark.parametrize("block, reason", [
    (b"\0\0\0\1\0\0\0\x0aStreamType\0\0\0\0", "not lowercase"),
    (b"\0\0\0\2\0\0\0\1a\0\0\0\0\0\0\0\1a\0\0\0\0", "duplicate"),
    (b"\0\0\0\1\0\0\0\0\0\0\0\0", "empty header name"),
    (b"\0\0\0\1\0\0\0\x09streamtyp", "value length"),
    (b"\0\0\0\1\0\0\0\xffabc", "runs past"),
    (b"\0\0", "shorter than its count"),
])
def test_a_malformed_block_that_inflates_is_a_stream_error(block: bytes, reason: str) -> None:
    decoder = FrameDecoder()
    frames = decode_all(control(spdy.SYN_STREAM, struct.pack(">IIBB", 5, 0, 0, 0) + independent_block(block)),
                        decoder)
    assert len(frames) == 1 and isinstance(frames[0], BadFrame)
    assert frames[0].stream_id == 5 and frames[0].status == RstStatus.PROTOCOL_ERROR
    assert reason in frames[0].reason


# --- the connection -----------------------------------------------------------------------

def test_a_stream_is_accepted_read_written_and_half_closed() -> None:
    conn, peer, accepted = serving_pair()
    peer.send(SynStream(1, [("streamtype", "stdin")]))
    reply = peer.expect(SynReply)
    assert reply.stream_id == 1
    stream = accepted.get(timeout=TIMEOUT)
    assert stream.header("streamtype") == "stdin"
    peer.send(DataFrame(1, b"hello "), DataFrame(1, b"world", spdy.FLAG_FIN))
    assert stream.readall(TIMEOUT) == b"hello world"
    stream.write(b"back")
    stream.close()
    assert peer.expect(DataFrame) == DataFrame(1, b"back")
    assert peer.expect(DataFrame) == DataFrame(1, b"", spdy.FLAG_FIN)
    conn.close()
    assert isinstance(peer.expect(GoAway), GoAway)
    peer.sock.close()
    assert conn.wait_closed(TIMEOUT)


def test_nothing_is_sent_before_the_peer_speaks() -> None:
    conn, peer, _ = serving_pair()
    assert peer.silent(0.3)
    conn.abort()


def test_ping_is_answered_and_our_ping_is_timed() -> None:
    conn, peer, _ = serving_pair()
    peer.send(Ping(1))
    assert peer.expect(Ping) == Ping(1)
    result: list[float] = []
    thread = threading.Thread(target=lambda: result.append(conn.ping(TIMEOUT)))
    thread.start()
    ping = peer.expect(Ping)
    assert ping.ping_id % 2 == 0  # a server's pings are even
    peer.send(ping)
    thread.join(TIMEOUT)
    assert result and result[0] >= 0
    conn.abort()


@pytest.mark.parametrize("bad", [
    control(spdy.PING, b"\0\0\0\1", version=2),                                   # wrong version
    control(spdy.SYN_STREAM, struct.pack(">IIBB", 1, 0, 0, 0) + independent_block(BLOCK), version=4),
    control(spdy.GOAWAY, b"\0\0\0\1"),                                            # wrong length
    struct.pack(">HHI", 0x8003, spdy.PING, 0xFFFFFF),                              # a length never sent
    struct.pack(">HHI", 0x8003, spdy.RST_STREAM, 7) + b"\0" * 7,                   # short RST_STREAM
    control(spdy.SYN_STREAM, b"\0\0\0\1\0\0"),                                    # truncated SYN_STREAM
    control(spdy.SYN_STREAM, struct.pack(">IIBB", 1, 0, 0, 0) + b"\x78garbage"),   # bad compression
    control(spdy.SYN_STREAM, struct.pack(">IIBB", 1, 0, 0, 0) + zlib.compress(BLOCK)),  # no dictionary, no flush
    control(spdy.SYN_REPLY, b"\0\0\0\1"),                                          # empty header block
    control(spdy.SYN_STREAM, struct.pack(">IIBB", 0, 0, 0, 0) + independent_block(BLOCK)),  # stream id 0
    struct.pack(">II", 0, 4) + b"data",                                           # DATA on stream 0
    control(spdy.RST_STREAM, struct.pack(">II", 0, RstStatus.CANCEL)),             # RST_STREAM on stream 0
    control(spdy.SETTINGS, struct.pack(">I", 3) + b"\0" * 8),                      # SETTINGS count wrong
    control(spdy.SETTINGS, struct.pack(">III", 1, SettingId.INITIAL_WINDOW_SIZE, 0x80000000)),  # window past 2^31-1
    control(spdy.WINDOW_UPDATE, struct.pack(">II", 0, 0)),                        # session delta 0
])
def test_a_session_error_gets_goaway_and_close(bad: bytes) -> None:
    conn, peer, _ = serving_pair()
    peer.send_raw(bad)
    frames = peer.expect_eof()
    assert frames and isinstance(frames[-1], GoAway) and frames[-1].status == GoAwayStatus.PROTOCOL_ERROR
    assert conn.wait_closed(TIMEOUT)
    assert conn.error


def test_a_truncated_frame_at_end_of_stream_gets_goaway() -> None:
    conn, peer, _ = serving_pair()
    peer.send_raw(FrameEncoder().encode(Ping(1))[:6])
    peer.sock.shutdown(socket.SHUT_WR)
    frames = peer.expect_eof()
    assert [type(f) for f in frames] == [GoAway]
    assert conn.wait_closed(TIMEOUT)
    assert "inside a frame" in (conn.error or "")


def test_a_silent_truncated_frame_does_not_hang_close() -> None:
    conn, peer, _ = serving_pair()
    peer.send_raw(FrameEncoder().encode(Ping(1))[:6])
    conn.close()  # linger 0.5 s: the peer never closes, so we do
    assert conn.wait_closed(TIMEOUT)


def test_a_frame_longer_than_the_connection_allows_gets_goaway() -> None:
    conn, peer, _ = serving_pair(max_frame_length=1024)
    peer.send_raw(struct.pack(">II", 1, 4096))  # a DATA head; the payload never comes
    frames = peer.expect_eof()
    assert frames == [GoAway(0, GoAwayStatus.PROTOCOL_ERROR)]
    assert conn.wait_closed(TIMEOUT) and "longer than 1024" in (conn.error or "")


@pytest.mark.parametrize("raw", [
    struct.pack(">II", 41, 4) + b"who?",                                          # DATA, odd id never opened
    struct.pack(">II", 42, spdy.FLAG_FIN << 24),                                  # DATA FIN, even id never opened
    control(spdy.WINDOW_UPDATE, struct.pack(">II", 41, 100)),                     # WINDOW_UPDATE, never opened
])
def test_a_frame_for_a_stream_never_opened_gets_invalid_stream_and_the_session_goes_on(raw: bytes) -> None:
    conn, peer, _ = serving_pair()
    stream_id = struct.unpack_from(">I", raw, 8 if raw[0] & 0x80 else 0)[0]
    peer.send_raw(raw)
    assert peer.expect(RstStream) == RstStream(stream_id, RstStatus.INVALID_STREAM)
    peer.send(Ping(3))
    assert peer.expect(Ping) == Ping(3)
    conn.abort()


@pytest.mark.parametrize("frame", [SynReply(41, [("a", "b")]), HeadersFrame(41, [("a", "b")])])
def test_headers_for_a_stream_never_opened_get_invalid_stream(frame: spdy.Frame) -> None:
    conn, peer, _ = serving_pair()
    peer.send(frame)  # compressed with the peer's context, so the session stays usable
    assert peer.expect(RstStream) == RstStream(41, RstStatus.INVALID_STREAM)
    peer.send(SynStream(1, [("streamtype", "stdin")]))
    assert peer.expect(SynReply).stream_id == 1
    conn.abort()


def test_data_after_fin_gets_stream_already_closed() -> None:
    conn, peer, accepted = serving_pair()
    peer.send(SynStream(1, [("streamtype", "stdin")], flags=spdy.FLAG_FIN))
    peer.expect(SynReply)
    stream = accepted.get(timeout=TIMEOUT)
    peer.send(DataFrame(1, b"late"))
    assert peer.expect(RstStream) == RstStream(1, RstStatus.STREAM_ALREADY_CLOSED)
    assert stream.is_reset
    with pytest.raises(StreamReset):
        stream.write(b"x")
    conn.abort()


def test_data_after_a_finished_stream_gets_stream_already_closed() -> None:
    conn, peer, accepted = serving_pair()
    peer.send(SynStream(1, [("streamtype", "stdin")], flags=spdy.FLAG_FIN))
    peer.expect(SynReply)
    accepted.get(timeout=TIMEOUT).close()
    peer.expect(DataFrame)
    peer.send(DataFrame(1, b"late"))
    assert peer.expect(RstStream) == RstStream(1, RstStatus.STREAM_ALREADY_CLOSED)
    conn.abort()


def test_data_after_the_peer_reset_is_ignored() -> None:
    conn, peer, _ = serving_pair()
    peer.send(SynStream(1, [("streamtype", "stdin")]))
    peer.expect(SynReply)
    peer.send(RstStream(1, RstStatus.CANCEL), DataFrame(1, b"in flight"), Ping(5))
    assert peer.expect(Ping) == Ping(5)
    conn.abort()


@pytest.mark.parametrize("stream_id", [4, 3])
def test_a_syn_stream_with_an_even_or_repeated_id_gets_rst_protocol_error(stream_id: int) -> None:
    conn, peer, accepted = serving_pair()
    peer.send(SynStream(3, [("streamtype", "stdin")]))
    peer.expect(SynReply)
    peer.send(SynStream(stream_id, [("streamtype", "stdout")]))  # even (a server's id), or the same again
    assert peer.expect(RstStream) == RstStream(stream_id, RstStatus.PROTOCOL_ERROR)
    peer.send(SynStream(5, [("streamtype", "stderr")]))  # the session goes on
    assert peer.expect(SynReply).stream_id == 5
    assert [accepted.get(timeout=TIMEOUT).id for _ in range(2)] == [3, 5]
    conn.abort()


@pytest.mark.parametrize("stream_id", [1, 2])
def test_a_syn_stream_whose_id_goes_down_is_a_session_error(stream_id: int) -> None:
    conn, peer, _ = serving_pair()
    peer.send(SynStream(3, [("streamtype", "stdin")]))
    peer.expect(SynReply)
    peer.send(SynStream(stream_id, [("streamtype", "stdout")]))  # draft 2.3.2: MUST be a session error
    frames = peer.expect_eof()
    assert frames and frames[-1] == GoAway(3, GoAwayStatus.PROTOCOL_ERROR)
    assert conn.wait_closed(TIMEOUT)


def test_a_malformed_header_block_gets_rst_and_compression_stays_in_step() -> None:
    conn, peer, accepted = serving_pair()
    bad = spdy.pack_header_block([("streamtype", "stdin")]).replace(b"streamtype", b"STREAMTYPE")
    peer.send_raw(control(spdy.SYN_STREAM, struct.pack(">IIBB", 1, 0, 0, 0) + peer.encoder._headers._zlib.compress(
        bad) + peer.encoder._headers._zlib.flush(zlib.Z_SYNC_FLUSH)))
    assert peer.expect(RstStream) == RstStream(1, RstStatus.PROTOCOL_ERROR)
    peer.send(SynStream(3, [("streamtype", "stdout")]))  # uses the same compression context
    assert peer.expect(SynReply).stream_id == 3
    assert accepted.get(timeout=TIMEOUT).id == 3
    conn.abort()


def test_a_refused_stream_gets_refused_stream() -> None:
    conn, peer, _ = serving_pair()
    peer.send(SynStream(1, [("refuse", "1")]))
    assert peer.expect(RstStream) == RstStream(1, RstStatus.REFUSED_STREAM)
    conn.abort()


def test_after_goaway_new_streams_are_refused() -> None:
    conn, peer, accepted = serving_pair()
    peer.send(SynStream(1, [("streamtype", "stdin")]))
    peer.expect(SynReply)
    conn.go_away()
    assert peer.expect(GoAway) == GoAway(1, GoAwayStatus.OK)
    peer.send(SynStream(3, [("streamtype", "stdout")]))
    assert peer.expect(RstStream) == RstStream(3, RstStatus.REFUSED_STREAM)
    stream = accepted.get(timeout=TIMEOUT)  # the open stream goes on
    peer.send(DataFrame(1, b"still", spdy.FLAG_FIN))
    assert stream.readall(TIMEOUT) == b"still"
    conn.abort()


def test_goaway_from_the_peer_is_honoured() -> None:
    conn, peer, _ = serving_pair()
    peer.send(GoAway(0, GoAwayStatus.OK))
    assert conn.goaway_received.wait(TIMEOUT)
    peer.send(SynStream(1, [("streamtype", "stdin")]))
    peer.expect(SynReply)  # a peer that sent GOAWAY may still open streams; we may not
    peer.sock.close()
    assert conn.wait_closed(TIMEOUT)


def test_unknown_control_frames_are_ignored() -> None:
    conn, peer, _ = serving_pair()
    peer.send_raw(control(10, b"credential")           # CREDENTIAL (SPDY/3), which we do not implement
                  + control(5, b"")                     # NOOP (SPDY/2 only)
                  + control(0x7777, b"x" * 1000, flags=0xFF)
                  + control(spdy.PING, struct.pack(">I", 1)))
    assert peer.expect(Ping) == Ping(1)
    assert peer.silent(0.1)  # nothing else was answered
    conn.abort()


def _valid_session_bytes() -> bytes:
    """A client's side of a session, as bytes: streams, data, settings, pings, window updates."""
    encoder = FrameEncoder()
    frames: list[spdy.Frame] = [
        SynStream(1, [("streamtype", "error"), ("port", "80")]), SynStream(3, [("streamtype", "data")], flags=1),
        DataFrame(1, b"hello"), Settings(((0, SettingId.INITIAL_WINDOW_SIZE, 1 << 20),)), Ping(1),
        WindowUpdate(1, 1000), WindowUpdate(0, 1000), HeadersFrame(1, [("x", "y")]), RstStream(3, 5),
        UnknownControl(10, 0, b"credential"), DataFrame(1, b"", spdy.FLAG_FIN), GoAway(0, 0),
    ]
    return b"".join(encoder.encode(frame) for frame in frames)


def _mutate(rng: random.Random, data: bytes) -> bytes:
    """data with a few bytes flipped, a piece cut out, or random bytes put in."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        where = rng.randrange(len(out) or 1)
        action = rng.choice(("flip", "cut", "insert"))
        if action == "flip" and out:
            out[where] ^= 1 << rng.randrange(8)
        elif action == "cut":
            del out[where:where + rng.randint(1, 16)]
        else:
            out[where:where] = rng.randbytes(rng.randint(1, 16))
    return bytes(out)


@pytest.mark.parametrize("seed", range(40))
def test_a_garbled_session_ends_with_goaway_or_goes_on_never_a_crash(seed: int) -> None:
    conn, peer, accepted = serving_pair(max_header_block=4096)
    peer.send_raw(_mutate(random.Random(seed), _valid_session_bytes()))
    peer.sock.shutdown(socket.SHUT_WR)
    frames = peer.expect_eof()  # the server answers what it can, then closes: no hang
    assert conn.wait_closed(TIMEOUT)
    assert not (conn.error or "").startswith("internal error"), conn.error
    goaways = [f for f in frames if isinstance(f, GoAway)]
    if conn.error:  # a session error: GOAWAY PROTOCOL_ERROR is the last thing we said
        assert goaways and goaways[-1].status == GoAwayStatus.PROTOCOL_ERROR and frames[-1] == goaways[-1]


# --- flow control -------------------------------------------------------------------------

def _open(peer, accepted, stream_id: int = 1):  # type: ignore[no-untyped-def]
    peer.send(SynStream(stream_id, [("streamtype", "stdout")]))
    peer.expect(SynReply)
    return accepted.get(timeout=TIMEOUT)


def _received(peer, stream_id: int, until: int, timeout: float = TIMEOUT) -> int:  # type: ignore[no-untyped-def]
    got = 0
    while got < until:
        frame = peer.expect(DataFrame, timeout)
        assert frame.stream_id == stream_id
        got += len(frame.data)
    return got


def test_strict_sends_stop_at_the_window_and_resume_on_window_update() -> None:
    conn, peer, accepted = serving_pair(flow_control=FlowControl.STRICT)
    stream = _open(peer, accepted)
    writer = threading.Thread(target=stream.write, args=(b"w" * 100_000,), daemon=True)
    writer.start()
    assert _received(peer, 1, 65536) == 65536
    with pytest.raises(TimeoutError):
        peer.next(0.3)  # the window is spent
    peer.send(WindowUpdate(1, 50_000))
    with pytest.raises(TimeoutError):
        peer.next(0.3)  # the session window is spent too
    peer.send(WindowUpdate(0, 50_000))
    assert _received(peer, 1, 100_000 - 65536) == 100_000 - 65536
    writer.join(TIMEOUT)
    assert not writer.is_alive()
    conn.abort()


def test_auto_does_not_wait_for_a_peer_that_never_grants_window() -> None:
    conn, peer, accepted = serving_pair()  # AUTO: the Go client (spdystream) never sends WINDOW_UPDATE
    stream = _open(peer, accepted)
    writer = threading.Thread(target=stream.write, args=(b"w" * 300_000,), daemon=True)
    writer.start()
    assert _received(peer, 1, 300_000) == 300_000
    writer.join(TIMEOUT)
    conn.abort()


def test_auto_honours_windows_once_the_peer_sends_window_update() -> None:
    conn, peer, accepted = serving_pair()
    stream = _open(peer, accepted)
    peer.send(WindowUpdate(1, 1))
    peer.send(Ping(1))
    peer.expect(Ping)
    writer = threading.Thread(target=stream.write, args=(b"w" * 100_000,), daemon=True)
    writer.start()
    _received(peer, 1, 65536)  # the session window (64 KiB) bounds it now
    with pytest.raises(TimeoutError):
        peer.next(0.3)
    peer.send(WindowUpdate(0, 100_000), WindowUpdate(1, 100_000))
    _received(peer, 1, 100_000 - 65536)
    writer.join(TIMEOUT)
    conn.abort()


def test_settings_initial_window_size_changes_open_streams() -> None:
    conn, peer, accepted = serving_pair()
    stream = _open(peer, accepted)
    peer.send(Settings(((0, SettingId.INITIAL_WINDOW_SIZE, 1000),)), WindowUpdate(0, 1_000_000))
    peer.send(Ping(1))
    peer.expect(Ping)
    writer = threading.Thread(target=stream.write, args=(b"w" * 5000,), daemon=True)
    writer.start()
    assert _received(peer, 1, 1000) == 1000
    with pytest.raises(TimeoutError):
        peer.next(0.3)
    peer.send(WindowUpdate(1, 4000))
    _received(peer, 1, 4000)
    writer.join(TIMEOUT)
    conn.abort()


def test_reading_grants_window_to_the_peer() -> None:
    conn, peer, accepted = serving_pair()
    stream = _open(peer, accepted)
    peer.send(DataFrame(1, b"r" * 40_000))
    assert len(stream.read(40_000, timeout=TIMEOUT)) == 40_000
    updates = {peer.expect(WindowUpdate).stream_id: None for _ in range(2)}
    assert set(updates) == {0, 1}
    conn.abort()


@pytest.mark.parametrize("delta, status", [(0, RstStatus.PROTOCOL_ERROR), (0x7FFFFFFF, RstStatus.FLOW_CONTROL_ERROR)])
def test_bad_stream_window_updates_get_rst(delta: int, status: int) -> None:
    conn, peer, accepted = serving_pair()
    stream = _open(peer, accepted)
    peer.send_raw(control(spdy.WINDOW_UPDATE, struct.pack(">II", 1, delta)))
    assert peer.expect(RstStream) == RstStream(1, status)
    assert stream.is_reset
    conn.abort()


def test_a_session_window_overflow_gets_goaway() -> None:
    conn, peer, _ = serving_pair()
    peer.send(WindowUpdate(0, 0x7FFFFFFF))
    frames = peer.expect_eof()
    assert isinstance(frames[-1], GoAway)


def test_strict_receive_resets_a_stream_that_overruns_its_window() -> None:
    conn, peer, accepted = serving_pair(strict_receive=True)
    _open(peer, accepted)
    peer.send(DataFrame(1, b"o" * 65536), DataFrame(1, b"o"))
    assert peer.expect(RstStream) == RstStream(1, RstStatus.FLOW_CONTROL_ERROR)
    conn.abort()


def test_a_full_buffer_pushes_back_without_losing_data() -> None:
    conn, peer, accepted = serving_pair(max_buffer=10_000)
    stream = _open(peer, accepted)
    sender = threading.Thread(target=lambda: peer.send(*[DataFrame(1, bytes([i]) * 4000) for i in range(20)],
                                                       DataFrame(1, b"", spdy.FLAG_FIN)), daemon=True)
    sender.start()
    data = stream.readall(TIMEOUT)
    assert data == b"".join(bytes([i]) * 4000 for i in range(20))
    conn.abort()


# --- both ends ours -----------------------------------------------------------------------

def test_client_and_server_connections_talk() -> None:
    a, b = socket.socketpair()
    streams: list = []
    server = SpdyConnection(SocketTransport(a), server=True, on_stream=lambda s: streams.append(s) or True,
                            linger=1.0).start()
    client = SpdyConnection(SocketTransport(b), server=False, linger=1.0).start()
    stream = client.create_stream([("streamtype", "data"), ("port", "80")])
    assert stream.id == 1 and streams[0].header("port") == "80"
    stream.write(b"x" * 200_000)
    stream.close()
    assert streams[0].readall(TIMEOUT) == b"x" * 200_000
    streams[0].write(b"done")
    streams[0].close()
    assert stream.readall(TIMEOUT) == b"done"
    assert client.create_stream([("streamtype", "error")]).id == 3
    server.close()
    assert client.wait_closed(TIMEOUT) and server.wait_closed(TIMEOUT)
    with pytest.raises(BrokenPipeError):
        stream.write(b"after")


def test_a_client_stream_answered_just_before_the_end_still_reads_what_came() -> None:
    a, b = socket.socketpair()
    client = SpdyConnection(SocketTransport(a), server=False, linger=0.5).start()
    server = RawPeer(b)
    thread, result = in_thread(client.create_stream, [("streamtype", "stdout")])
    assert isinstance(server.expect(SynStream), SynStream)
    server.send(SynReply(1, []), DataFrame(1, b"all of it", spdy.FLAG_FIN), GoAway(1))
    server.sock.close()  # the connection may end before create_stream looks at its stream
    assert client.wait_closed(TIMEOUT)
    thread.join(TIMEOUT)
    assert result and result[0].readall(TIMEOUT) == b"all of it"


def test_a_client_stream_never_answered_raises_when_the_connection_ends() -> None:
    a, b = socket.socketpair()
    client = SpdyConnection(SocketTransport(a), server=False, linger=0.5).start()
    server = RawPeer(b)
    errors: list[BaseException] = []

    def create() -> None:
        try:
            client.create_stream([("streamtype", "stdout")])
        except OSError as exc:
            errors.append(exc)

    thread = threading.Thread(target=create, daemon=True)
    thread.start()
    assert isinstance(server.expect(SynStream), SynStream)
    server.sock.close()
    thread.join(TIMEOUT)
    assert len(errors) == 1 and isinstance(errors[0], BrokenPipeError)


def test_a_refused_client_stream_raises() -> None:
    a, b = socket.socketpair()
    server = SpdyConnection(SocketTransport(a), server=True, on_stream=lambda s: False).start()
    client = SpdyConnection(SocketTransport(b), server=False).start()
    with pytest.raises(StreamReset):
        client.create_stream([("streamtype", "x")])
    client.abort()
    server.abort()
