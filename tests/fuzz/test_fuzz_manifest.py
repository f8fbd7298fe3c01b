"""Manifest, index and image config parsing (images.manifest) under random JSON: a parsed result
or a domain error (DataLoss, InvalidArgument, NotFound), never another exception."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, strategies as st

from pycri.common.errors import PycriError
from pycri.images import manifest

DIGEST = "sha256:" + "a" * 64
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12) | st.sampled_from(
    [DIGEST, manifest.OCI_MANIFEST, manifest.OCI_INDEX, "linux", "amd64", "application/vnd.oci.image.layer.v1.tar"])
KEYS = st.sampled_from(["mediaType", "manifests", "config", "layers", "digest", "size", "platform", "os",
                        "architecture", "variant", "schemaVersion", "rootfs", "diff_ids"]) | st.text(max_size=5)
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=5),
                    max_leaves=20)
DOCS = st.dictionaries(KEYS, JSON, max_size=6)


def parse(doc: dict) -> None:
    data = json.dumps(doc).encode()
    try:
        loaded = manifest.load_json(data, "manifest")
        kind = manifest.kind_of("", loaded)
        if kind == "index":
            manifest.select_platform(loaded, manifest.Platform("linux", "amd64"))
        else:
            parsed = manifest.parse_manifest(loaded, manifest.OCI_MANIFEST)
            manifest.diff_ids_of(loaded, len(parsed.layers))
    except PycriError:
        pass


@given(DOCS)
def test_random_documents(doc: dict) -> None:
    parse(doc)


@given(st.binary(max_size=200))
def test_random_bytes(data: bytes) -> None:
    try:
        manifest.load_json(data, "manifest")
    except PycriError:
        pass


# Regression examples from the fuzzer. A field of the wrong JSON type, or JSON nested past the
# recursion limit, raised TypeError, AttributeError or RecursionError (INTERNAL) instead of
# DataLoss; H2's work on images/manifest.py (04cca01, 6860807) fixed these:
FIXED = [
    {"mediaType": manifest.OCI_INDEX, "manifests": 5},
    {"mediaType": manifest.OCI_INDEX, "manifests": [{"digest": DIGEST, "size": 1, "platform": []}]},
    {"mediaType": manifest.OCI_MANIFEST, "config": {"digest": DIGEST, "size": []}},
    {"config": {"digest": DIGEST, "size": 1}, "rootfs": "x"},
    {"config": {"digest": DIGEST, "size": 1}, "rootfs": {"diff_ids": 3}},
    {"config": {"digest": DIGEST, "size": float("inf")}},  # Infinity is valid to json.loads
    {"config": {"digest": DIGEST, "size": "12"}},
    {"config": {"digest": DIGEST, "size": True}},
]
def test_deep_nesting_is_data_loss() -> None:
    try:
        manifest.load_json(b"[" * 200_000 + b"]" * 200_000, "manifest")
    except PycriError:
        pass
