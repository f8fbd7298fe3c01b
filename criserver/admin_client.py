"""The client side of pycri.admin.v1.Images (criserver/admin_servicer.py), for the pycri
command: stream an image archive to the daemon, name an image."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import grpc

from pycri.criserver.admin_servicer import IMPORT_METHOD, TAG_METHOD

CHUNK = 1 << 20  # bytes per message; the daemon accepts up to 16 MiB


def _channel(socket_path: Path) -> grpc.Channel:
    return grpc.insecure_channel(f"unix:{socket_path}")


def _chunks(stream: IO[bytes]) -> Iterator[bytes]:
    while chunk := stream.read(CHUNK):
        yield chunk


def import_archive(socket_path: Path, stream: IO[bytes]) -> list[dict[str, Any]]:
    """Send the archive `stream` holds; the images imported (id, repo_tags, repo_digest).
    A refusal raises grpc.RpcError with the daemon's status and message."""
    with _channel(socket_path) as channel:
        call = channel.stream_unary(IMPORT_METHOD)
        reply = call(_chunks(stream), wait_for_ready=False)
    return list(json.loads(reply)["images"])


def tag(socket_path: Path, source: str, target: str, timeout: float = 60) -> str:
    """Name the image `source` denotes `target`; its id."""
    with _channel(socket_path) as channel:
        reply = channel.unary_unary(TAG_METHOD)(json.dumps({"source": source, "target": target}).encode(),
                                                timeout=timeout)
    return str(json.loads(reply)["id"])
