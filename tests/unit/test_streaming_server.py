"""The streaming server end to end on loopback, with a fake backend, driven by SPDY and WebSocket
clients built on pycri's own framing: negotiation, every protocol version, exit codes, resizes,
attach, port-forward (SPDY, SPDY in WebSocket, WebSocket channels), tokens, timeouts."""
from __future__ import annotations

import json
import socket
import struct
import threading

import pytest

from pycri.common.errors import InvalidArgument
from pycri.streaming.interface import AttachRequest, ExecRequest, PortForwardRequest
from pycri.streaming.spdy_conn import SpdyConnection
from pycri.streaming.websocket import CloseCode, Opcode, WebSocketByteStream
from tests.unit.test_streaming_support import (  # noqa: F401 (bounded: autouse)
    TIMEOUT, FakeBackend, bounded, http_upgrade, running_server, spdy_client, spdy_exec, wait_until, ws_channel_data,
    ws_client, ws_messages, ws_read_channels,
)

SPDY_VERSIONS = ["v5.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io",
                 "channel.k8s.io"]


def exit_code_of(status: bytes) -> int:
    decoded = json.loads(status)
    if decoded["status"] == "Success":
        return 0
    assert decoded["reason"] == "NonZeroExitCode"
    (cause,) = decoded["details"]["causes"]
    assert cause["reason"] == "ExitCode"
    return int(cause["message"])


# --- URLs and negotiation ---------------------------------------------------------------------

def test_urls_carry_the_advertised_host_and_port() -> None:
    with running_server(advertise_address="10.1.2.3") as server:
        url = server.get_exec_url(ExecRequest("c1", ["ls"]))
        assert url.startswith(f"http://10.1.2.3:{server.port}/exec/")
        assert server.get_attach_url(AttachRequest("c1", stdin=True)).startswith(f"http://10.1.2.3:{server.port}/attach/")
        assert server.get_portforward_url(PortForwardRequest("p")).startswith(f"http://10.1.2.3:{server.port}/portforward/")
    with running_server() as server:
        assert server.get_exec_url(ExecRequest("c1", ["ls"])).startswith(f"http://127.0.0.1:{server.port}/exec/")
        with pytest.raises(InvalidArgument):
            server.get_exec_url(ExecRequest("c1", ["ls"], tty=True, stderr=True))


def test_ipv6_urls_have_brackets() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        server_ctx = running_server(address="::1")
        server = server_ctx.__enter__()
    except OSError:
        pytest.skip("no IPv6 loopback")
    try:
        url = server.get_exec_url(ExecRequest("c", ["echo", "six"]))
        assert url.startswith(f"http://[::1]:{server.port}/exec/")
        assert spdy_exec(url, "v4.channel.k8s.io")[0] == b"six\n"
    finally:
        server_ctx.__exit__(None, None, None)


@pytest.mark.parametrize("protocol", SPDY_VERSIONS)
def test_spdy_negotiates_the_clients_first_supported_version(protocol: str) -> None:
    with running_server() as server:
        url = server.get_exec_url(ExecRequest("c", ["echo", "hi"]))
        conn, chosen = spdy_client(url, ["v9.channel.k8s.io", protocol, "channel.k8s.io"])
        assert chosen == protocol
        conn.abort()


