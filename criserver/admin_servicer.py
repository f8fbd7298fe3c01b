"""pycri's own calls, served on the CRI socket beside CRI: `pycri images import` streams an
image archive to the daemon (which alone writes the image store, under its locks), and
`pycri images tag` names an image.

There is no .proto: gRPC's generic handlers without serializers carry raw bytes. Import is
client-streaming, the archive in chunks of any size, and answers JSON
{"images": [{"id", "repo_tags", "repo_digest"}]}; Tag takes JSON {"source", "target"} and
answers JSON {"id"}. Errors are gRPC statuses, mapped as for CRI calls.
"""
from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from typing import Any

import grpc
import structlog

from pycri.common.errors import Cancelled, InvalidArgument
from pycri.criserver.errors import clip, status_of
from pycri.images.service import ImageService

log = structlog.get_logger("cri")

SERVICE = "pycri.admin.v1.Images"
IMPORT_METHOD = f"/{SERVICE}/Import"
TAG_METHOD = f"/{SERVICE}/Tag"
MAX_TAG_REQUEST = 4096
_MAX_MESSAGE = 4096


class AdminServicer:
    def __init__(self, images: ImageService) -> None:
        self.images = images

    def Import(self, chunks: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        """Client-streaming: the archive's bytes; the call interceptor leaves such calls alone,
        so this logs and maps its own errors."""
        start = time.monotonic()
        try:
            imported = self.images.import_archive(_received(chunks, context))
        except Exception as exc:  # mapped to a status, never lost
            code, message = status_of(exc)
            message = clip(message, _MAX_MESSAGE)
            log.warning("cri call", method="Import", duration_ms=_ms(start), code=code.name, error=message)
            context.abort(code, message)
        log.info("cri call", method="Import", duration_ms=_ms(start), code="OK",
                 images=[i.id for i in imported])
        return json.dumps({"images": [dataclasses.asdict(i) for i in imported]}).encode()

    def Tag(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        if len(request) > MAX_TAG_REQUEST:
            raise InvalidArgument(f"Tag: the request is over {MAX_TAG_REQUEST} bytes")
        try:
            doc = json.loads(request)
        except ValueError as exc:
            raise InvalidArgument("Tag: the request is not JSON") from exc
        if not isinstance(doc, dict) or not all(isinstance(doc.get(k), str) and doc[k] for k in ("source", "target")):
            raise InvalidArgument('Tag: the request is not {"source": image, "target": name:tag}')
        return json.dumps({"id": self.images.tag(doc["source"], doc["target"])}).encode()


def _received(chunks: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
    try:
        yield from chunks
    except grpc.RpcError as exc:  # the client went away mid-stream
        raise Cancelled("the client gave up on the import") from exc
    if not context.is_active():
        raise Cancelled("the client gave up on the import")


def _ms(start: float) -> int:
    return int((time.monotonic() - start) * 1000)


def handler(images: ImageService) -> Any:
    """The generic handler to add to the CRI server."""
    servicer = AdminServicer(images)
    return grpc.method_handlers_generic_handler(SERVICE, {
        "Import": grpc.stream_unary_rpc_method_handler(servicer.Import),
        "Tag": grpc.unary_unary_rpc_method_handler(servicer.Tag),
    })
