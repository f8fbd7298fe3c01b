"""Importing image archives (images/archive.py, ImageService.import_archive and tag): docker
save's own layout, the OCI layout (with and without docker's manifest.json), every name kept,
layers shared with what the store has, and hostile archives refused with nothing left behind."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pycri.common.errors import InvalidArgument, NotFound, ResourceExhausted
from pycri.images import archive
from pycri.images import manifest as mf
from pycri.images.config import RegistryConfig
from pycri.images.service import ImageService
from pycri.store.db import Database

PLATFORM = mf.host_platform()


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.uid, info.gid, info.mtime = len(data), 0o755, os.getuid(), os.getgid(), 1
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def config_of(layers: list[bytes], **extra: Any) -> bytes:
    config = {"architecture": PLATFORM.architecture, "os": PLATFORM.os,
              "config": {"Cmd": ["/hello"]}, "rootfs": {"type": "layers", "diff_ids": [sha(la) for la in layers]}}
    config.update(extra)
    return json.dumps(config).encode()


class Tar:
    """An archive being written, member by member (also the hostile ones)."""

    def __init__(self) -> None:
        self.out = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.out, mode="w", format=tarfile.PAX_FORMAT)

    def file(self, name: str, data: bytes) -> "Tar":
        info = tarfile.TarInfo(name)
        info.size = len(data)
        self.tar.addfile(info, io.BytesIO(data))
        return self

    def json(self, name: str, doc: Any) -> "Tar":
        return self.file(name, json.dumps(doc).encode())

    def link(self, name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> "Tar":
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, target
        self.tar.addfile(info)
        return self

    def special(self, name: str, kind: bytes) -> "Tar":
        info = tarfile.TarInfo(name)
        info.type = kind
        self.tar.addfile(info)
        return self

    def bytes(self) -> bytes:
        self.tar.close()
        return self.out.getvalue()


def docker_save(tar: Tar, images: list[tuple[list[bytes], list[str]]], *, config_extra: dict[str, Any] | None = None
                ) -> Tar:
    """docker 20.10's layout: <config hex>.json, <layer id>/layer.tar, manifest.json."""
    entries = []
    for layers, tags in images:
        config = config_of(layers, **(config_extra or {}))
        config_name = sha(config).split(":")[1] + ".json"
        tar.file(config_name, config)
        names = []
        for layer in layers:
            name = f"{hashlib.sha256(b'v1' + layer).hexdigest()}/layer.tar"
            if name not in tar.tar.getnames():
                tar.file(name, layer)
            names.append(name)
        entries.append({"Config": config_name, "RepoTags": tags, "Layers": names})
    return tar.json("manifest.json", entries)


def blob(tar: Tar, data: bytes) -> dict[str, Any]:
    tar.file(f"blobs/sha256/{sha(data).split(':')[1]}", data)
    return {"digest": sha(data), "size": len(data)}


def oci_manifest(tar: Tar, layers: list[bytes], *, gzipped: bool = False, config_extra: dict[str, Any] | None = None
                 ) -> dict[str, Any]:
    config = config_of(layers, **(config_extra or {}))
    layer_descs = []
    for layer in layers:
        data = gzip.compress(layer, mtime=0) if gzipped else layer
        media = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if gzipped else "")
        layer_descs.append({"mediaType": media, **blob(tar, data)})
    manifest = {"schemaVersion": 2, "mediaType": mf.OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **blob(tar, config)},
                "layers": layer_descs}
    return {"mediaType": mf.OCI_MANIFEST, **blob(tar, json.dumps(manifest).encode())}


def oci_layout(tar: Tar, entries: list[dict[str, Any]]) -> Tar:
    tar.json("oci-layout", {"imageLayoutVersion": "1.0.0"})
    return tar.json("index.json", {"schemaVersion": 2, "mediaType": mf.OCI_INDEX, "manifests": entries})


