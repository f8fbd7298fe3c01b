"""Credentials sent to the wrong host (CVE-2020-15157 class).

Registry credentials given for one server (CRI AuthConfig, with or without server_address)
were sent to an unrelated plain-HTTP mirror when it answered 401. They go only to the host
they were issued for now; neither a mirror on another host, nor a token realm on another host
over plain http, nor the target of a cross-host redirect gets them.
"""
from __future__ import annotations

import base64
import contextlib
import http.server
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from pycri.api.cri import api_pb2 as cri
from pycri.api.cri import api_pb2_grpc
from tests.e2e.conftest import Registries
from tests.e2e.harness import LoopbackServer, Pycri, QuietHandler
from tests.security.hostile import push_image

Handler = Callable[[http.server.BaseHTTPRequestHandler], None]


class Recorder(LoopbackServer):
    """A loopback HTTP server (in the test) that records the Authorization header of every request."""

    def __init__(self, respond: Handler) -> None:
        self.authorizations: list[str] = []
        self.paths: list[str] = []
        recorder = self

        class RequestHandler(QuietHandler):
            def do_GET(self) -> None:  # noqa: N802
                recorder.paths.append(self.path)
                if self.headers.get("Authorization"):
                    recorder.authorizations.append(self.headers["Authorization"])
                respond(self)

            do_HEAD = do_POST = do_GET  # noqa: N815

        super().__init__(RequestHandler)


def _answer(handler: http.server.BaseHTTPRequestHandler, code: int, headers: dict[str, str], body: bytes = b"") -> None:
    handler.send_response(code)
    for key, value in headers.items():
        handler.send_header(key, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)


def basic_challenge(handler: http.server.BaseHTTPRequestHandler) -> None:
    _answer(handler, 401, {"WWW-Authenticate": 'Basic realm="mirror"', "Content-Type": "application/json"},
            b'{"errors":[{"code":"UNAUTHORIZED"}]}')


def daemon(tmp_path: Path, extra: str = "") -> contextlib.AbstractContextManager[Pycri]:
    return Pycri(tmp_path, extra_config=extra).running()


def test_mirror_on_another_host_gets_no_credentials(tmp_path: Path, registries: Registries) -> None:
    push_image("creds")
    name = f"{registries.basic}/docker.io/pycri-attack/creds:latest"
    with Recorder(basic_challenge) as mirror, \
            daemon(tmp_path, f'"{registries.basic}" = ["http://127.0.0.1:{mirror.port}"]\n') as pycri:
        # crictl --creds: credentials without a server_address, for the registry of the name
        pycri.crictl("pull", "--creds", registries.basic_creds, name)
        # CRI AuthConfig naming its server explicitly, as kubelet sends it
        image_stub = api_pb2_grpc.ImageServiceStub(grpc.insecure_channel(f"unix://{pycri.socket}"))
        user, _, password = registries.basic_creds.partition(":")
        pycri.crictl("rmi", name)
        image_stub.PullImage(cri.PullImageRequest(
            image=cri.ImageSpec(image=name),
            auth=cri.AuthConfig(username=user, password=password, server_address=registries.basic)))
        assert mirror.paths, "the mirror was never asked"
        assert mirror.authorizations == []
        # credentials issued for another server go to neither
        pycri.crictl("rmi", name)
        with pytest.raises(grpc.RpcError) as denied:
            image_stub.PullImage(cri.PullImageRequest(
                image=cri.ImageSpec(image=name),
                auth=cri.AuthConfig(username=user, password=password, server_address="elsewhere.example:443")))
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert mirror.authorizations == []


def test_token_realm_on_another_host_over_http_gets_no_credentials(tmp_path: Path, registries: Registries) -> None:
    with Recorder(lambda h: _answer(h, 200, {"Content-Type": "application/json"}, b'{"token":"t"}')) as realm:
        def bearer(handler: http.server.BaseHTTPRequestHandler) -> None:
            _answer(handler, 401, {"WWW-Authenticate":
                                   f'Bearer realm="http://localhost:{realm.port}/token",service="s"'})

        with Recorder(bearer) as registry, daemon(tmp_path) as pycri:
            result = pycri.crictl("pull", "--creds", "user:secret", f"127.0.0.1:{registry.port}/x/y:latest",
                                  check=False)
            assert result.returncode != 0
            assert realm.authorizations == []
            assert "PermissionDenied" in result.stderr or "token server" in result.stderr


def test_redirect_to_another_host_gets_no_credentials(tmp_path: Path, registries: Registries) -> None:
    expected = "Basic " + base64.b64encode(b"user:secret").decode()
    with Recorder(lambda h: _answer(h, 404, {})) as elsewhere:
        def redirecting(handler: http.server.BaseHTTPRequestHandler) -> None:
            if handler.headers.get("Authorization") != expected:
                basic_challenge(handler)
            else:
                _answer(handler, 307, {"Location": f"http://localhost:{elsewhere.port}{handler.path}"})

        with Recorder(redirecting) as registry, daemon(tmp_path) as pycri:
            result = pycri.crictl("pull", "--creds", "user:secret", f"127.0.0.1:{registry.port}/x/y:latest",
                                  check=False)
            assert result.returncode != 0
            assert registry.authorizations and elsewhere.paths
            assert elsewhere.authorizations == []
