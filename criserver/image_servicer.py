"""CRI ImageService: validates requests, calls images.service, builds the CRI messages."""
from __future__ import annotations

import base64
import binascii
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from pycri.api.cri import api_pb2 as cri
from pycri.api.cri import api_pb2_grpc
from pycri.common.errors import InvalidArgument
from pycri.criserver import list_streams
from pycri.images.registry import Credentials
from pycri.images.service import ImageService, image_user
from pycri.images.records import Catalog, ImageRecord


def credentials_of(auth: cri.AuthConfig) -> Credentials:
    username, password = auth.username, auth.password
    if auth.auth:
        try:
            decoded = base64.b64decode(auth.auth, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise InvalidArgument("auth.auth is not base64 of user:password") from exc
        username, sep, password = decoded.partition(":")
        if not sep:
            raise InvalidArgument("auth.auth is not base64 of user:password")
    return Credentials(username=username, password=password,
                       identity_token=auth.identity_token, registry_token=auth.registry_token,
                       server_address=auth.server_address)


def image_message(record: ImageRecord) -> cri.Image:
    uid, username = image_user(record)
    image = cri.Image(
        id=record.id, repo_tags=record.repo_tags, repo_digests=record.repo_digests,
        size=record.size, username=username, spec=cri.ImageSpec(image=record.id), pinned=False,
    )
    if uid is not None:
        image.uid.value = uid
    return image


def _image_name(spec: cri.ImageSpec, what: str) -> str:
    if not spec.image:
        raise InvalidArgument(f"{what}: image.image is required")
    return spec.image


class ImageServicer(api_pb2_grpc.ImageServiceServicer):
    def __init__(self, images: ImageService, in_use: Callable[[str], list[str]] = lambda image_id: []) -> None:
        self.images = images
        self.in_use = in_use  # image id -> the containers made of it or mounting it as a volume
        self.stream_chunk = (list_streams.MAX_ITEMS, list_streams.MAX_BYTES)  # items and bytes per StreamImages message
        # the reply to an unfiltered ListImages and the catalog it was made of: answered again
        # while that catalog is the current one (replies are only read: serialized, streamed)
        self._listed: tuple[Catalog, cri.ListImagesResponse] | None = None

    def ListImages(self, request: cri.ListImagesRequest, context: Any) -> cri.ListImagesResponse:
        name = request.filter.image.image if request.HasField("filter") else ""
        if name:
            return cri.ListImagesResponse(images=[image_message(r) for r in self.images.list(name)])
        catalog = self.images.catalog()
        listed = self._listed
        if listed is None or listed[0] is not catalog:
            listed = (catalog, cri.ListImagesResponse(images=[image_message(r) for r in catalog.records]))
            self._listed = listed
        return listed[1]

    def StreamImages(self, request: cri.StreamImagesRequest, context: Any) -> Iterator[cri.StreamImagesResponse]:
        listed = cri.ListImagesRequest(filter=request.filter) if request.HasField("filter") else cri.ListImagesRequest()
        return list_streams.stream(context, lambda: self.ListImages(listed, context).images,
                                   lambda batch: cri.StreamImagesResponse(images=batch), *self.stream_chunk)

    def ImageStatus(self, request: cri.ImageStatusRequest, context: Any) -> cri.ImageStatusResponse:
        record = self.images.resolve(_image_name(request.image, "ImageStatus"))
        if record is None:
            return cri.ImageStatusResponse()
        info = {}
        if request.verbose:
            info["info"] = json.dumps({
                "id": record.id, "manifestDigest": record.manifest_digest,
                "layers": record.diff_ids, "imageSpec": record.config,
            })
        return cri.ImageStatusResponse(image=image_message(record), info=info)

    def PullImage(self, request: cri.PullImageRequest, context: Any) -> cri.PullImageResponse:
        name = _image_name(request.image, "PullImage")
        # a client that gives up (its deadline, a cancel) stops the pull: its retry must not
        # queue behind a download nobody waits for any more
        gone = threading.Event()
        context.add_callback(gone.set)
        image_id = self.images.pull(name, credentials_of(request.auth), gone)
        return cri.PullImageResponse(image_ref=image_id)

    def RemoveImage(self, request: cri.RemoveImageRequest, context: Any) -> cri.RemoveImageResponse:
        self.images.remove(_image_name(request.image, "RemoveImage"), self.in_use)
        return cri.RemoveImageResponse()

    def ImageFsInfo(self, request: cri.ImageFsInfoRequest, context: Any) -> cri.ImageFsInfoResponse:
        usage = self.images.fs_usage()
        fs = cri.FilesystemUsage(
            timestamp=time.time_ns(), fs_id=cri.FilesystemIdentifier(mountpoint=usage.mountpoint),
        )
        fs.used_bytes.value = usage.used_bytes
        fs.inodes_used.value = usage.inodes_used
        return cri.ImageFsInfoResponse(image_filesystems=[fs])