LAYER_A = layer_tar({"hello": b"#!/bin/sh\necho hello\n"})
LAYER_B = layer_tar({"etc/motd": b"welcome\n"})


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ImageService]:
    db = Database(tmp_path / "db.sqlite")
    yield ImageService(db, tmp_path / "images", RegistryConfig())
    db.close()


def load(service: ImageService, data: bytes, chunk: int = 1000) -> list[Any]:
    return service.import_archive(data[i:i + chunk] for i in range(0, len(data), chunk))


def on_disk(service: ImageService) -> tuple[set[str], set[str], list[str]]:
    return (set(service.content.digests()), set(service.layers.diff_ids()),
            os.listdir(service.content.ingest_dir) + os.listdir(service.layers.tmp))


def assert_nothing_left(service: ImageService) -> None:
    assert service.list() == []
    assert on_disk(service) == (set(), set(), [])


# -- what is kept -------------------------------------------------------------------------


def test_docker_save_keeps_every_tag_and_unpacks_the_layers(service: ImageService) -> None:
    data = docker_save(Tar(), [([LAYER_A, LAYER_B], ["hello:1", "example.com/team/hello:latest"])]).bytes()
    [imported] = load(service, data)
    record = service.get("hello:1")
    assert imported.id == record.id == sha(config_of([LAYER_A, LAYER_B]))
    assert record.repo_tags == ["docker.io/library/hello:1", "example.com/team/hello:latest"]
    assert record.repo_digests == sorted(f"{n}@{imported.repo_digest}" for n in ("docker.io/library/hello",
                                                                                   "example.com/team/hello"))
    assert service.get("example.com/team/hello").id == record.id
    assert service.get(imported.repo_digest.join(["example.com/team/hello@", ""])).id == record.id
    assert record.diff_ids == [sha(LAYER_A), sha(LAYER_B)]
    assert (service.layers.diff(sha(LAYER_A)) / "hello").read_bytes() == b"#!/bin/sh\necho hello\n"
    assert record.config["config"]["Cmd"] == ["/hello"]
    # the manifest made for it and the config are blobs; the layers are only in the layer store
    manifest = json.loads(service.content.read(record.manifest_digest))
    assert manifest["config"]["digest"] == record.id
    assert [la["digest"] for la in manifest["layers"]] == record.diff_ids
    blobs, layers, leftovers = on_disk(service)
    assert blobs == {record.id, record.manifest_digest} and layers == set(record.diff_ids) and leftovers == []


def test_several_images_and_a_shared_layer_link(service: ImageService) -> None:
    tar = Tar()
    config1, config2 = config_of([LAYER_A]), config_of([LAYER_A, LAYER_B])
    tar.file("c1.json", config1).file("c2.json", config2)
    tar.file("l1/layer.tar", LAYER_A).link("l2/layer.tar", "../l1/layer.tar").file("l3/layer.tar", LAYER_B)
    tar.json("manifest.json", [{"Config": "c1.json", "RepoTags": ["one:1"], "Layers": ["l1/layer.tar"]},
                               {"Config": "c2.json", "RepoTags": None, "Layers": ["l2/layer.tar", "l3/layer.tar"]}])
    imported = load(service, tar.bytes())
    assert [i.repo_tags for i in imported] == [["docker.io/library/one:1"], []]
    untagged = service.get(sha(config2))  # an untagged image: by its id
    assert untagged.repo_tags == [] and untagged.repo_digests == []
    assert set(service.layers.diff_ids()) == {sha(LAYER_A), sha(LAYER_B)}


def test_oci_layout_names_from_annotations(service: ImageService) -> None:
    tar = Tar()
    desc = oci_manifest(tar, [LAYER_A], gzipped=True)
    oci_layout(tar, [
        {**desc, "annotations": {"io.containerd.image.name": "docker.io/library/hello:oci",
                                 "org.opencontainers.image.ref.name": "oci"}},
        {**desc, "annotations": {"org.opencontainers.image.ref.name": "example.com/hello:v2"}},
        {**desc, "annotations": {"org.opencontainers.image.ref.name": "v3"}},  # a bare tag names no repository
    ])
    [imported] = load(service, tar.bytes())
    assert imported.repo_tags == ["docker.io/library/hello:oci", "example.com/hello:v2"]
    record = service.get("hello:oci")
    assert record.manifest_digest == desc["digest"] == imported.repo_digest
    assert service.content.has(desc["digest"])
    assert (service.layers.diff(sha(LAYER_A)) / "hello").exists()


