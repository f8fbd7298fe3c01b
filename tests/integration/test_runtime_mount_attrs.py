"""Recursive mount attributes ("rro") with the real kernel: a host directory with a submount,
bound read-only recursively, is read-only all the way down, exactly as runc makes it; a plain
"ro" bind leaves the submount writable."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pycri.kernel.linux import has_mount_setattr
from tests.integration.conftest import Runtime
from tests.integration.test_runtime_differential import run_case

SCRIPT = ("touch /data/x; touch /data/sub/x; touch /plain/sub/y && echo plain submount writable; "
          "grep -E ' /(data|plain)' /proc/self/mountinfo | cut -d' ' -f5,6")


@pytest.mark.skipif(not has_mount_setattr(), reason="the kernel has no mount_setattr(2) (Linux < 5.12)")
def test_recursive_read_only_same_as_runc(pycri: Runtime, runc: Runtime, make_bundle, tmp_path: Path,
                                          subreaper: set[int]) -> None:
    volume = tmp_path / "volume"
    (volume / "sub").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "rro-sub", str(volume / "sub")], check=True)
    try:
        bundle = make_bundle("sh", "-c", SCRIPT)
        bundle.config["mounts"] += [
            {"destination": "/data", "type": "bind", "source": str(volume), "options": ["rbind", "rro", "rprivate"]},
            {"destination": "/plain", "type": "bind", "source": str(volume), "options": ["rbind", "ro", "rprivate"]},
        ]
        bundle.write()
        theirs = run_case(runc, bundle, tmp_path, subreaper)
        ours = run_case(pycri, bundle, tmp_path, subreaper)
    finally:
        subprocess.run(["umount", "-R", "-l", str(volume / "sub")], check=False)
    assert ours.create_code == theirs.create_code == 0, (ours.create_error, theirs.create_error)
    assert (ours.exit_code, ours.stdout, ours.stderr) == (theirs.exit_code, theirs.stdout, theirs.stderr)
    assert ours.stderr == ("touch: /data/x: Read-only file system\n"
                           "touch: /data/sub/x: Read-only file system\n")
    lines = ours.stdout.splitlines()
    assert lines[0] == "plain submount writable"
    mounts = dict(line.split(" ", 1) for line in lines[1:])
    assert [mounts[p].split(",")[0] for p in ("/data", "/data/sub", "/plain", "/plain/sub")] == ["ro", "ro", "ro", "rw"]
