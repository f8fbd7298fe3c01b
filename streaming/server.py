"""The CRI streaming server: the URLs the Exec/Attach/PortForward RPCs return, and the HTTP
server behind them, modelled on kubelet's (k8s.io/kubelet/pkg/cri/streaming).

    server = Server(backend, "127.0.0.1", 10350).start()
    url = server.get_exec_url(exec_request)   # http://127.0.0.1:10350/exec/<token>
    ...
    server.stop()

`get_*_url` validate the request (ours or the CRI message), store it under a single-use token
that expires after `token_ttl` seconds, and return the URL. A client then connects to
`/exec/<token>`, `/attach/<token>` or `/portforward/<token>` (GET or POST) and upgrades:

- SPDY: `Connection: Upgrade`, `Upgrade: SPDY/3.1`, and `X-Stream-Protocol-Version` offering
  `v5.channel.k8s.io` ... `channel.k8s.io` (exec, attach) or `portforward.k8s.io`; the answer is
  101 with the chosen version (400 without the header, 403 with `X-Accepted-Stream-Protocol-Versions`
  when none fits);
- WebSocket (RFC 6455): `Sec-WebSocket-Protocol` offering `v5.channel.k8s.io`,
  `v4.channel.k8s.io`, `v4.base64.channel.k8s.io`, `channel.k8s.io`, `base64.channel.k8s.io`
  (exec, attach), or `SPDY/3.1+portforward.k8s.io`, `v4.channel.k8s.io`,
  `v4.base64.channel.k8s.io` (port-forward).

An unknown, used or expired token gets 404. Each connection has its own thread; sessions idle
for `idle_timeout` seconds (no bytes either way) are cut, like kubelet's stream idle timeout.

Anyone who can reach the port can connect, so connections are bounded: at most
`max_connections` at a time, of which at most `max_pending` still before their upgrade (a
client has `head_timeout` seconds in all to send its request head, however slowly it trickles
in). A connection past either bound is answered 503 and closed at once by the accepting
thread, which starts no thread for it.
"""
from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import structlog

from pycri.streaming import portforward, remotecommand
from pycri.streaming.httpio import HttpError, Request, read_request, response
from pycri.streaming.interface import (
    AttachRequest, ExecRequest, PortForwardRequest, StreamBackend, attach_request, exec_request,
    port_forward_request,
)
from pycri.streaming.tokens import TokenCache
from pycri.streaming.transport import SocketTransport
from pycri.streaming.websocket import (
    HandshakeError, WebSocketByteStream, WebSocketConnection, handshake_response, negotiate,
)

log = structlog.get_logger("pycri.streaming")

HEAD_TIMEOUT = 10.0  # for the whole request head
MAX_CONNECTIONS = 512
MAX_PENDING = 64  # connections that have not sent their request head yet
REFUSAL_LOG_PERIOD = 10.0
ROUTES = {"exec": ExecRequest, "attach": AttachRequest, "portforward": PortForwardRequest}


class _Session(Protocol):
    last_activity: float

    def abort(self) -> None: ...


Register = Callable[[Any], None]
"""Called with each protocol session (SPDY or channel connection) a connection starts."""


def format_host(host: str) -> str:
    """host as it goes in a URL (IPv6 addresses in brackets)."""
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]"
    except ValueError:
        pass
    return host


