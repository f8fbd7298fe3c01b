"""Manifest kinds, platform selection, layer media types and diff_ids."""
from __future__ import annotations

import pytest

from pycri.common.errors import DataLoss, InvalidArgument, NotFound
from pycri.images import manifest as mf

D = "sha256:" + "1" * 64


def entry(arch: str, variant: str = "", os: str = "linux", digest_char: str = "1") -> dict:
    platform = {"os": os, "architecture": arch} | ({"variant": variant} if variant else {})
    return {"mediaType": mf.OCI_MANIFEST, "digest": "sha256:" + digest_char * 64, "size": 10, "platform": platform}


def test_kinds() -> None:
    assert mf.kind_of(mf.OCI_INDEX, {}) == "index"
    assert mf.kind_of("", {"mediaType": mf.DOCKER_LIST}) == "index"
    assert mf.kind_of("", {"manifests": []}) == "index"  # an OCI index without mediaType
    assert mf.kind_of(mf.DOCKER_MANIFEST, {}) == "manifest"
    assert mf.kind_of("", {"config": {}}) == "manifest"
    with pytest.raises(InvalidArgument, match="schema 1"):
        mf.kind_of("", {"schemaVersion": 1})
    with pytest.raises(DataLoss):
        mf.kind_of("text/html", {})


def test_selects_host_platform() -> None:
    doc = {"manifests": [entry("arm64", digest_char="2"), entry("amd64", os="windows", digest_char="3"),
                         entry("amd64", digest_char="4")]}
    assert mf.select_platform(doc, mf.Platform("linux", "amd64")).digest == "sha256:" + "4" * 64


def test_selects_variant() -> None:
    doc = {"manifests": [entry("arm", "v6", digest_char="5"), entry("arm", "v7", digest_char="6")]}
    assert mf.select_platform(doc, mf.Platform("linux", "arm", "v7")).digest == "sha256:" + "6" * 64
    assert mf.select_platform(doc, mf.Platform("linux", "arm", "v8")).digest == "sha256:" + "5" * 64


def test_no_matching_platform() -> None:
    doc = {"manifests": [entry("arm64"), entry("s390x")]}
    with pytest.raises(NotFound, match="linux/amd64.*linux/arm64, linux/s390x"):
        mf.select_platform(doc, mf.Platform("linux", "amd64"))


def test_host_platform_is_linux() -> None:
    assert mf.host_platform().os == "linux"


def test_parse_manifest_checks_layers() -> None:
    doc = {"config": {"mediaType": "x", "digest": D, "size": 2},
           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": D, "size": 3}]}
    image = mf.parse_manifest(doc, mf.OCI_MANIFEST)
    assert image.layers[0].size == 3 and mf.COMPRESSION_BY_MEDIA_TYPE[image.layers[0].media_type] == "zstd"
    doc["layers"][0]["mediaType"] = "application/x-unknown"
    with pytest.raises(DataLoss, match="unsupported media type"):
        mf.parse_manifest(doc, mf.OCI_MANIFEST)


@pytest.mark.parametrize("bad", [{"digest": D}, {"digest": "nope", "size": 1}, {"digest": D, "size": -1}, "x"])
def test_bad_descriptors(bad: object) -> None:
    with pytest.raises(DataLoss):
        mf.Descriptor.from_json(bad, "test")


def test_diff_ids_must_match_layers() -> None:
    assert mf.diff_ids_of({"rootfs": {"diff_ids": [D]}}, 1) == [D]
    with pytest.raises(DataLoss, match="2 layers"):
        mf.diff_ids_of({"rootfs": {"diff_ids": [D]}}, 2)


def test_index_fan_out_is_bounded() -> None:
    from pycri.common.errors import ResourceExhausted

    doc = {"manifests": [entry("arm64")] * (mf.MAX_INDEX_ENTRIES + 1)}
    with pytest.raises(ResourceExhausted, match="at most"):
        mf.select_platform(doc, mf.Platform("linux", "amd64"))


def test_nested_index_is_chosen_after_manifests() -> None:
    nested = entry("amd64", digest_char="7") | {"mediaType": mf.OCI_INDEX}
    assert mf.select_platform({"manifests": [nested]}, mf.Platform("linux", "amd64")).digest == "sha256:" + "7" * 64
    both = {"manifests": [nested, entry("amd64", digest_char="8")]}
    assert mf.select_platform(both, mf.Platform("linux", "amd64")).digest == "sha256:" + "8" * 64


def test_layer_count_and_declared_sizes_are_bounded() -> None:
    from pycri.common.errors import ResourceExhausted

    layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": D, "size": 3}
    doc = {"config": {"mediaType": "x", "digest": D, "size": 2}, "layers": [layer] * (mf.MAX_LAYERS + 1)}
    with pytest.raises(ResourceExhausted, match="layers"):
        mf.parse_manifest(doc, mf.OCI_MANIFEST)
    big = mf.Descriptor("x", D, mf.MAX_CONFIG_BYTES + 1)
    with pytest.raises(ResourceExhausted, match="at most"):
        mf.check_size(big, mf.MAX_CONFIG_BYTES, "image config")
    mf.check_size(mf.Descriptor("x", D, mf.MAX_CONFIG_BYTES), mf.MAX_CONFIG_BYTES, "image config")


def test_malformed_descriptors_are_data_loss() -> None:
    for raw in ({"digest": D, "size": [1]}, {"digest": D, "size": "x"}, {"digest": 5, "size": 1}, [1]):
        with pytest.raises(DataLoss):
            mf.Descriptor.from_json(raw, "t")
    with pytest.raises(DataLoss):
        mf.select_platform({"manifests": {"not": "a list"}}, mf.Platform("linux", "amd64"))
    odd = {"manifests": [{"mediaType": mf.OCI_MANIFEST, "digest": D, "size": 1, "platform": "linux"}]}
    with pytest.raises(NotFound):
        mf.select_platform(odd, mf.Platform("linux", "amd64"))


def test_config_shape_is_checked() -> None:
    for config in ({"rootfs": []}, {"rootfs": {"diff_ids": "x"}}, {"rootfs": {"diff_ids": [1]}},
                   {"rootfs": {"diff_ids": ["sha256:short"]}}, {"rootfs": {"diff_ids": [D]}, "config": ["User"]}):
        with pytest.raises(DataLoss):
            mf.diff_ids_of(config, 1)


def test_deeply_nested_json_is_data_loss() -> None:
    with pytest.raises(DataLoss):
        mf.load_json(b"[" * 200_000 + b"]" * 200_000, "manifest")
