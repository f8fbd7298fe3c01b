"""HostPodCgroups.remove_stale on the host's real cgroups: the pod cgroup pycri makes for a pod
whose config names no parent (/pycri/<id>), left by a daemon that lost the pod's row, goes when
it is empty and stays when a process is in it."""
from __future__ import annotations

import os
import subprocess
import uuid

import pytest

from pycri import cgroups
from pycri.sandbox.host import HostPodCgroups

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def pod_id() -> str:
    return uuid.uuid4().hex + uuid.uuid4().hex  # (the form SandboxService gives)


def test_an_empty_stale_pod_cgroup_is_removed_and_a_missing_one_is_no_error() -> None:
    pods, sandbox_id = HostPodCgroups(), pod_id()
    pods.create(pods.default_parent(sandbox_id), sandbox_id)
    manager = cgroups.new_manager(pods.default_parent(sandbox_id), sandbox_id, driver="cgroupfs")
    try:
        assert manager.exists()
        assert pods.remove_stale(sandbox_id) is True
        assert not manager.exists()
        assert pods.remove_stale(sandbox_id) is False
    finally:
        if manager.exists():
            manager.destroy()


def test_a_stale_pod_cgroup_with_a_process_in_it_stays() -> None:
    pods, sandbox_id = HostPodCgroups(), pod_id()
    pods.create(pods.default_parent(sandbox_id), sandbox_id)
    manager = cgroups.new_manager(pods.default_parent(sandbox_id), sandbox_id, driver="cgroupfs")
    process = subprocess.Popen(["sleep", "600"], preexec_fn=lambda: manager.add(os.getpid()))
    try:
        assert pods.remove_stale(sandbox_id) is False
        assert manager.exists() and process.poll() is None
    finally:
        process.kill()
        process.wait()
        manager.destroy()