def test_docker_oci_save_with_manifest_json(service: ImageService) -> None:
    """docker 25+: an OCI layout plus manifest.json whose RepoTags name the images."""
    tar = Tar()
    desc = oci_manifest(tar, [LAYER_B])
    config_path = f"blobs/sha256/{sha(config_of([LAYER_B])).split(':')[1]}"
    tar.json("manifest.json", [{"Config": config_path, "RepoTags": ["motd:1", "motd:2"],
                                "Layers": [f"blobs/sha256/{sha(LAYER_B).split(':')[1]}"]}])
    oci_layout(tar, [{**desc, "annotations": {"io.containerd.image.name": "docker.io/library/motd:1"}}])
    [imported] = load(service, tar.bytes())
    assert imported.repo_tags == ["docker.io/library/motd:1", "docker.io/library/motd:2"]


def test_multi_platform_index_keeps_the_node_platform(service: ImageService) -> None:
    tar = Tar()
    mine = oci_manifest(tar, [LAYER_A])
    other = {"mediaType": mf.OCI_MANIFEST, "digest": sha(b"absent"), "size": 6,
             "platform": {"os": "linux", "architecture": "s390x"}}  # not in the archive: fine
    index = {"schemaVersion": 2, "mediaType": mf.OCI_INDEX, "manifests": [
        other, {**mine, "platform": {"os": PLATFORM.os, "architecture": PLATFORM.architecture}}]}
    index_desc = {"mediaType": mf.OCI_INDEX, **blob(tar, json.dumps(index).encode())}
    oci_layout(tar, [{**index_desc, "annotations": {"io.containerd.image.name": "multi:1"}}])
    [imported] = load(service, tar.bytes())
    record = service.get("multi:1")
    assert record.manifest_digest == mine["digest"] and imported.repo_digest == index_desc["digest"]
    assert record.repo_digests == [f"docker.io/library/multi@{index_desc['digest']}"]
    assert service.content.has(index_desc["digest"])


def test_index_without_the_node_platform_is_refused(service: ImageService) -> None:
    tar = Tar()
    arm = oci_manifest(tar, [LAYER_A], config_extra={"architecture": "s390x"})
    index = {"schemaVersion": 2, "mediaType": mf.OCI_INDEX,
             "manifests": [{**arm, "platform": {"os": "linux", "architecture": "s390x"}}]}
    oci_layout(tar, [{"mediaType": mf.OCI_INDEX, **blob(tar, json.dumps(index).encode())}])
    with pytest.raises(InvalidArgument, match="no image for this node's platform"):
        load(service, tar.bytes())
    assert_nothing_left(service)


def test_image_for_another_platform_is_refused(service: ImageService) -> None:
    data = docker_save(Tar(), [([LAYER_A], ["arm:1"])], config_extra={"architecture": "s390x"}).bytes()
    with pytest.raises(InvalidArgument, match="is for linux/s390x"):
        load(service, data)
    assert_nothing_left(service)


def test_layers_already_in_the_store_are_shared_not_unpacked_again(service: ImageService) -> None:
    load(service, docker_save(Tar(), [([LAYER_A], ["first:1"])]).bytes())
    layer_dir = service.layers.dir(sha(LAYER_A))
    inode = layer_dir.stat().st_ino
    load(service, docker_save(Tar(), [([LAYER_A, LAYER_B], ["second:1"])]).bytes())
    assert layer_dir.stat().st_ino == inode  # the same directory, not unpacked again
    assert set(service.layers.diff_ids()) == {sha(LAYER_A), sha(LAYER_B)}
    service.remove("first:1")
    assert service.layers.has(sha(LAYER_A))  # the second image still uses it
    assert service.get("second:1").diff_ids == [sha(LAYER_A), sha(LAYER_B)]


