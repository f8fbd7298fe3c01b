"""The token cache (single use, expiry, a bound on pending requests) and the request checks."""
from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from pycri.common.errors import InvalidArgument, Unavailable
from pycri.streaming.interface import (
    AttachRequest, ExecRequest, PortForwardRequest, attach_request, exec_request, port_forward_request,
)
from pycri.streaming.tokens import TokenCache


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_token_is_used_once() -> None:
    cache = TokenCache()
    token = cache.insert("request")
    assert re.fullmatch(r"[A-Za-z0-9_-]{11}", token)
    assert cache.consume(token) == "request"
    assert cache.consume(token) is None
    assert cache.consume("never-issued") is None


def test_tokens_expire() -> None:
    clock = Clock()
    cache = TokenCache(ttl=60, clock=clock)
    early, late = cache.insert("a"), None
    clock.now += 30
    late = cache.insert("b")
    clock.now += 30
    assert cache.consume(early) is None
    assert len(cache) == 1
    assert cache.consume(late) == "b"


def test_pending_requests_are_bounded() -> None:
    clock = Clock()
    cache = TokenCache(ttl=10, max_in_flight=2, clock=clock)
    cache.insert(1), cache.insert(2)
    with pytest.raises(Unavailable):
        cache.insert(3)
    clock.now += 11  # expired ones make room
    assert cache.consume(cache.insert(4)) == 4


def test_tokens_differ() -> None:
    cache = TokenCache()
    assert len({cache.insert(i) for i in range(200)}) == 200


def test_requests_from_cri_messages() -> None:
    cri = SimpleNamespace(container_id="c1", cmd=["sh"], tty=True, stdin=True, stdout=True, stderr=False)
    assert exec_request(cri) == ExecRequest("c1", ["sh"], True, True, True, False)
    attach = SimpleNamespace(container_id="c1", tty=False, stdin=True, stdout=True, stderr=True)
    assert attach_request(attach) == AttachRequest("c1", False, True, True, True)
    assert port_forward_request(SimpleNamespace(pod_sandbox_id="p", port=[80])) == PortForwardRequest("p", [80])


@pytest.mark.parametrize("request_, message", [
    (ExecRequest("", ["sh"]), "container_id"),
    (ExecRequest("c", []), "cmd"),
    (ExecRequest("c", ["sh"], tty=True, stderr=True), "tty and stderr"),
    (ExecRequest("c", ["sh"], stdin=False, stdout=False, stderr=False), "one of stdin"),
])
def test_bad_exec_requests(request_: ExecRequest, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        exec_request(request_)


def test_bad_port_forward_requests() -> None:
    with pytest.raises(InvalidArgument, match="pod_sandbox_id"):
        port_forward_request(PortForwardRequest(""))
    with pytest.raises(InvalidArgument, match="invalid port"):
        port_forward_request(PortForwardRequest("p", [70000]))
