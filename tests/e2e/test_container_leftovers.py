"""A runtime whose create and delete both fail (as a broken pycri-runtime did, with
ModuleNotFoundError) must not leak a container: the failed create (reported by the start,
the container then exited with StartError) has its rootfs unmounted at once; its row and
directory stay (the runtime may still have it) across a restart, which still starts; RemovePodSandbox fails, keeping the pod, until the runtime's delete works, then
removes the leftover and the pod with nothing left behind. A real daemon with a runtime
handler whose path is a script in front of runc."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.e2e.harness import Pycri

# runc, except that create always fails and delete fails until the file FIXED exists
BROKEN_RUNTIME = """#!/bin/sh
for arg; do
  case "$arg" in
    create) echo "ModuleNotFoundError: No module named 'pycri.runtime.init'" >&2; exit 1 ;;
    delete) [ -e "{fixed}" ] && exec /usr/bin/runc "$@"
            echo "ModuleNotFoundError: No module named 'pycri.runtime.init'" >&2; exit 1 ;;
  esac
done
exec /usr/bin/runc "$@"
"""


@pytest.fixture
def broken(tmp_path: Path, registries: object) -> tuple[Pycri, Path]:  # type: ignore[misc]
    fixed = tmp_path / "fixed"
    script = tmp_path / "broken-runtime"
    script.write_text(BROKEN_RUNTIME.format(fixed=fixed))
    script.chmod(0o755)
    daemon = Pycri(tmp_path, extra_config=f'[runtime.handlers."broken"]\npath = "{script}"\n')
    daemon.start()
    try:
        yield daemon, fixed
    finally:
        fixed.touch()  # whatever failed: the runtime works again, so everything can go
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.remove_everything()
        daemon.stop()
        daemon.unmount_pin_root()


def mounted_under(path: Path) -> bool:
    return f" {path}/" in Path("/proc/self/mountinfo").read_text()


def unmounted_soon(path: Path) -> None:
    deadline = time.monotonic() + 30
    while mounted_under(path):  # (an exited container is unmounted in the background)
        assert time.monotonic() < deadline, f"still mounted under {path}"
        time.sleep(0.05)


def test_a_runtime_whose_create_and_delete_fail_leaks_nothing(broken: tuple[Pycri, Path]) -> None:
    pycri, fixed = broken
    pod = pycri.run_pod("leftover", runtime="broken")
    containers = pycri.root / "containers"
    before = set(os.listdir(containers))
    made = []
    for attempt in range(2):
        ctr = pycri.base / f"ctr-{attempt}.json"
        ctr.write_text(f'{{"metadata": {{"name": "c{attempt}"}}, "image": {{"image": "busybox"}}, '
                       '"command": ["true"], "linux": {}}')
        pycri.crictl("pull", "busybox")
        # CreateContainer returns once the runtime's create is on its way; its failure is the start's
        made.append(pycri.crictl("create", pod, str(ctr), str(pycri.base / "pod-leftover.json")).stdout.strip())
        result = pycri.crictl("start", made[-1], check=False)
        assert result.returncode != 0 and "ModuleNotFoundError" in result.stderr, result.stderr
        status = pycri.crictl_json("inspect", made[-1])["status"]
        assert (status["state"], status["reason"]) == ("CONTAINER_EXITED", "StartError")
    leftovers = set(os.listdir(containers)) - before
    assert leftovers == set(made)  # the runtime may still have them: their files stay...
    unmounted_soon(containers)  # ...but nothing is mounted, although the runtime's delete failed

    pycri.stop()  # a restart with the runtime still broken starts, and keeps them
    pycri.start()
    assert set(os.listdir(containers)) - before == leftovers

    pycri.crictl("stopp", pod)
    result = pycri.crictl("rmp", pod, check=False)
    assert result.returncode != 0 and "ModuleNotFoundError" in result.stderr, result.stderr
    assert [p["id"] for p in pycri.crictl_json("pods")["items"]] == [pod]  # the pod stays while they do

    fixed.touch()
    pycri.crictl("rmp", pod)
    assert pycri.crictl_json("pods")["items"] == []
    assert set(os.listdir(containers)) - before == set() and not mounted_under(containers)
