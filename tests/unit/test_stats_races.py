"""Stats calls racing a container or pod that goes away: one vanished file or cgroup is left
out, and the List call still answers for everything else."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from pycri import cgroups
from pycri.common import fs
from pycri.criserver import stats


def test_usage_leaves_out_a_file_removed_while_it_walks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("kept", "vanishing"):
        (tmp_path / name).write_bytes(b"x" * 8192)
    real_scandir = os.scandir

    @contextlib.contextmanager
    def scandir(path):  # type: ignore[no-untyped-def]
        with real_scandir(path) as it:
            entries = list(it)  # listed, not yet looked at ...
        (tmp_path / "vanishing").unlink(missing_ok=True)  # ... when the file goes
        yield iter(entries)

    monkeypatch.setattr(fs.os, "scandir", scandir)
    used = fs.usage(tmp_path)
    assert used.inodes == 2 and used.bytes >= 8192  # the directory and "kept"


@pytest.mark.parametrize("error", [FileNotFoundError("gone"), cgroups.CgroupError("gone"), ValueError("torn")])
def test_a_pod_cgroup_that_went_away_reads_as_none(error: Exception) -> None:
    def read() -> int:
        raise error

    assert stats._read_or_none(read) is None
    assert stats._read_or_none(lambda: 7) == 7
