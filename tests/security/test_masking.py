"""Masking fails closed. A volume (a CRI mount) at /dev whose `null` was not the null device
made masking fail silently or bind that file over /proc/kcore, /proc/timer_list and the other
masked paths, and the runtime created device nodes in the host directory behind the volume.
Now the container does not start, and nothing is written into the volume."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.e2e.harness import Pycri, container_config


@pytest.mark.parametrize("null", ["file", "directory"])
def test_volume_at_dev_neither_unmasks_nor_gets_device_nodes(pycri: Pycri, tmp_path: Path, null: str) -> None:
    volume = tmp_path / "dev-volume"
    volume.mkdir()
    if null == "file":
        (volume / "null").write_text("not the null device\n")
    else:
        (volume / "null").mkdir()
    before = sorted(os.listdir(volume))
    pod = pycri.run_pod("masking")
    pycri.crictl("pull", "busybox")
    config = container_config(pycri.base, "unmasked", ["sleep", "1000"],
                              mounts=[{"container_path": "/dev", "host_path": str(volume)}])
    created = pycri.crictl("create", pod, str(config), str(pycri.base / "pod-masking.json"), check=False)
    started = None
    if created.returncode == 0:
        ctr = created.stdout.strip()
        started = pycri.crictl("start", ctr, check=False)
        if started.returncode == 0:
            seen = pycri.crictl("exec", "-s", ctr, "sh", "-c", "head -c 200 /proc/timer_list; ls -l /proc/timer_list",
                                check=False)
            pytest.fail(f"the container started with its masked paths resting on {volume}/null:\n{seen.stdout}")
    failure = (started or created).stderr
    # the runtime's refusal (or, should CreateContainer ever refuse a volume at /dev, that one)
    assert any(why in failure for why in ("null device", "mask path", "InvalidArgument")), failure
    # nothing was written into the host directory behind the volume: no device node, link or directory
    assert sorted(os.listdir(volume)) == before
    for entry in volume.iterdir():
        mode = entry.lstat().st_mode
        assert not (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)), entry
    states = [c["state"] for c in pycri.crictl_json("ps", "-a")["containers"]]
    assert "CONTAINER_RUNNING" not in states, states


def test_default_dev_still_masks(pycri: Pycri) -> None:
    """The usual /dev (the runtime's tmpfs with its own null device) masks as before."""
    pod = pycri.run_pod("masked")
    ctr = pycri.run(pod, "masked", "main", ["sleep", "1000"])
    out = pycri.crictl("exec", "-s", ctr, "sh", "-c", "wc -c < /proc/timer_list; stat -c %t:%T /proc/timer_list /dev/null")
    assert out.stdout.split() == ["0", "1:3", "1:3"], out.stdout
