"""pycri.admin.v1.Images over a real gRPC server on a unix socket (criserver/admin_servicer.py,
criserver/admin_client.py): an archive streamed in chunks is imported, a bad one is
INVALID_ARGUMENT with nothing left behind, a client that gives up mid-stream leaves no spool,
Tag names an image; and `pycri images` prints what the daemon answers."""
from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from pycri.criserver import admin_client, admin_servicer, cli
from pycri.criserver.errors import CallInterceptor
from pycri.images.config import RegistryConfig
from pycri.images.service import ImageService
from pycri.store.db import Database
from tests.unit.test_image_archive import LAYER_A, Tar, assert_nothing_left, docker_save, sha


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ImageService, Path]]:
    db = Database(tmp_path / "db.sqlite")
    service = ImageService(db, tmp_path / "images", RegistryConfig())
    server = grpc.server(ThreadPoolExecutor(max_workers=4), interceptors=[CallInterceptor()])
    server.add_generic_rpc_handlers((admin_servicer.handler(service),))
    socket = tmp_path / "admin.sock"
    server.add_insecure_port(f"unix:{socket}")
    server.start()
    yield service, socket
    server.stop(0).wait()
    db.close()


def test_import_and_tag(served: tuple[ImageService, Path]) -> None:
    service, socket = served
    data = docker_save(Tar(), [([LAYER_A], ["hello:1"])]).bytes()
    [image] = admin_client.import_archive(socket, io.BytesIO(data))
    assert image["id"] == service.get("hello:1").id
    assert image["repo_tags"] == ["docker.io/library/hello:1"]
    assert admin_client.tag(socket, image["id"], "example.com/hello:2") == image["id"]
    assert service.get("example.com/hello:2").id == image["id"]


def test_a_bad_archive_is_invalid_argument(served: tuple[ImageService, Path]) -> None:
    service, socket = served
    tar = Tar().file("c.json", b"{}").file("l/layer.tar", LAYER_A)
    tar.json("manifest.json", [{"Config": "c.json", "RepoTags": ["x:1"], "Layers": ["l/layer.tar"]}])
    with pytest.raises(grpc.RpcError) as raised:
        admin_client.import_archive(socket, io.BytesIO(tar.bytes()))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "diff_ids" in raised.value.details()  # type: ignore[attr-defined]
    assert_nothing_left(service)


@pytest.mark.parametrize("request_bytes,code", [
    (b"not json", grpc.StatusCode.INVALID_ARGUMENT),
    (b'{"source": "x"}', grpc.StatusCode.INVALID_ARGUMENT),
    (b'{"source": "absent:1", "target": "y:1"}', grpc.StatusCode.NOT_FOUND),
    (b"x" * 5000, grpc.StatusCode.INVALID_ARGUMENT),
])
def test_bad_tag_requests(served: tuple[ImageService, Path], request_bytes: bytes, code: grpc.StatusCode) -> None:
    _, socket = served
    with grpc.insecure_channel(f"unix:{socket}") as channel, pytest.raises(grpc.RpcError) as raised:
        channel.unary_unary(admin_servicer.TAG_METHOD)(request_bytes, timeout=10)
    assert raised.value.code() == code  # type: ignore[attr-defined]


def test_a_client_that_gives_up_leaves_no_spool(served: tuple[ImageService, Path]) -> None:
    service, socket = served
    sent = threading.Event()

    def chunks() -> Iterator[bytes]:
        yield b"\0" * 4096
        sent.set()
        time.sleep(30)  # the client cancels meanwhile
        yield b""

    with grpc.insecure_channel(f"unix:{socket}") as channel:
        future = channel.stream_unary(admin_servicer.IMPORT_METHOD).future(chunks())
        assert sent.wait(10)
        deadline = time.monotonic() + 10
        while not os.listdir(service.content.ingest_dir):  # the spool exists once the first chunk arrived
            assert time.monotonic() < deadline
            time.sleep(0.05)
        future.cancel()
    deadline = time.monotonic() + 30
    while os.listdir(service.content.ingest_dir):
        assert time.monotonic() < deadline, "the spool of a cancelled import stayed"
        time.sleep(0.05)
    assert service.list() == []


def test_the_cli_prints_the_images_and_fails_with_the_daemons_message(
        served: tuple[ImageService, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    service, socket = served
    config = tmp_path / "pycri.toml"
    config.write_text(f'listen = "unix://{socket}"\nroot = "{tmp_path / "root"}"\nstate = "{tmp_path / "run"}"\n')
    good = tmp_path / "good.tar"
    good.write_bytes(docker_save(Tar(), [([LAYER_A], ["hello:1"])]).bytes())
    assert cli.main(["--config", str(config), "images", "import", str(good)]) == 0
    # (the daemon's log lines go to the same stdout here: it runs in this process)
    assert f"imported {service.get('hello:1').id} docker.io/library/hello:1\n" in capsys.readouterr().out
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"garbage" * 100)
    assert cli.main(["--config", str(config), "images", "import", str(bad)]) == 1
    assert "failed (INVALID_ARGUMENT): the image archive is not a tar file" in capsys.readouterr().err
    assert cli.main(["--config", str(config), "images", "tag", sha(b"none"), "x:1"]) == 1
    assert "failed (NOT_FOUND)" in capsys.readouterr().err
    assert cli.main(["--config", str(config), "images", "import", str(tmp_path / "absent.tar")]) == 1
    assert "absent.tar" in capsys.readouterr().err


def test_an_import_under_way_is_a_call_the_daemons_stop_waits_for(tmp_path: Path) -> None:
    """Daemon.stop waits (CallInterceptor.wait_idle) before it closes the database: a
    client-streaming Import must count, or a stop during `kind load` closes the store under it."""
    db = Database(tmp_path / "db.sqlite")
    service = ImageService(db, tmp_path / "images", RegistryConfig())
    calls = CallInterceptor()
    server = grpc.server(ThreadPoolExecutor(max_workers=4), interceptors=[calls])
    server.add_generic_rpc_handlers((admin_servicer.handler(service),))
    socket = tmp_path / "admin.sock"
    server.add_insecure_port(f"unix:{socket}")
    server.start()
    release = threading.Event()
    data = docker_save(Tar(), [([LAYER_A], ["hello:1"])]).bytes()

    def chunks() -> Iterator[bytes]:
        yield data[:4096]
        release.wait(60)  # the call stays under way until the test lets it finish
        yield data[4096:]

    try:
        with grpc.insecure_channel(f"unix:{socket}") as channel:
            future = channel.stream_unary(admin_servicer.IMPORT_METHOD).future(chunks())
            deadline = time.monotonic() + 30
            while calls.wait_idle(0):  # until the server is inside the call
                assert time.monotonic() < deadline, "the Import was never counted as under way"
                time.sleep(0.05)
            release.set()
            future.result(timeout=60)
        assert calls.wait_idle(30)
        assert service.get("hello:1")
    finally:
        release.set()
        server.stop(0).wait()
        db.close()