def test_spdy_refusals() -> None:
    with running_server() as server:
        spdy = [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")]
        status, headers, body, sock = http_upgrade(server.get_exec_url(ExecRequest("c", ["ls"])), spdy)
        assert status == 400 and b"X-Stream-Protocol-Version" in body
        status, headers, body, sock = http_upgrade(server.get_exec_url(ExecRequest("c", ["ls"])),
                                                   spdy + [("X-Stream-Protocol-Version", "v9.channel.k8s.io")])
        assert status == 403
        assert headers["x-accepted-stream-protocol-versions"] == SPDY_VERSIONS
        status, *_ = http_upgrade(server.get_portforward_url(PortForwardRequest("p")),
                                  spdy + [("X-Stream-Protocol-Version", "v4.channel.k8s.io")])
        assert status == 403
        status, *_ = http_upgrade(server.get_exec_url(ExecRequest("c", ["ls"])), [("Connection", "close")])
        assert status == 400
        status, *_ = http_upgrade(f"{server.base_url}/exec/unknown-token", spdy)
        assert status == 404
        status, *_ = http_upgrade(f"{server.base_url}/nothing/here", spdy)
        assert status == 404
        status, *_ = http_upgrade(server.get_exec_url(ExecRequest("c", ["ls"])), spdy, method="DELETE")
        assert status == 405


def test_a_token_is_for_its_own_route_and_for_one_use() -> None:
    with running_server() as server:
        url = server.get_exec_url(ExecRequest("c", ["echo", "once"]))
        token = url.rsplit("/", 1)[1]
        status, *_ = http_upgrade(f"{server.base_url}/attach/{token}", [("Connection", "Upgrade"),
                                                                        ("Upgrade", "SPDY/3.1")])
        assert status == 404  # consumed, and of the wrong kind anyway
        url = server.get_exec_url(ExecRequest("c", ["echo", "once"]))
        assert spdy_exec(url, "v4.channel.k8s.io")[0] == b"once\n"
        with pytest.raises(AssertionError):
            spdy_exec(url, "v4.channel.k8s.io")


def test_a_garbage_request_gets_400() -> None:
    with running_server() as server:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
        sock.sendall(b"HELLO\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 400 ")


# --- exec and attach over SPDY ----------------------------------------------------------------

@pytest.mark.parametrize("protocol", ["v5.channel.k8s.io", "v4.channel.k8s.io"])
def test_spdy_exec_exit_codes(protocol: str) -> None:
    with running_server() as server:
        out, err, status = spdy_exec(server.get_exec_url(ExecRequest("c", ["echo", "hello", "world"])), protocol)
        assert (out, err, exit_code_of(status)) == (b"hello world\n", b"", 0)
        out, err, status = spdy_exec(server.get_exec_url(ExecRequest("c", ["exit", "3"])), protocol)
        assert (out, exit_code_of(status)) == (b"", 3)
        out, err, status = spdy_exec(server.get_exec_url(ExecRequest("c", ["err", "oops"])), protocol)
        assert (out, err, exit_code_of(status)) == (b"", b"oops", 0)
        _, _, status = spdy_exec(server.get_exec_url(ExecRequest("c", ["fail"])), protocol)
        decoded = json.loads(status)
        assert decoded["reason"] == "InternalError"
        assert "error executing command in container: no such container" in decoded["message"]


@pytest.mark.parametrize("protocol", ["v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io"])
def test_spdy_exec_before_v4_reports_failures_as_text(protocol: str) -> None:
    with running_server() as server:
        assert spdy_exec(server.get_exec_url(ExecRequest("c", ["echo", "x"])), protocol) == (b"x\n", b"", b"")
        _, _, status = spdy_exec(server.get_exec_url(ExecRequest("c", ["exit", "7"])), protocol)
        assert status.startswith(b"command terminated with non-zero exit code") and status.endswith(b"exit code 7")


def test_spdy_exec_with_stdin_and_a_lot_of_output() -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    with running_server() as server:
        url = server.get_exec_url(ExecRequest("c", ["cat"], stdin=True))
        out, _, status = spdy_exec(url, "v5.channel.k8s.io", stdin=data)
        assert out == data and exit_code_of(status) == 0
        url = server.get_exec_url(ExecRequest("c", ["big", "5000000"]))
        out, _, _ = spdy_exec(url, "v4.channel.k8s.io")
        assert len(out) == 5_000_000


def test_spdy_exec_tty_sends_resizes() -> None:
    backend = FakeBackend()
    with running_server(backend) as server:
        url = server.get_exec_url(ExecRequest("c", ["sizes", "2"], tty=True, stdin=True, stderr=False))
        out, _, status = spdy_exec(url, "v4.channel.k8s.io", stdin=b"", tty=True, sizes=[(80, 24), (120, 40)])
        assert out == b"80x24\n120x40\n" and exit_code_of(status) == 0
    assert backend.calls == [("exec", ("c", ["sizes", "2"], True, True, True, False, True))]


def test_spdy_streams_the_request_did_not_ask_for_are_ignored() -> None:
    backend = FakeBackend()
    with running_server(backend) as server:
        url = server.get_exec_url(ExecRequest("c", ["echo", "x"], stdin=False))
        out, _, status = spdy_exec(url, "v4.channel.k8s.io", stdin=b"y" * 100_000)
        assert out == b"x\n" and exit_code_of(status) == 0
    assert backend.calls[0][1][3] is False  # the backend got no stdin


def test_spdy_streams_not_created_in_time_end_the_connection() -> None:
    with running_server(creation_timeout=0.5) as server:
        conn, _ = spdy_client(server.get_exec_url(ExecRequest("c", ["echo", "x"])), ["v4.channel.k8s.io"])
        conn.create_stream([("streamtype", "error")])  # no stdout stream
        assert conn.goaway_received.wait(TIMEOUT)
        assert conn.wait_closed(TIMEOUT)


def test_spdy_a_client_that_leaves_ends_the_session() -> None:
    backend = FakeBackend()
    with running_server(backend) as server:
        conn, _ = spdy_client(server.get_attach_url(AttachRequest("c", stdin=True)), ["v4.channel.k8s.io"])
        for kind in ("error", "stdin", "stdout", "stderr"):
            conn.create_stream([("streamtype", kind)])
        assert backend.called.wait(TIMEOUT)
        conn.abort()
        assert wait_until(lambda: not server._sessions)  # the attach saw EOF and returned


def test_spdy_attach_without_stdin_ends_when_the_client_leaves() -> None:
    backend = FakeBackend()
    with running_server(backend) as server:
        conn, _ = spdy_client(server.get_attach_url(AttachRequest("c")), ["v4.channel.k8s.io"])
        for kind in ("error", "stdout", "stderr"):
            conn.create_stream([("streamtype", kind)])
        assert wait_until(lambda: ("attach", "c") in backend.calls)
        assert ("attach gone", True) not in backend.calls
        conn.abort()
        assert wait_until(lambda: ("attach gone", True) in backend.calls)
        assert wait_until(lambda: not server._sessions)


def test_spdy_attach() -> None:
    with running_server() as server:
        url = server.get_attach_url(AttachRequest("c", stdin=True))
        out, err, status = spdy_exec(url, "v5.channel.k8s.io", stdin=b"typed\n")
        assert (out, err, exit_code_of(status)) == (b"typed\n", b"", 0)


# --- exec and attach over WebSocket -----------------------------------------------------------

def test_websocket_v5_exec() -> None:
    with running_server() as server:
        ws, protocol = ws_client(server.get_exec_url(ExecRequest("c", ["cat"], stdin=True)), ["v5.channel.k8s.io"])
        assert protocol == "v5.channel.k8s.io"
        reader = threading.Thread(target=lambda: result.extend(ws_messages(ws)), daemon=True)
        result: list = []
        reader.start()
        ws.send_binary(b"\x00hello ")
        ws.send_binary(b"\x00websocket")
        ws.send_binary(b"\xff\x00")  # CLOSE stdin
        reader.join(TIMEOUT)
        assert result[0].data == b"\x01"  # the empty message on stdout: the channels are ready
        channels = ws_channel_data(result)
        assert channels[1] == b"hello websocket"
        assert exit_code_of(channels[3]) == 0
        assert ws.close_code == CloseCode.NORMAL


@pytest.mark.parametrize("protocol", ["v4.channel.k8s.io", "channel.k8s.io"])
def test_websocket_exec_exit_code(protocol: str) -> None:
    with running_server() as server:
        ws, chosen = ws_client(server.get_exec_url(ExecRequest("c", ["exit", "42"])), [protocol])
        assert chosen == protocol
        channels = ws_channel_data(ws_messages(ws))
        if protocol.startswith("v4"):
            assert exit_code_of(channels[3]) == 42
        else:
            assert channels[3].endswith(b"exit code 42")


@pytest.mark.parametrize("protocol", ["v4.base64.channel.k8s.io", "base64.channel.k8s.io"])
def test_websocket_base64_exec(protocol: str) -> None:
    with running_server() as server:
        ws, _ = ws_client(server.get_exec_url(ExecRequest("c", ["echo", "b64"])), [protocol])
        messages = ws_messages(ws)
        assert all(m.opcode == Opcode.TEXT for m in messages)
        channels = ws_channel_data(messages, base64=True)
        assert channels[1] == b"b64\n"


def test_websocket_tty_resize_and_no_protocol() -> None:
    with running_server() as server:
        url = server.get_exec_url(ExecRequest("c", ["sizes", "1"], tty=True, stdin=True, stderr=False))
        ws, chosen = ws_client(url, [])
        assert chosen == ""
        ws.send_binary(b"\x04" + json.dumps({"Width": 90, "Height": 30}).encode())
        assert ws_channel_data(ws_messages(ws))[1] == b"90x30\n"


def test_websocket_unsupported_protocol_is_refused() -> None:
    with running_server() as server:
        url = server.get_exec_url(ExecRequest("c", ["ls"]))
        status, _, body, _ = http_upgrade(url, [("Connection", "Upgrade"), ("Upgrade", "websocket"),
                                                ("Sec-WebSocket-Version", "13"),
                                                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                                                ("Sec-WebSocket-Protocol", "chat")], method="GET")
        assert status == 403 and b"not supported" in body


def test_websocket_attach() -> None:
    with running_server() as server:
        ws, _ = ws_client(server.get_attach_url(AttachRequest("c", stdin=True)), ["v5.channel.k8s.io"])
        ws.send_binary(b"\x00echo me")
        ws.send_binary(b"\xff\x00")
        channels = ws_channel_data(ws_messages(ws))
        assert channels[1] == b"echo me" and exit_code_of(channels[3]) == 0


def test_websocket_attach_without_stdin_ends_when_the_client_leaves() -> None:
    backend = FakeBackend()
    with running_server(backend) as server:
        ws, _ = ws_client(server.get_attach_url(AttachRequest("c")), ["v5.channel.k8s.io"])
        assert wait_until(lambda: ("attach", "c") in backend.calls)
        assert ("attach gone", True) not in backend.calls
        ws.transport.close()
        assert wait_until(lambda: ("attach gone", True) in backend.calls)
        assert wait_until(lambda: not server._sessions)


# --- port-forward -----------------------------------------------------------------------------

def forward(conn: SpdyConnection, port: int, request_id: str, payload: bytes) -> tuple[bytes, bytes]:
    """One forwarded connection the way client-go makes it; returns (data back, error stream)."""
    headers = [("streamtype", "error"), ("port", str(port)), ("requestid", request_id)]
    error = conn.create_stream(headers)
    error.close()
    data = conn.create_stream([("streamtype", "data"), ("port", str(port)), ("requestid", request_id)])
    data.write(payload)
    data.close()
    back = data.readall(TIMEOUT)
    data.reset()
    return back, error.readall(TIMEOUT)


def test_spdy_port_forward() -> None:
    backend = FakeBackend()
    with running_server(backend) as server:
        conn, chosen = spdy_client(server.get_portforward_url(PortForwardRequest("pod1")), ["portforward.k8s.io"])
        assert chosen == "portforward.k8s.io"
        assert forward(conn, 80, "0", b"first") == (b"FIRST", b"")
        assert forward(conn, 8080, "1", b"second" * 10000) == (b"SECOND" * 10000, b"")
        back, error = forward(conn, 666, "2", b"x")
        assert back == b"" and error == b"error forwarding port 666 to pod pod1, uid : connection refused"
        conn.close()
    assert [c for c in backend.calls] == [("port_forward", ("pod1", 80)), ("port_forward", ("pod1", 8080)),
                                          ("port_forward", ("pod1", 666))]


def test_spdy_port_forward_concurrent_connections_and_bad_streams() -> None:
    with running_server() as server:
        conn, _ = spdy_client(server.get_portforward_url(PortForwardRequest("pod1")), ["portforward.k8s.io"])
        results: list = [None] * 5
        threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, forward(conn, 80 + i, str(i), b"c%d" % i)))
                   for i in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT)
        assert results == [(b"C%d" % i, b"") for i in range(5)]
        with pytest.raises(ConnectionResetError):
            conn.create_stream([("streamtype", "data"), ("port", "0"), ("requestid", "9")])
        with pytest.raises(ConnectionResetError):
            conn.create_stream([("streamtype", "stdin"), ("port", "80"), ("requestid", "9")])
        conn.close()


