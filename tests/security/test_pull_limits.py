"""Oversized documents and decompression bombs.

A 600 MB image config peaked pycri at 4.5 GiB; a 2 MiB gzip layer unpacked to 2 GiB. Manifests
and indexes are capped at 4 MiB, configs at 8 MiB (by the descriptor's size before anything is
fetched, by Content-Length, and by what is read, whatever the server claims); indexes have at
most 1024 entries and one nested level; a layer's unpacked size and expansion ratio are
limited ([registry] max_layer_unpacked_bytes, max_layer_expansion_ratio). Each refusal is
RESOURCE_EXHAUSTED with the reason and leaves no blob, layer or ingest file behind.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any

from tests.e2e.conftest import Registries
from tests.e2e.harness import LoopbackServer, Pycri, QuietHandler
from tests.security.hostile import f, layer, push_image

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MiB = 1024 * 1024


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class FakeRegistry(LoopbackServer):
    """A loopback registry (in the test) serving documents as given, or streaming a body
    without Content-Length; it records what was asked and how many bytes it sent."""

    def __init__(self) -> None:
        self.documents: dict[str, tuple[str, bytes]] = {}  # path -> (content type, body)
        self.streams: dict[str, int] = {}  # path -> bytes to stream, chunked, no Content-Length
        self.requested: list[str] = []
        self.sent = 0
        registry = self

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                registry.requested.append(self.path)
                if self.path == "/v2/":
                    self._send(200, "application/json", b"{}")
                elif self.path in registry.documents:
                    self._send(200, *registry.documents[self.path])
                elif self.path in registry.streams:
                    self._stream(registry.streams[self.path])
                else:
                    self._send(404, "application/json", b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')

            def _send(self, code: int, content_type: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(OSError):
                    self.wfile.write(body)
                    registry.sent += len(body)

            def _stream(self, total: int) -> None:
                self.send_response(200)
                self.send_header("Content-Type", OCI_MANIFEST)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                chunk = b" " * MiB
                with contextlib.suppress(OSError):
                    for _ in range(total // MiB):
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        registry.sent += len(chunk)
                    self.wfile.write(b"0\r\n\r\n")
                self.close_connection = True

        super().__init__(Handler)

    @property
    def name(self) -> str:
        return f"{self.address}/evil/image"

    def manifest(self, ref: str, media_type: str, doc: dict[str, Any] | bytes) -> bytes:
        body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        self.documents[f"/v2/evil/image/manifests/{ref}"] = (media_type, body)
        return body

    def blob_path(self, blob_digest: str) -> str:
        return f"/v2/evil/image/blobs/{blob_digest}"


def daemon(tmp_path: Path, registry_keys: str = "") -> contextlib.AbstractContextManager[Pycri]:
    pycri = Pycri(tmp_path)
    if registry_keys:  # keys of the [registry] table the harness writes
        text = pycri.config.read_text()
        pycri.config.write_text(text.replace("timeout_seconds = 10\n", f"timeout_seconds = 10\n{registry_keys}"))
    return pycri.running()


def refused(pycri: Pycri, name: str, reason: str) -> None:
    result = pycri.crictl("pull", name, check=False)
    assert result.returncode != 0, f"{name} was pulled"
    assert "ResourceExhausted" in result.stderr, result.stderr
    assert reason in result.stderr, result.stderr
    assert pycri.blobs() == set()
    assert pycri.layer_dirs() == set()
    assert pycri.leftovers() == []


def config_doc(pad: int = 0) -> bytes:
    doc = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}, "pad": "x" * pad}
    return json.dumps(doc).encode()


def manifest_doc(config: bytes, config_size: int | None = None) -> dict[str, Any]:
    size = len(config) if config_size is None else config_size
    return {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": digest(config), "size": size}, "layers": []}


def test_oversized_documents_are_refused(tmp_path: Path, registries: Registries) -> None:
    with FakeRegistry() as fake, daemon(tmp_path) as pycri:
        # a config of 9 MiB, honestly declared: refused by its descriptor, never downloaded
        big = config_doc(pad=9 * MiB)
        fake.documents[fake.blob_path(digest(big))] = (OCI_CONFIG, big)
        fake.manifest("bigconfig", OCI_MANIFEST, manifest_doc(big))
        refused(pycri, f"{fake.name}:bigconfig", "image config")
        assert fake.blob_path(digest(big)) not in fake.requested

        # a config declared at 600 MB (the server would send what it likes): refused unfetched
        small = config_doc()
        fake.documents[fake.blob_path(digest(small))] = (OCI_CONFIG, small)
        fake.manifest("liar", OCI_MANIFEST, manifest_doc(small, config_size=600 * MiB))
        refused(pycri, f"{fake.name}:liar", "image config")
        assert fake.blob_path(digest(small)) not in fake.requested

        # a 5 MiB manifest with its Content-Length
        fake.manifest("bigmanifest", OCI_MANIFEST, b" " * (5 * MiB) + json.dumps(manifest_doc(small)).encode())
        refused(pycri, f"{fake.name}:bigmanifest", "larger than")

        # a 256 MiB manifest streamed without a length: reading stops at the cap
        fake.streams["/v2/evil/image/manifests/endless"] = 256 * MiB
        refused(pycri, f"{fake.name}:endless", "larger than")
        assert fake.sent < 64 * MiB


def test_index_fan_out_depth_and_declared_size_are_bounded(tmp_path: Path, registries: Registries) -> None:
    with FakeRegistry() as fake, daemon(tmp_path) as pycri:
        config = config_doc()
        fake.documents[fake.blob_path(digest(config))] = (OCI_CONFIG, config)
        manifest = fake.manifest(digest(json.dumps(manifest_doc(config)).encode()), OCI_MANIFEST, manifest_doc(config))
        amd64 = {"os": "linux", "architecture": "amd64"}
        entry = {"mediaType": OCI_MANIFEST, "digest": digest(manifest), "size": len(manifest), "platform": amd64}

        # 5000 entries (all for another platform but the last)
        other = dict(entry, platform={"os": "linux", "architecture": "s390x"})
        fake.manifest("wide", OCI_INDEX, {"schemaVersion": 2, "mediaType": OCI_INDEX,
                                          "manifests": [other] * 4999 + [entry]})
        refused(pycri, f"{fake.name}:wide", "at most 1024")

        # indexes nested four deep (an index may name one more index, no deeper)
        levels: list[dict[str, Any]] = [entry]
        for _ in range(3):
            body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [levels[-1]]}).encode()
            fake.manifest(digest(body), OCI_INDEX, body)
            levels.append({"mediaType": OCI_INDEX, "digest": digest(body), "size": len(body), "platform": amd64})
        fake.manifest("deep", OCI_INDEX, {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [levels[-1]]})
        refused(pycri, f"{fake.name}:deep", "nested")

        # an index entry that declares a 100 MiB manifest is not fetched
        fake.requested.clear()
        fake.manifest("hugeentry", OCI_INDEX, {"schemaVersion": 2, "mediaType": OCI_INDEX,
                                               "manifests": [dict(entry, size=100 * MiB)]})
        refused(pycri, f"{fake.name}:hugeentry", "pycri accepts at most")
        assert f"/v2/evil/image/manifests/{entry['digest']}" not in fake.requested

        # an index naming an index naming the manifest is pulled
        fake.manifest("nested", OCI_INDEX, {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [levels[1]]})
        pycri.crictl("pull", f"{fake.name}:nested")


def test_decompression_bomb_past_the_size_limit(tmp_path: Path, registries: Registries) -> None:
    image = push_image("bomb-size", layer("bomb-size", f("zeros", b"\0" * (24 * MiB))), busybox=False)
    with daemon(tmp_path, f"max_layer_unpacked_bytes = {8 * MiB}\nmax_layer_expansion_ratio = 0\n") as pycri:
        refused(pycri, image, "max_layer_unpacked_bytes")
        small = push_image("bomb-small", layer("bomb-small", f("zeros", b"\0" * MiB)), busybox=False)
        pycri.crictl("pull", small)  # under the limit: pulled


def test_decompression_bomb_past_the_ratio_limit(tmp_path: Path, registries: Registries) -> None:
    image = push_image("bomb-ratio", layer("bomb-ratio", f("zeros", b"\0" * (24 * MiB))), busybox=False)
    with daemon(tmp_path, "max_layer_expansion_ratio = 4\n") as pycri:
        refused(pycri, image, "decompression bomb")
        pycri.crictl("pull", "busybox")  # a real layer expands far less


def test_an_uncompressed_layer_does_not_hang_the_pull(tmp_path: Path, registries: Registries) -> None:
    """Reliability: an uncompressed layer's digest is its diff_id, and the pull took that key's
    lock twice: PullImage hung until the client's deadline, and later pulls of it for ever."""
    image = push_image("uncompressed", layer("uncompressed", f("hello", "hi"), compression="none"), busybox=False)
    with daemon(tmp_path) as pycri:
        pycri.crictl("pull", image, timeout=90)
        pycri.crictl("pull", image, timeout=90)  # again, with the layer present
        assert len(pycri.layer_dirs()) == 1
