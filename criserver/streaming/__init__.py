"""The CRI streaming server (exec, attach, port-forward), kubelet's protocols in Python.

Module map (bottom up): `transport` (byte transports), `spdy` (SPDY/3.1 frames and header
compression), `spdy_conn` (SPDY connections and streams), `websocket` (RFC 6455), `channels`
(Kubernetes channel protocols over WebSocket), `httpio` (request heads), `tokens` (the token
cache), `backend` (the `StreamBackend` interface the CRI layer implements, and the stored
requests), `remotecommand` (exec/attach protocol versions), `portforward`, `server` (`Server`).
"""
from pycri.criserver.streaming.backend import (
    AttachRequest, DuplexStream, ExecRequest, InputStream, OutputStream, PortForwardRequest, StreamBackend,
    TerminalSize, forward_socket,
)
from pycri.criserver.streaming.server import Server

__all__ = ["AttachRequest", "DuplexStream", "ExecRequest", "InputStream", "OutputStream", "PortForwardRequest",
           "Server", "StreamBackend", "TerminalSize", "forward_socket"]
