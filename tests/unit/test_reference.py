"""Reference parsing and normalisation, as kubelet and the docker tools see names."""
from __future__ import annotations

import pytest

from pycri.common.errors import InvalidArgument
from pycri.images.reference import is_image_id, parse

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize("text,name,tag,digest", [
    ("busybox", "docker.io/library/busybox", "latest", None),
    ("busybox:1.36", "docker.io/library/busybox", "1.36", None),
    ("library/busybox", "docker.io/library/busybox", "latest", None),
    ("docker.io/busybox", "docker.io/library/busybox", "latest", None),
    ("index.docker.io/library/busybox:1", "docker.io/library/busybox", "1", None),
    ("foo/bar", "docker.io/foo/bar", "latest", None),
    ("registry.k8s.io/e2e-test-images/busybox:1.29-2", "registry.k8s.io/e2e-test-images/busybox", "1.29-2", None),
    ("localhost/foo", "localhost/foo", "latest", None),
    ("localhost:5000/foo/bar:v1", "localhost:5000/foo/bar", "v1", None),
    ("127.0.0.1:5000/a/b", "127.0.0.1:5000/a/b", "latest", None),
    ("Registry.Example.com/a", "Registry.Example.com/a", "latest", None),
    (f"busybox@{DIGEST}", "docker.io/library/busybox", None, DIGEST),
    (f"busybox:1.36@{DIGEST}", "docker.io/library/busybox", "1.36", DIGEST),
    ("a.b/c__d/e-f.g:Tag_1.0-x", "a.b/c__d/e-f.g", "Tag_1.0-x", None),
])
def test_normalises(text: str, name: str, tag: str | None, digest: str | None) -> None:
    ref = parse(text)
    assert (ref.name, ref.tag, ref.digest) == (name, tag, digest)


def test_forms() -> None:
    ref = parse("busybox")
    assert str(ref) == "docker.io/library/busybox:latest"
    assert ref.tagged == "docker.io/library/busybox:latest"
    assert ref.pull_target == "latest"
    pinned = parse(f"busybox@{DIGEST}")
    assert pinned.tagged is None and pinned.pull_target == DIGEST
    assert pinned.with_digest(DIGEST) == f"docker.io/library/busybox@{DIGEST}"
    assert parse(f"busybox:1@{DIGEST}").pull_target == DIGEST  # the digest wins


@pytest.mark.parametrize("text", [
    "", "upper/Case", "busybox:", "busybox:-bad", ":tag", "a//b", "a/b/", "/a",
    "busybox@sha256:abc", "busybox@sha256:" + "g" * 64, "ab" * 32, "a" * 256,
    "foo/Bar", "host:port:5000/x", "busybox:" + "t" * 129,
])
def test_rejects(text: str) -> None:
    with pytest.raises(InvalidArgument):
        parse(text)


def test_image_ids() -> None:
    assert is_image_id("sha256:" + "0" * 64) and is_image_id("0" * 64)
    assert not is_image_id("busybox") and not is_image_id("sha256:abc")
