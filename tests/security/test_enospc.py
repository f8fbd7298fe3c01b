"""ENOSPC during a pull surfaced as INTERNAL and left a partial blob until restart.

A full disk (ENOSPC, EDQUOT) is RESOURCE_EXHAUSTED now, and the ingest file and the partial
unpack are removed at once. The image store sits on a small tmpfs here.
"""
from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Registries
from tests.e2e.harness import Pycri
from tests.security.hostile import f, layer, push_image

MiB = 1024 * 1024


@pytest.fixture
def small_disk(tmp_path: Path, registries: Registries) -> Iterator[Pycri]:
    """A pycri whose images directory is a 6 MiB tmpfs (unmounted at teardown)."""
    images = tmp_path / "root" / "images"
    images.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m,mode=0700", "pycri-enospc", str(images)], check=True)
    pycri = Pycri(tmp_path)
    try:
        pycri.start()
        yield pycri
    finally:
        pycri.stop()
        pycri.unmount_pin_root()
        subprocess.run(["umount", str(images)], check=True)


def test_full_disk_is_resource_exhausted_and_leaves_nothing(small_disk: Pycri) -> None:
    pycri = small_disk
    # 4 MiB of incompressible data: the blob (4 MiB) and its unpacked copy do not both fit
    image = push_image("enospc", layer("enospc", f("random", os.urandom(4 * MiB))), busybox=False)
    result = pycri.crictl("pull", image, check=False)
    assert result.returncode != 0
    assert "ResourceExhausted" in result.stderr, result.stderr
    assert "disk" in result.stderr
    assert pycri.leftovers() == []  # no partial blob, no partial unpack
    assert pycri.blobs() == set()
    assert pycri.layer_dirs() == set()
    # the space is back: a small image still pulls
    pycri.crictl("pull", "busybox")