def test_spdy_port_forward_pairs_of_old_clients_by_stream_id() -> None:
    with running_server() as server:
        conn, _ = spdy_client(server.get_portforward_url(PortForwardRequest("pod1")), ["portforward.k8s.io"])
        error = conn.create_stream([("streamtype", "error"), ("port", "80")])
        data = conn.create_stream([("streamtype", "data"), ("port", "80")])
        data.write(b"old")
        data.close()
        assert data.readall(TIMEOUT) == b"OLD"
        assert error.readall(TIMEOUT) == b""
        conn.close()


def test_spdy_port_forward_half_pairs_time_out() -> None:
    with running_server(creation_timeout=0.3) as server:
        conn, _ = spdy_client(server.get_portforward_url(PortForwardRequest("pod1")), ["portforward.k8s.io"])
        error = conn.create_stream([("streamtype", "error"), ("port", "80"), ("requestid", "0")])
        error.close()  # as client-go does: it writes nothing on the error stream
        try:
            data = conn.create_stream([("streamtype", "data"), ("port", "80"), ("requestid", "1")])
            assert data.readall(TIMEOUT) == b"" and data.is_reset  # a lone data stream is reset
        except ConnectionResetError:  # the reset came before create_stream saw the SYN_REPLY
            pass
        # the message, then FIN (a reset could make the client lose the message)
        assert error.readall(TIMEOUT) == b"timed out waiting for streams of request 0"
        assert not error.is_reset
        assert forward(conn, 80, "2", b"still fine") == (b"STILL FINE", b"")
        conn.close()