class Server:
    """The streaming HTTP server and its token cache (see the module docstring)."""

    def __init__(self, backend: StreamBackend, address: str = "127.0.0.1", port: int = 0, *,
                 advertise_address: str | None = None, token_ttl: float = 60.0, max_in_flight: int = 1000,
                 creation_timeout: float = 30.0, idle_timeout: float = 4 * 3600.0,
                 max_connections: int = MAX_CONNECTIONS, max_pending: int = MAX_PENDING,
                 head_timeout: float = HEAD_TIMEOUT) -> None:
        self.backend = backend
        self.address = address
        self.port = port
        self.advertise_address = advertise_address
        self.creation_timeout = creation_timeout
        self.idle_timeout = idle_timeout
        self.tokens = TokenCache(token_ttl, max_in_flight)
        self.max_connections = max_connections
        self.max_pending = min(max_pending, max_connections)
        self.head_timeout = head_timeout
        self._pending = 0  # accepted connections whose request head has not been read
        self._refused = 0  # refused since the last warning
        self._refusal_logged = 0.0
        self._listener: socket.socket | None = None
        self._stopped = threading.Event()
        self._sessions: set[_Session] = set()
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> Server:
        """Listen and serve in background threads; returns self (the port is known now)."""
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        self._listener = socket.create_server((self.address, self.port), family=family, backlog=128)
        self.port = self._listener.getsockname()[1]
        for target, name in ((self._accept_loop, "streaming-accept"), (self._janitor, "streaming-janitor")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("streaming server listening", url=self.base_url)
        return self

    def stop(self) -> None:
        """Stop listening and cut every open session."""
        self._stopped.set()
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
        with self._lock:
            sessions, connections = list(self._sessions), list(self._connections)
        for session in sessions:
            session.abort()
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in self._threads:
            thread.join(5)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        host = self.advertise_address or self.address
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        return f"http://{format_host(host)}:{self.port}"

    # -- URLs ------------------------------------------------------------------------------

    def get_exec_url(self, request: Any) -> str:
        """Store an exec request (ours or a CRI ExecRequest) and return its URL."""
        return self._url("exec", exec_request(request))

    def get_attach_url(self, request: Any) -> str:
        """Store an attach request (ours or a CRI AttachRequest) and return its URL."""
        return self._url("attach", attach_request(request))

    def get_portforward_url(self, request: Any) -> str:
        """Store a port-forward request (ours or a CRI PortForwardRequest) and return its URL."""
        return self._url("portforward", port_forward_request(request))

    def _url(self, kind: str, request: object) -> str:
        return f"{self.base_url}/{kind}/{self.tokens.insert(request)}"

    # -- connections -----------------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopped.is_set():
            try:
                conn, peer = self._listener.accept()
            except OSError:
                if self._stopped.is_set():
                    return
                time.sleep(0.05)
                continue
            with self._lock:
                admitted = len(self._connections) < self.max_connections and self._pending < self.max_pending
                if admitted:
                    self._connections.add(conn)
                    self._pending += 1
            if not admitted:
                self._refuse(conn, peer)
                continue
            try:
                threading.Thread(target=self._serve_connection, args=(conn, peer), name="streaming-conn",
                                 daemon=True).start()
            except RuntimeError:  # no thread to be had
                with self._lock:
                    self._connections.discard(conn)
                    self._pending -= 1
                self._refuse(conn, peer)

    def _refuse(self, conn: socket.socket, peer: Any) -> None:
        """Answer 503 without blocking and close (past the connection bounds)."""
        try:
            conn.setblocking(False)
            conn.send(response(503, "too many streaming connections"))
        except OSError:
            pass
        finally:
            conn.close()
        now = time.monotonic()
        with self._lock:
            self._refused += 1
            if now - self._refusal_logged < REFUSAL_LOG_PERIOD:
                return
            refused, self._refused, self._refusal_logged = self._refused, 0, now
            open_now, pending = len(self._connections), self._pending
        log.warning("streaming connections refused: too many open", refused=refused, last_peer=str(peer),
                    open=open_now, pending=pending, max_connections=self.max_connections,
                    max_pending=self.max_pending)

    def _janitor(self) -> None:
        period = max(0.05, min(5.0, self.idle_timeout / 4))
        while not self._stopped.wait(period):
            now = time.monotonic()
            with self._lock:
                idle = [s for s in self._sessions if now - s.last_activity > self.idle_timeout]
            for session in idle:
                log.info("cutting an idle streaming session", idle_seconds=self.idle_timeout)
                session.abort()

    def _serve_connection(self, conn: socket.socket, peer: Any) -> None:
        mine: list[_Session] = []

        def register(session: _Session) -> None:
            mine.append(session)
            with self._lock:
                self._sessions.add(session)
            if self._stopped.is_set():
                session.abort()

        pending = True

        def head_read() -> None:
            nonlocal pending
            if pending:
                pending = False
                with self._lock:
                    self._pending -= 1

        try:
            try:
                request, rest = read_request(conn, deadline=time.monotonic() + self.head_timeout)
            except HttpError as exc:
                conn.settimeout(5.0)
                conn.sendall(response(exc.status, str(exc), exc.headers))
                return
            except TimeoutError:
                log.debug("closing a streaming connection that sent no request in time", peer=str(peer),
                          seconds=self.head_timeout)
                return
            finally:
                head_read()
            conn.settimeout(None)
            if conn.family in (socket.AF_INET, socket.AF_INET6):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                self._route(conn, request, rest, register)
            except HttpError as exc:
                log.info("streaming request refused", path=request.path, status=exc.status, reason=str(exc))
                conn.sendall(response(exc.status, str(exc), exc.headers))
        except OSError:
            pass
        except Exception:
            log.exception("streaming connection failed", peer=str(peer))
        finally:
            head_read()
            with self._lock:
                self._connections.discard(conn)
                self._sessions.difference_update(mine)
            try:
                conn.close()
            except OSError:
                pass

    def _route(self, conn: socket.socket, request: Request, rest: bytes, register: Register) -> None:
        parts = request.path.strip("/").split("/")
        if len(parts) != 2 or parts[0] not in ROUTES:
            raise HttpError(404, "404 page not found")
        if request.method not in ("GET", "POST"):
            raise HttpError(405, "method not allowed")
        stored = self.tokens.consume(parts[1])
        if not isinstance(stored, ROUTES[parts[0]]):
            raise HttpError(404, "404 page not found")
        upgrade = [item.lower() for item in request.header_list("Upgrade")]
        connection = [item.lower() for item in request.header_list("Connection")]
        if "upgrade" not in connection:
            raise HttpError(400, "unable to upgrade: missing upgrade headers in request")
        transport = SocketTransport(conn, rest)
        if "websocket" in upgrade:
            self._websocket(conn, request, transport, stored, register)
        elif any(item.startswith("spdy/3.1") for item in upgrade):
            self._spdy(conn, request, transport, stored, register)
        else:
            raise HttpError(400, "unable to upgrade: missing upgrade headers in request")

    def _spdy(self, conn: socket.socket, request: Request, transport: SocketTransport, stored: object,
              register: Register) -> None:
        supported = (portforward.PROTOCOL,) if isinstance(stored, PortForwardRequest) else remotecommand.SPDY_PROTOCOLS
        offered = request.header_list("X-Stream-Protocol-Version")
        if not offered:
            raise HttpError(400, "unable to upgrade: header X-Stream-Protocol-Version does not exist in request")
        chosen = next((p for p in offered if p in supported), None)
        if chosen is None:
            raise HttpError(403, f"unable to upgrade: unable to negotiate protocol: client supports {offered}, "
                                 f"server accepts {list(supported)}",
                            [("X-Accepted-Stream-Protocol-Versions", p) for p in supported])
        conn.sendall(response(101, headers=[("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"),
                                            ("X-Stream-Protocol-Version", chosen)]))
        log.info("streaming session", kind=type(stored).__name__, transport="spdy", protocol=chosen)
        if isinstance(stored, PortForwardRequest):
            portforward.serve_spdy(transport, stored.pod_id, self.backend, creation_timeout=self.creation_timeout,
                                   register=register)
        else:
            assert isinstance(stored, (ExecRequest, AttachRequest))
            remotecommand.serve_spdy(transport, stored, chosen, self.backend, creation_timeout=self.creation_timeout,
                                     register=register)

    def _websocket(self, conn: socket.socket, request: Request, transport: SocketTransport, stored: object,
                   register: Register) -> None:
        if isinstance(stored, PortForwardRequest):
            ports = list(stored.ports) or _query_ports(request)
            supported = [portforward.TUNNEL_PROTOCOL] + (list(portforward.WEBSOCKET_PROTOCOLS) if ports else [])
        else:
            supported = list(remotecommand.WEBSOCKET_PROTOCOLS)
        try:
            accept, protocol = negotiate(request.method, request.headers, supported)
        except HandshakeError as exc:
            raise HttpError(exc.status, str(exc), exc.headers) from None
        conn.sendall(handshake_response(accept, protocol))
        log.info("streaming session", kind=type(stored).__name__, transport="websocket", protocol=protocol or "-")
        ws = WebSocketConnection(transport, server=True)
        if isinstance(stored, PortForwardRequest):
            if protocol == portforward.TUNNEL_PROTOCOL:
                portforward.serve_spdy(WebSocketByteStream(ws), stored.pod_id, self.backend,
                                       creation_timeout=self.creation_timeout, register=register)
            else:
                portforward.serve_websocket(ws, protocol, stored.pod_id, ports, self.backend, register=register)
        else:
            assert isinstance(stored, (ExecRequest, AttachRequest))
            remotecommand.serve_websocket(ws, stored, protocol, self.backend, register=register)


def _query_ports(request: Request) -> list[int]:
    ports = []
    for value in request.query.get("port", []):
        for item in value.split(","):
            try:
                port = int(item)
            except ValueError:
                raise HttpError(400, f"unable to parse {item!r} as a port") from None
            if not 1 <= port <= 65535:
                raise HttpError(400, f"port {port} must be in 1-65535")
            ports.append(port)
    return ports
