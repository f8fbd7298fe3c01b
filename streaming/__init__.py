"""The CRI streaming server (exec, attach, port-forward), kubelet's protocols in Python.

A library, as kubelet's `pkg/cri/streaming` is for CRI-O and containerd: it imports nothing of
pycri but `common` (errors), and knows no containers or pods. The CRI server implements
`StreamBackend` (`interface`) and hands it to `Server` (pycri: `criserver/streaming_adapter.py`).

Module map (bottom up): `transport` (byte transports), `spdy` (SPDY/3.1 frames and header
compression), `spdy_conn` (SPDY connections and streams), `websocket` (RFC 6455), `channels`
(Kubernetes channel protocols over WebSocket), `httpio` (request heads), `tokens` (the token
cache), `interface` (the `StreamBackend` interface the CRI layer implements, the stream types it
is handed, and the stored requests), `remotecommand` (exec/attach protocol versions),
`portforward`, `server` (`Server`).
"""
from pycri.streaming.interface import (
    AttachRequest, DuplexStream, ExecRequest, InputStream, OutputStream, PortForwardRequest, StreamBackend,
    TerminalSize, forward_socket,
)
from pycri.streaming.server import Server

__all__ = ["AttachRequest", "DuplexStream", "ExecRequest", "InputStream", "OutputStream", "PortForwardRequest",
           "Server", "StreamBackend", "TerminalSize", "forward_socket"]
