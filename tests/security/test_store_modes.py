"""Local users reach the image store and bundles (CVE-2021-41103, CVE-2024-25621 class).

Below pycri's root an unprivileged host user could list an image's layers, run its setuid
binaries straight from `<root>/images/layers/<id>/diff`, read blobs, a container's secret
env from `bundle/config.json`, the database and the container's log. Everything below the
root (and the state directory) is root-only now; the root itself and the containers and
sandboxes directories stay searchable for the root of a user-namespaced pod, not listable.
"""
from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.e2e.harness import Pycri
from tests.security.hostile import as_attacker, f, layer, push_image

SECRET = "pycri-secret-3b1f"


@pytest.fixture
def tmp_path(reachable_tmp_path: Path) -> Path:
    """pytest's directories are 0700, which alone would keep the attacker out: the test runs
    where others may search, as /var/lib is for a real pycri (tests.e2e.conftest.reachable_tmp_path)."""
    return reachable_tmp_path


def _denied(result: subprocess.CompletedProcess[str]) -> bool:
    return result.returncode != 0 and SECRET not in result.stdout


def test_local_user_cannot_reach_layers_blobs_bundles_db_or_logs(pycri: Pycri, attacker: str) -> None:
    image = push_image("store-modes", layer("store-modes", f("bin/suid-sh", b"#!/bin/sh\nid\n", mode=0o4755),
                                            f("etc/secret.txt", SECRET)))
    pod = pycri.run_pod("modes")
    ctr = pycri.run(pod, "modes", "main", ["sh", "-c", f"echo {SECRET}; sleep 1000"], image=image,
                    envs=[{"key": "PASSWORD", "value": SECRET}])
    root = pycri.root
    layers = [p for p in (root / "images/layers").iterdir() if not p.name.startswith(".")]
    blobs = list((root / "images/content/blobs/sha256").iterdir())
    assert layers and blobs
    ours = next(p for p in layers if (p / "diff/etc/secret.txt").exists())
    bundle = root / "containers" / ctr / "bundle"
    assert SECRET in (bundle / "config.json").read_text()
    log = pycri.base / "logs" / "modes" / "main.log"
    deadline_reached = _wait_for(lambda: log.exists() and SECRET in log.read_text())
    assert deadline_reached, "the container's log never showed its output"

    # the unprivileged user: nothing to list, read or run
    assert _denied(as_attacker("ls", str(root / "images/layers")))
    assert _denied(as_attacker("ls", str(ours / "diff")))
    assert _denied(as_attacker("cat", str(ours / "diff/etc/secret.txt")))
    assert _denied(as_attacker("sh", "-c", f"exec {ours}/diff/bin/busybox true"))
    assert _denied(as_attacker("stat", str(ours / "diff/bin/suid-sh")))
    for blob in blobs:
        assert _denied(as_attacker("head", "-c", "1", str(blob)))
    assert _denied(as_attacker("cat", str(bundle / "config.json")))
    assert _denied(as_attacker("ls", str(root / "containers" / ctr / "rootfs/merged")))
    assert _denied(as_attacker("sh", "-c", f"exec {root}/containers/{ctr}/rootfs/merged/bin/busybox true"))
    for name in ("pycri.db", "pycri.db-wal"):
        assert _denied(as_attacker("head", "-c", "1", str(root / name)))
    assert _denied(as_attacker("cat", str(log)))
    assert _denied(as_attacker("ls", str(root / "sandboxes")))
    sandbox_dirs = list((root / "sandboxes").iterdir())
    assert sandbox_dirs
    for directory in sandbox_dirs:
        assert _denied(as_attacker("ls", str(directory)))
        assert _denied(as_attacker("cat", str(directory / "hosts")))
    # the root and the directories a user-namespaced pod's root passes through are not listable
    for directory in (root, root / "containers", root / "containers" / ctr, pycri.state,
                      pycri.state / "runtime/pycri", pycri.state / "exits"):
        assert _denied(as_attacker("ls", str(directory)))
        assert not stat.S_IMODE(os.stat(directory).st_mode) & 0o066

    # root (conmon, the runtime) still works: the container runs and exec works
    assert pycri.crictl("exec", "-s", ctr, "cat", "/etc/secret.txt").stdout.strip() == SECRET


def test_start_up_tightens_an_older_store(tmp_path: Path, registries: object, attacker: str) -> None:
    """Directories and files an older pycri made with default modes are tightened at start-up."""
    root = tmp_path / "root"
    loose = [root, root / "images", root / "images/layers", root / "images/content", root / "containers",
             root / "containers/old/bundle", root / "containers/old/rootfs/merged", root / "sandboxes/old",
             tmp_path / "run"]
    for directory in loose:
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o755)
    (root / "containers/old/bundle/config.json").write_text(SECRET)
    (root / "containers/old/bundle/config.json").chmod(0o644)
    (root / "pycri.db").touch(0o644)
    (root / "sandboxes/old/hosts").write_text(SECRET)
    daemon = Pycri(tmp_path)
    daemon.start()
    try:
        assert _denied(as_attacker("cat", str(root / "containers/old/bundle/config.json")))
        assert _denied(as_attacker("ls", str(root / "images/layers")))
        assert _denied(as_attacker("head", "-c", "1", str(root / "pycri.db")))
        assert stat.S_IMODE(os.stat(root / "pycri.db").st_mode) == 0o600
        assert _denied(as_attacker("cat", str(root / "sandboxes/old/hosts")))
        assert _denied(as_attacker("ls", str(root / "containers/old/rootfs/merged")))
        for directory in (root / "images", root / "containers/old/bundle", root / "containers/old/rootfs",
                          root / "sandboxes/old"):
            assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700, directory
        for directory in (root, root / "containers", root / "sandboxes"):
            assert stat.S_IMODE(os.stat(directory).st_mode) == 0o711, directory
    finally:
        daemon.stop()
        daemon.unmount_pin_root()


def _wait_for(condition: object, timeout: float = 60) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.2)
    return False
