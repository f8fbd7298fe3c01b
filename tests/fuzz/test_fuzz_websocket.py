"""The WebSocket frame reader, the message connection and the Kubernetes channel demultiplexer
under random and mutated bytes: frames, "need more bytes" or a WebSocketError with a close code;
a connection fed garbage ends (Close sent, transport closed), never with another exception."""
from __future__ import annotations

import threading

from hypothesis import example, given, strategies as st

from pycri.streaming import channels, websocket
from pycri.streaming.websocket import FrameParser, WebSocketConnection, WebSocketError, encode_frame
from tests.fuzz.fakes import ScriptedTransport, mutate, split

CUTS = st.lists(st.integers(0, 10_000), max_size=8)
EDITS = st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6)
FRAMES = st.lists(st.tuples(st.sampled_from([0, 1, 2, 8, 9, 10, 3, 0xB]), st.binary(max_size=140), st.booleans(),
                            st.binary(min_size=4, max_size=4)), min_size=1, max_size=6)
PROTOCOLS = ["v5.channel.k8s.io", "v4.channel.k8s.io", "channel.k8s.io", "base64.channel.k8s.io",
             "v4.base64.channel.k8s.io", ""]


def encode(frames: list[tuple[int, bytes, bool, bytes]]) -> bytes:
    return b"".join(encode_frame(op, payload, fin=fin, mask=mask) for op, payload, fin, mask in frames)


def parse_all(chunks: list[bytes], server: bool = True) -> None:
    parser = FrameParser(server=server, max_frame=1 << 16)
    for chunk in chunks:
        parser.feed(chunk)
        try:
            while parser.next_frame() is not None:
                pass
        except WebSocketError as exc:
            assert 1000 <= exc.code <= 1011, exc.code
            return


@given(st.binary(max_size=512), CUTS, st.booleans())
@example(b"\x82\xff" + b"\xff" * 8, [], True)  # a 64-bit length with its top bit set
@example(b"\x89\xfe\x00\x7e", [], True)  # a long control frame
def test_random_bytes(data: bytes, cuts: list[int], server: bool) -> None:
    parse_all(split(data, cuts), server)


@given(FRAMES, EDITS, CUTS)
def test_mutated_frames(frames: list[tuple[int, bytes, bool, bytes]], edits: list[tuple[int, int]],
                        cuts: list[int]) -> None:
    parse_all(split(mutate(encode(frames), edits), cuts))


def run_connection(chunks: list[bytes], protocol: str) -> None:
    transport = ScriptedTransport(chunks)
    ws = WebSocketConnection(transport, server=True, max_message=1 << 16, linger=0.05)
    conn = channels.ChannelConnection(ws, protocol, readable={0, 4}, channels=5, max_buffer=1 << 20)
    failures: list[BaseException] = []
    original = ws.fail

    def fail(code: int, reason: str) -> None:
        if code == websocket.CloseCode.INTERNAL_ERROR:
            failures.append(AssertionError(reason))
        original(code, reason)

    ws.fail = fail  # type: ignore[method-assign]
    conn.start()
    assert conn.closed.wait(120), "the channel reader did not end after the peer's end of stream"
    conn._thread.join(120)
    assert not conn._thread.is_alive()
    assert not failures, failures
    for reader in conn.readers.values():  # what came is readable, then end of stream
        while reader.read(-1, timeout=60):
            pass


@given(st.binary(max_size=256), CUTS, st.sampled_from(PROTOCOLS))
def test_connection_random_bytes(data: bytes, cuts: list[int], protocol: str) -> None:
    run_connection(split(data, cuts), protocol)


@given(FRAMES, EDITS, CUTS, st.sampled_from(PROTOCOLS))
@example([(2, b"\xff\x07", True, b"abcd")], [], [], "v5.channel.k8s.io")  # CLOSE of a channel that is not there
@example([(1, b"0!!", True, b"abcd")], [], [], "base64.channel.k8s.io")  # bad base64
@example([(8, b"\x03", True, b"abcd")], [], [], "")  # Close with a 1-byte payload
def test_connection_mutated_frames(frames: list[tuple[int, bytes, bool, bytes]], edits: list[tuple[int, int]],
                                   cuts: list[int], protocol: str) -> None:
    run_connection(split(mutate(encode(frames), edits), cuts), protocol)


def test_no_threads_left() -> None:
    """The channel readers of the examples above all ended."""
    assert not [t for t in threading.enumerate() if t.name == "ws-channels" and t.is_alive()]
