"""Single-use tokens for streaming requests: what an Exec/Attach/PortForward RPC stored, found
again when the client connects to the URL. Like kubelet's request cache: random URL-safe tokens,
a time to live (60 s by default), a bound on how many wait at once."""
from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from pycri.common.errors import Unavailable

TOKEN_BYTES = 8


class TokenCache:
    """Thread-safe token -> request map; `consume` returns a request once, before it expires."""

    def __init__(self, ttl: float = 60.0, max_in_flight: int = 1000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._max = max_in_flight
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[float, Any]] = OrderedDict()

    def insert(self, request: Any) -> str:
        """Store request under a fresh token; Unavailable when too many are waiting."""
        with self._lock:
            self._expire()
            if len(self._entries) >= self._max:
                raise Unavailable("too many pending streaming requests")
            while (token := secrets.token_urlsafe(TOKEN_BYTES)) in self._entries:
                pass
            self._entries[token] = (self._clock() + self._ttl, request)
            return token

    def consume(self, token: str) -> Any | None:
        """The request stored under token (and forget it), or None if unknown or expired."""
        with self._lock:
            entry = self._entries.pop(token, None)
            if entry is None or entry[0] <= self._clock():
                return None
            return entry[1]

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._entries)

    def _expire(self) -> None:
        now = self._clock()
        while self._entries:
            token, (deadline, _) = next(iter(self._entries.items()))
            if deadline > now:
                break
            del self._entries[token]