def test_spdy_port_forward_a_connection_reset_by_the_pod_resets_both_streams() -> None:
    with running_server() as server:
        conn, _ = spdy_client(server.get_portforward_url(PortForwardRequest("pod1")), ["portforward.k8s.io"])
        error = conn.create_stream([("streamtype", "error"), ("port", "667"), ("requestid", "0")])
        error.close()
        try:
            data = conn.create_stream([("streamtype", "data"), ("port", "667"), ("requestid", "0")])
            assert data.readall(TIMEOUT) == b"" and data.is_reset
        except ConnectionResetError:  # the reset came before create_stream saw the SYN_REPLY
            pass
        assert error.readall(TIMEOUT) == b"" and error.is_reset  # nothing reported, both reset (kubelet)
        assert forward(conn, 80, "1", b"next") == (b"NEXT", b"")  # the session goes on
        conn.close()


def test_spdy_port_forward_a_client_that_sends_to_a_failed_port_does_not_stall_the_session() -> None:
    with running_server() as server:
        conn, _ = spdy_client(server.get_portforward_url(PortForwardRequest("pod1")), ["portforward.k8s.io"])
        back, error = forward(conn, 666, "0", b"x" * 6_000_000)  # more than a stream buffers
        assert back == b"" and error.startswith(b"error forwarding port 666")
        assert forward(conn, 80, "1", b"after") == (b"AFTER", b"")
        conn.close()