def test_a_shared_layer_is_still_verified(service: ImageService) -> None:
    tar = Tar()
    desc = oci_manifest(tar, [LAYER_A], gzipped=True)
    oci_layout(tar, [{**desc, "annotations": {"io.containerd.image.name": "first:1"}}])
    load(service, tar.bytes())
    bad = Tar()  # a layer the store has, but its blob in this archive is not what the manifest says
    gz = gzip.compress(LAYER_A, mtime=0)
    config = config_of([LAYER_A], created="another")
    manifest = {"schemaVersion": 2, "mediaType": mf.OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **blob(bad, config)},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha(gz),
                            "size": len(gz)}]}
    bad.file(f"blobs/sha256/{sha(gz).split(':')[1]}", gz[:20] + bytes([gz[20] ^ 0xff]) + gz[21:])
    oci_layout(bad, [{"mediaType": mf.OCI_MANIFEST, **blob(bad, json.dumps(manifest).encode())}])
    with pytest.raises(InvalidArgument, match="does not match"):
        load(service, bad.bytes())
    assert [r.repo_tags for r in service.list()] == [["docker.io/library/first:1"]]


def test_importing_again_moves_a_tag_and_keeps_the_image(service: ImageService) -> None:
    load(service, docker_save(Tar(), [([LAYER_A], ["app:1"])]).bytes())
    load(service, docker_save(Tar(), [([LAYER_A, LAYER_B], ["app:1"])]).bytes())
    assert service.get("app:1").diff_ids == [sha(LAYER_A), sha(LAYER_B)]
    assert service.get(sha(config_of([LAYER_A]))).repo_tags == []


def test_tag(service: ImageService) -> None:
    [imported] = load(service, docker_save(Tar(), [([LAYER_A], ["app:1"])]).bytes())
    assert service.tag(imported.id, "docker.io/library/app:2") == imported.id
    assert service.tag("app:2", "example.com/app:3") == imported.id
    assert service.get(imported.id).repo_tags == ["docker.io/library/app:1", "docker.io/library/app:2",
                                                  "example.com/app:3"]
    with pytest.raises(NotFound):
        service.tag("absent:1", "app:4")
    with pytest.raises(InvalidArgument):
        service.tag("app:1", f"app@{imported.id}")


# -- hostile archives ---------------------------------------------------------------------


def hostile(service: ImageService, data: bytes, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        load(service, data)
    assert_nothing_left(service)


def valid_then(build: Any) -> bytes:
    tar = docker_save(Tar(), [([LAYER_A], ["ok:1"])])
    build(tar)
    return tar.bytes()


@pytest.mark.parametrize("name", ["/etc/evil", "../evil", "a/../../evil", "blobs/../../x"])
def test_names_outside_the_archive_are_refused(service: ImageService, name: str) -> None:
    hostile(service, valid_then(lambda tar: tar.file(name, b"x")), InvalidArgument, "absolute|'\\.\\.'")


@pytest.mark.parametrize("target", ["/etc/passwd", "../../etc/passwd", "../l9/layer.tar"])
def test_a_layer_linking_out_of_the_archive_is_refused(service: ImageService, target: str) -> None:
    tar = Tar()
    config = config_of([LAYER_A])
    tar.file("c.json", config).link("l1/layer.tar", target)
    tar.json("manifest.json", [{"Config": "c.json", "RepoTags": ["x:1"], "Layers": ["l1/layer.tar"]}])
    hostile(service, tar.bytes(), InvalidArgument, "links out|'\\.\\.'|does not hold")


def test_a_hard_link_to_a_missing_entry_is_refused(service: ImageService) -> None:
    tar = Tar()
    tar.file("c.json", config_of([LAYER_A])).link("l1/layer.tar", "nothing/here", tarfile.LNKTYPE)
    tar.json("manifest.json", [{"Config": "c.json", "RepoTags": ["x:1"], "Layers": ["l1/layer.tar"]}])
    hostile(service, tar.bytes(), InvalidArgument, "does not hold")


def test_a_link_loop_is_refused(service: ImageService) -> None:
    tar = Tar()
    tar.file("c.json", config_of([LAYER_A])).link("a", "b").link("b", "a")
    tar.json("manifest.json", [{"Config": "c.json", "RepoTags": ["x:1"], "Layers": ["a"]}])
    hostile(service, tar.bytes(), InvalidArgument, "links in a row")


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.FIFOTYPE, tarfile.BLKTYPE])
def test_devices_and_fifos_are_refused(service: ImageService, kind: bytes) -> None:
    hostile(service, valid_then(lambda tar: tar.special("dev", kind)), InvalidArgument, "not a file")


