"""The tar layer reader (images.unpack) under random, mutated and hostile tar streams: it
unpacks or raises DataLoss, never another exception, and never writes outside its directory."""
from __future__ import annotations

import io
import os
import tarfile
import tempfile
from pathlib import Path

import pytest
from hypothesis import example, given, strategies as st

from pycri.common.errors import DataLoss
from pycri.images.unpack import unpack_layer
from tests.fuzz.fakes import mutate

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="unpacking keeps owners and makes device nodes: root")

PART = st.sampled_from(["a", "b", "..", ".", "", ".wh.a", ".wh..wh..opq", ".wh.", "c d", "\u00e9"])
NAME = st.lists(PART, min_size=1, max_size=4).map("/".join) | st.sampled_from(["/", "./", "/etc/x", "../x"])
TYPES = [tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE, tarfile.CHRTYPE,
         b"Z"]
ENTRY = st.tuples(NAME, st.sampled_from(TYPES), NAME, st.binary(max_size=64), st.integers(0, 0o7777),
                  st.booleans())


def build(entries: list[tuple[str, bytes, str, bytes, int, bool]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, link, data, mode, xattr in entries:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.linkname = kind, mode, link
            if kind == tarfile.CHRTYPE:
                info.devmajor, info.devminor = 1, 3
            if xattr:
                info.pax_headers = {"SCHILY.xattr.user.fuzz": "v"}
            if kind == tarfile.REGTYPE:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return out.getvalue()


def snapshot(root: Path) -> set[str]:
    return {os.path.join(d, n) for d, dirs, files in os.walk(root) for n in dirs + files}


def unpack(data: bytes) -> None:
    """Unpack into <tmp>/layer/dest next to <tmp>/layer/outside, then check nothing outside dest changed."""
    with tempfile.TemporaryDirectory(prefix="pycri-fuzz-") as tmp:
        base = Path(tmp) / "layer"
        dest, outside = base / "dest", base / "outside"
        dest.mkdir(parents=True)
        outside.mkdir()
        (outside / "victim").write_text("v")
        before = snapshot(Path(tmp)) - snapshot(dest)
        try:
            unpack_layer(io.BytesIO(data), dest)
        except DataLoss:
            pass
        after = snapshot(Path(tmp)) - {p for p in snapshot(Path(tmp)) if p.startswith(str(dest) + "/")}
        assert after - {str(dest)} == before - {str(dest)}, "written outside the layer directory"
        assert (outside / "victim").read_text() == "v"
        assert os.listdir(outside) == ["victim"]


@given(st.lists(ENTRY, max_size=6))
@example([("a", tarfile.SYMTYPE, "/", b"", 0o777, False), ("a/x", tarfile.REGTYPE, "", b"x", 0o644, False)])
@example([("../outside/y", tarfile.REGTYPE, "", b"x", 0o644, False)])
@example([("l", tarfile.LNKTYPE, "../outside/victim", b"", 0o644, False)])
@example([(".wh...", tarfile.REGTYPE, "", b"", 0o644, False)])
def test_hostile_entries(entries: list[tuple[str, bytes, str, bytes, int, bool]]) -> None:
    unpack(build(entries))


@given(st.lists(ENTRY, min_size=1, max_size=4), st.lists(st.tuples(st.integers(0, 1 << 14), st.integers(0, 255)),
                                                         min_size=1, max_size=8))
def test_mutated_tar(entries: list[tuple[str, bytes, str, bytes, int, bool]], edits: list[tuple[int, int]]) -> None:
    unpack(mutate(build(entries), edits))


@given(st.binary(max_size=2048))
@example(b"")
@example(b"\0" * 1024)
def test_random_bytes(data: bytes) -> None:
    unpack(data)