def test_spdy_port_forward_a_second_stream_of_a_kind_is_reset_and_reported() -> None:
    with running_server() as server:
        conn, _ = spdy_client(server.get_portforward_url(PortForwardRequest("pod1")), ["portforward.k8s.io"])
        headers = [("port", "80"), ("requestid", "7")]
        error = conn.create_stream([("streamtype", "error"), *headers])
        error.close()
        try:  # accepted, then reset (the reset may come before create_stream returns)
            again = conn.create_stream([("streamtype", "error"), *headers])
            assert again.readall(TIMEOUT) == b"" and again.is_reset
        except ConnectionResetError:
            pass
        data = conn.create_stream([("streamtype", "data"), *headers])  # the pair is complete: it runs
        data.write(b"x")
        data.close()
        assert data.readall(TIMEOUT) == b"X"
        assert error.readall(TIMEOUT) == b"error processing stream for request 7: error stream already assigned"
        conn.close()


def test_spdy_in_websocket_port_forward() -> None:
    with running_server() as server:
        ws, chosen = ws_client(server.get_portforward_url(PortForwardRequest("pod1")),
                               ["SPDY/3.1+portforward.k8s.io"])
        assert chosen == "SPDY/3.1+portforward.k8s.io"
        conn = SpdyConnection(WebSocketByteStream(ws), server=False, linger=1.0).start()
        assert forward(conn, 80, "0", b"tunnelled" * 50000) == (b"TUNNELLED" * 50000, b"")
        assert conn.ping(TIMEOUT) >= 0
        conn.close()
        assert conn.wait_closed(TIMEOUT)


def test_websocket_channel_port_forward() -> None:
    port80, port666 = struct.pack("<H", 80), struct.pack("<H", 666)
    failure = b"error forwarding port 666 to pod pod1, uid : connection refused"
    with running_server() as server:
        url = server.get_portforward_url(PortForwardRequest("pod1", [80, 666]))
        ws, chosen = ws_client(url, ["v4.channel.k8s.io"])
        assert chosen == "v4.channel.k8s.io"
        ws.send_binary(b"\x00to port eighty")
        want = {0: port80 + b"TO PORT EIGHTY", 1: port80, 2: port666, 3: port666 + failure}
        assert ws_read_channels(ws, want) == want
        for _ in range(5):  # for the port that failed: dropped (more than a channel buffers, no stall)
            ws.send_binary(b"\x02" + b"x" * (1 << 20))
        ws.send_binary(b"\x00again")  # port 80 goes on
        assert ws_read_channels(ws, {0: b"AGAIN"}) == {0: b"AGAIN"}
        ws.send_close()  # v4 has no half-close: closing ends port 80's connection; the server closes
        assert ws_messages(ws) == [] and ws.close_code == CloseCode.NORMAL