def test_a_duplicate_entry_is_refused(service: ImageService) -> None:
    hostile(service, valid_then(lambda tar: tar.json("manifest.json", [])), InvalidArgument, "appears twice")


def test_a_layer_that_is_not_its_diff_id_is_refused(service: ImageService) -> None:
    tar = Tar()
    tar.file("c.json", config_of([LAYER_A])).file("l1/layer.tar", LAYER_B)
    tar.json("manifest.json", [{"Config": "c.json", "RepoTags": ["x:1"], "Layers": ["l1/layer.tar"]}])
    hostile(service, tar.bytes(), InvalidArgument, "bad image archive: .*does not match|unpacks to")


def test_a_bad_second_image_leaves_the_first_unrecorded(service: ImageService) -> None:
    tar = Tar()
    tar.file("c1.json", config_of([LAYER_A])).file("c2.json", config_of([LAYER_B]))
    tar.file("l1/layer.tar", LAYER_A).file("l2/layer.tar", LAYER_A)  # l2 should hold LAYER_B
    tar.json("manifest.json", [{"Config": "c1.json", "RepoTags": ["one:1"], "Layers": ["l1/layer.tar"]},
                               {"Config": "c2.json", "RepoTags": ["two:1"], "Layers": ["l2/layer.tar"]}])
    hostile(service, tar.bytes(), InvalidArgument, "does not match|unpacks to")


def test_a_missing_blob_is_refused(service: ImageService) -> None:
    tar = Tar()
    desc = oci_manifest(tar, [LAYER_A])
    oci_layout(tar, [desc])
    data = tar.bytes()
    pruned = Tar()  # the same archive without its layer blob
    with tarfile.open(fileobj=io.BytesIO(data)) as source:
        for member in source:
            if member.name != f"blobs/sha256/{sha(LAYER_A).split(':')[1]}":
                pruned.file(member.name, source.extractfile(member).read())  # type: ignore[union-attr]
    hostile(service, pruned.bytes(), InvalidArgument, "lacks layer")


def test_a_missing_layer_file_is_refused(service: ImageService) -> None:
    tar = Tar().file("c.json", config_of([LAYER_A]))
    tar.json("manifest.json", [{"Config": "c.json", "RepoTags": ["x:1"], "Layers": ["l1/layer.tar"]}])
    hostile(service, tar.bytes(), InvalidArgument, "has no 'l1/layer.tar'")


def test_a_manifest_that_is_not_its_digest_is_refused(service: ImageService) -> None:
    tar = Tar()
    desc = oci_manifest(tar, [LAYER_A])
    oci_layout(tar, [{**desc, "size": desc["size"] + 1}])
    hostile(service, tar.bytes(), InvalidArgument, "does not match its descriptor")


def test_a_config_that_is_not_its_digest_is_refused(service: ImageService) -> None:
    tar = Tar()
    config = config_of([LAYER_A])
    blob(tar, LAYER_A)
    tar.file(f"blobs/sha256/{sha(config).split(':')[1]}", config.replace(b"/hello", b"/evil!"))
    manifest = {"schemaVersion": 2, "mediaType": mf.OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(config),
                           "size": len(config)},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **blob(Tar(), LAYER_A)}]}
    oci_layout(tar, [{"mediaType": mf.OCI_MANIFEST, **blob(tar, json.dumps(manifest).encode())}])
    hostile(service, tar.bytes(), InvalidArgument, "image config .* does not match")


