"""kernel.idmap: the text of a uid_map/gid_map and writing both (into a fake /proc here; the
real kernel: tests/integration and tests/e2e/test_userns.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from pycri.common.errors import InvalidArgument
from pycri.kernel.idmap import IdMapError, id_map_text, write_id_maps
from pycri.runtime import stages
from pycri.runtime.errors import RuntimeFailure
from pycri.sandbox import namespaces


def test_text_is_one_line_per_mapping() -> None:
    assert id_map_text([(0, 1000, 65536), (65536, 5, 1)]) == "0 1000 65536\n65536 5 1\n"
    assert id_map_text([]) == ""


def test_uid_map_then_gid_map(tmp_path: Path) -> None:
    (tmp_path / "42").mkdir()
    write_id_maps(42, "0 1000 10\n", "0 2000 10\n", proc=str(tmp_path))
    assert (tmp_path / "42" / "uid_map").read_text() == "0 1000 10\n"
    assert (tmp_path / "42" / "gid_map").read_text() == "0 2000 10\n"


def test_a_failed_write_names_the_map(tmp_path: Path) -> None:
    (tmp_path / "42" / "gid_map").mkdir(parents=True)  # a directory: the write fails
    with pytest.raises(IdMapError) as failed:
        write_id_maps(42, "0 1000 10\n", "0 2000 10\n", proc=str(tmp_path))
    assert failed.value.name == "gid_map" and failed.value.text == "0 2000 10\n"
    assert failed.value.reason == "Is a directory"
    assert (tmp_path / "42" / "uid_map").read_text() == "0 1000 10\n"


def test_each_caller_keeps_its_own_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeFailure, match=r"^write uid_map of the user namespace: No such file or directory$"):
        stages.write_id_maps(7, "0 1 1\n", "0 1 1\n", proc=str(tmp_path))
    maps = namespaces.IdMaps((namespaces.IdMapping(0, 1000, 65536),), (namespaces.IdMapping(0, 2000, 65536),))
    with pytest.raises(InvalidArgument, match=r"^writing the pod's user namespace uid_map \('0 1000 65536'\): No such"):
        namespaces.write_id_maps(7, maps, proc=str(tmp_path))
    (tmp_path / "7").mkdir()
    namespaces.write_id_maps(7, maps, proc=str(tmp_path))
    assert (tmp_path / "7" / "gid_map").read_text() == "0 2000 65536\n"