def test_websocket_channel_port_forward_needs_ports() -> None:
    with running_server() as server:
        url = server.get_portforward_url(PortForwardRequest("pod1"))
        status, *_ = http_upgrade(url, [("Connection", "Upgrade"), ("Upgrade", "websocket"),
                                        ("Sec-WebSocket-Version", "13"), ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                                        ("Sec-WebSocket-Protocol", "v4.channel.k8s.io")], method="GET")
        assert status == 403  # no ports: only the SPDY tunnel is offered
        ws, _ = ws_client(server.get_portforward_url(PortForwardRequest("pod1")) + "?port=81", ["v4.channel.k8s.io"])
        ws.send_binary(b"\x00q")
        prefix = struct.pack("<H", 81)
        assert ws_read_channels(ws, {0: prefix + b"Q", 1: prefix}) == {0: prefix + b"Q", 1: prefix}
        ws.send_close()
        assert ws_messages(ws) == [] and ws.close_code == CloseCode.NORMAL


def test_websocket_channel_port_forward_bad_port_query() -> None:
    with running_server() as server:
        for query in ("?port=x", "?port=0", "?port=70000"):
            url = server.get_portforward_url(PortForwardRequest("pod1")) + query
            status, *_ = http_upgrade(url, [("Connection", "Upgrade"), ("Upgrade", "websocket"),
                                            ("Sec-WebSocket-Version", "13"),
                                            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                                            ("Sec-WebSocket-Protocol", "v4.channel.k8s.io")], method="GET")
            assert status == 400, query


# --- life cycle -------------------------------------------------------------------------------

def test_idle_sessions_are_cut() -> None:
    with running_server(idle_timeout=0.3) as server:
        conn, _ = spdy_client(server.get_portforward_url(PortForwardRequest("pod1")), ["portforward.k8s.io"])
        assert conn.wait_closed(TIMEOUT)


def test_stop_cuts_open_sessions() -> None:
    server_ctx = running_server()
    server = server_ctx.__enter__()
    conn, _ = spdy_client(server.get_portforward_url(PortForwardRequest("pod1")), ["portforward.k8s.io"])
    server_ctx.__exit__(None, None, None)
    assert conn.wait_closed(TIMEOUT)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1)


# --- connection bounds ------------------------------------------------------------------------

def _read_all(sock: socket.socket) -> bytes:
    sock.settimeout(TIMEOUT)
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def test_connections_past_the_pending_bound_get_503_and_no_thread() -> None:
    with running_server(max_pending=3, head_timeout=60) as server:
        idle = [socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) for _ in range(3)]
        assert wait_until(lambda: server._pending == 3)
        threads = threading.active_count()
        extra = [socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) for _ in range(20)]
        for sock in extra:
            assert _read_all(sock).startswith(b"HTTP/1.1 503 ")
            sock.close()
        assert threading.active_count() <= threads
        # an idle connection that leaves frees its place: a real client gets through
        idle.pop().close()
        assert wait_until(lambda: server._pending == 2)
        assert spdy_exec(server.get_exec_url(ExecRequest("c", ["echo", "hi"])), "v4.channel.k8s.io")[0] == b"hi\n"
        for sock in idle:
            sock.close()


def test_connections_past_the_total_bound_get_503() -> None:
    with running_server(max_connections=2, max_pending=10, head_timeout=60) as server:
        idle = [socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) for _ in range(2)]
        assert wait_until(lambda: len(server._connections) == 2)
        extra = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
        assert _read_all(extra).startswith(b"HTTP/1.1 503 ")
        for sock in idle:
            sock.close()


def test_a_request_head_must_come_whole_before_the_deadline() -> None:
    with running_server(head_timeout=0.5) as server:
        silent = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
        assert _read_all(silent) == b""  # closed by the server
        trickle = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
        trickle.settimeout(0.1)
        closed = False
        for _ in range(int(TIMEOUT / 0.1)):  # a byte every 0.1 s never finishes the head
            try:
                trickle.sendall(b"G")
                if trickle.recv(1) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except OSError:
                closed = True
                break
        assert closed
        assert wait_until(lambda: server._pending == 0 and not server._connections)