def test_oversized_json_is_refused(service: ImageService, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive, "MAX_JSON_BYTES", 100)
    hostile(service, valid_then(lambda tar: None), ResourceExhausted, "manifest.json.* pycri reads at most 100")


def test_too_many_entries_are_refused(service: ImageService, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive, "MAX_MEMBERS", 5)
    def many(tar: Tar) -> None:
        for n in range(5):
            tar.file(f"junk/{n}", b"")
    hostile(service, valid_then(many), ResourceExhausted, "more than 5 entries")


@pytest.mark.parametrize("data", [b"", b"not a tar at all" * 100, LAYER_A[:700]])
def test_not_an_archive(service: ImageService, data: bytes) -> None:
    hostile(service, data, InvalidArgument, "tar|neither index.json")


def test_a_truncated_archive_is_refused(service: ImageService) -> None:
    data = docker_save(Tar(), [([LAYER_A, LAYER_B], ["x:1"])]).bytes()
    hostile(service, data[:len(data) // 2], InvalidArgument, ".")


@pytest.mark.parametrize("manifest_json", [
    {"Config": "c.json"}, [{"Config": 3}], [{"Config": "c.json", "Layers": "l"}],
    [{"Config": "c.json", "RepoTags": ["Bad Name"], "Layers": []}],
])
def test_malformed_manifest_json(service: ImageService, manifest_json: Any) -> None:
    tar = Tar().file("c.json", config_of([]))
    tar.json("manifest.json", manifest_json)
    hostile(service, tar.bytes(), InvalidArgument, ".")


def test_an_annotated_name_with_another_digest_is_refused(service: ImageService) -> None:
    tar = Tar()
    desc = oci_manifest(tar, [LAYER_A])
    oci_layout(tar, [{**desc, "annotations": {"io.containerd.image.name": f"x@{sha(b'other')}"}}])
    hostile(service, tar.bytes(), InvalidArgument, "another digest")


def test_a_gzipped_archive_is_read(service: ImageService) -> None:
    data = gzip.compress(docker_save(Tar(), [([LAYER_A], ["gz:1"])]).bytes())
    [imported] = load(service, data)
    assert imported.repo_tags == ["docker.io/library/gz:1"]


def test_clean_name() -> None:
    assert archive.clean_name("./blobs//sha256/./x/") == "blobs/sha256/x"
    for bad in ("/x", "..", "a/../b", "", "./", "a\0b", "x" * 5000):
        with pytest.raises(InvalidArgument):
            archive.clean_name(bad)


def test_a_gzipped_archive_in_tiny_chunks_and_several_gzip_members(service: ImageService) -> None:
    data = docker_save(Tar(), [([LAYER_A, LAYER_B], ["gz:2"])]).bytes()
    middle = len(data) // 2
    two_members = gzip.compress(data[:middle]) + gzip.compress(data[middle:])  # what `gzip -c a b` writes
    [imported] = load(service, two_members, chunk=1)
    assert imported.repo_tags == ["docker.io/library/gz:2"]


@pytest.mark.parametrize("data", [
    gzip.compress(docker_save(Tar(), [([LAYER_A], ["gz:1"])]).bytes())[:-30],  # truncated
    gzip.compress(b"x")[:10] + b"\xff" * 100,  # corrupt
])
def test_bad_gzip_is_refused(service: ImageService, data: bytes) -> None:
    hostile(service, data, InvalidArgument, "gzip")


def test_a_huge_tar_header_is_refused_before_it_is_read(service: ImageService,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive, "MAX_HEADER_BYTES", 2000)
    hostile(service, valid_then(lambda tar: tar.file("long/" + "n" * 3000, b"x")), ResourceExhausted,
            "extended tar header")
