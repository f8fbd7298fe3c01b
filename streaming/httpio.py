"""The little HTTP/1.1 the streaming server needs: read one request head from a socket (keeping
the bytes read past it), and write a plain response. Every streaming request is an upgrade or an
error, so there is no keep-alive and no request body."""
from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

MAX_HEAD = 64 * 1024
REASONS = {101: "Switching Protocols", 200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 426: "Upgrade Required", 431: "Request Header Fields Too Large",
           408: "Request Timeout", 500: "Internal Server Error", 503: "Service Unavailable"}


class HttpError(Exception):
    """Answer with this status and message, then close."""

    def __init__(self, status: int, message: str, headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or []


@dataclass
class Request:
    method: str
    target: str
    path: str
    query: dict[str, list[str]]
    version: str
    raw_headers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def headers(self) -> dict[str, str]:
        """Lowercase names; repeated headers joined with ", " (RFC 9110 5.3)."""
        joined: dict[str, str] = {}
        for name, value in self.raw_headers:
            key = name.lower()
            joined[key] = f"{joined[key]}, {value}" if key in joined else value
        return joined

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def header_list(self, name: str) -> list[str]:
        """Every comma-separated item of every `name` header, trimmed."""
        items: list[str] = []
        for key, value in self.raw_headers:
            if key.lower() == name.lower():
                items += [item.strip() for item in value.split(",") if item.strip()]
        return items


def read_request(sock: socket.socket, max_head: int = MAX_HEAD,
                 deadline: float | None = None) -> tuple[Request, bytes]:
    """Read a request head; return it and whatever was read past it. HttpError if malformed;
    TimeoutError when the whole head has not come by `deadline` (time.monotonic())."""
    buffer = b""
    while (end := buffer.find(b"\r\n\r\n")) < 0:
        if len(buffer) > max_head:
            raise HttpError(431, "request head too large")
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no whole request head in time")
            sock.settimeout(remaining)  # a byte now and then does not keep the connection
        chunk = sock.recv(8192)
        if not chunk:
            raise ConnectionError("connection closed before a whole request head")
        buffer += chunk
    if end > max_head:
        raise HttpError(431, "request head too large")
    head, rest = buffer[:end].decode("latin-1"), buffer[end + 4:]
    request_line, *lines = head.split("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise HttpError(400, f"bad request line {request_line[:100]!r}")
    method, target, version = parts
    headers = []
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or line[0] in " \t":
            raise HttpError(400, "bad header line")
        headers.append((name, value.strip()))
    split = urlsplit(target)
    return Request(method, target, unquote(split.path), parse_qs(split.query), version, headers), rest


def response(status: int, body: str = "", headers: list[tuple[str, str]] | None = None) -> bytes:
    """A complete response that closes the connection (or, for 101, hands it over)."""
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}"]
    lines += [f"{name}: {value}" for name, value in headers or []]
    payload = body.encode("utf-8")
    if status != 101:
        lines += ["Content-Type: text/plain; charset=utf-8", f"Content-Length: {len(payload)}", "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload
