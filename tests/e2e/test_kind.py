"""The kind node image whose runtime is pycri (issue 13): one node container, without kind.

The 3-node cluster made by `hack/kind.sh up` is tested in tests/e2e/test_kind_cluster.py.

Opt-in, not run by default: they install and start dockerd (hack/docker.sh) and build the node
image (hack/kind-node-image.sh, ~2 min warm). Run them with

    PYCRI_KIND_E2E=1 .venv/bin/python -m pytest tests/e2e/test_kind.py -q -p no:cacheprovider

PYCRI_KIND_REBUILD=1 rebuilds the image even if docker has it. The node is started as kind starts
one (tests/e2e/kind_support.py).
"""
from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from tests.e2e.kind_support import OPT_IN, REPO, node_image, poll, remove_node, run, start_node

pytestmark = OPT_IN


def forward_policy() -> str:
    out = run("iptables", "-S", "FORWARD").stdout
    return next(line.split()[2] for line in out.splitlines() if line.startswith("-P FORWARD"))


@pytest.fixture(scope="module")
def docker() -> str:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    before = forward_policy()
    sock = run(str(REPO / "hack/docker.sh")).stdout.strip()
    assert forward_policy() == before, "dockerd changed the iptables FORWARD policy"
    return sock


@pytest.fixture(scope="module")
def image(docker: str) -> str:
    return node_image()


@pytest.fixture(scope="module")
def node(image: str) -> Iterator[str]:
    name = start_node(f"pycri-kind-test-{uuid.uuid4().hex[:8]}", image)
    try:
        yield name
    finally:
        remove_node(name)


def in_node(node: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run("docker", "exec", node, *args, check=check, timeout=120)


def test_docker_keeps_the_forward_policy(docker: str) -> None:
    # pycri's own suite (bridge pycri0) needs it as it was: hack/docker.sh runs dockerd without iptables
    assert forward_policy() == "ACCEPT"


def test_node_boots_systemd_as_pid_1(node: str) -> None:
    def settled() -> str:
        state = in_node(node, "systemctl", "is-system-running", check=False).stdout.strip()
        return state if state in ("running", "degraded") else ""

    state = poll("systemd up", settled)
    assert state == "running", in_node(node, "systemctl", "--failed", "--no-pager", check=False).stdout
    assert in_node(node, "cat", "/proc/1/comm").stdout.strip() == "systemd"


def test_pycri_answers_on_containerds_socket(node: str) -> None:
    poll("pycri.service active", lambda: in_node(node, "systemctl", "is-active", "pycri", check=False).stdout.strip() == "active")
    out = poll("crictl version", lambda: in_node(node, "crictl", "version", check=False).stdout)
    assert "RuntimeName:  pycri" in out
    assert in_node(node, "test", "-S", "/run/containerd/containerd.sock", check=False).returncode == 0


def test_pycri_runtime_launcher_runs_on_the_nodes_python(node: str) -> None:
    launcher = in_node(node, "head", "-1", "/opt/pycri/venv/bin/pycri-runtime").stdout.strip()
    assert launcher.startswith("#!/usr/bin/python3") and launcher.endswith("-IS")
    assert in_node(node, "/opt/pycri/venv/bin/pycri-runtime", "--version", check=False).returncode == 0


def test_node_has_kinds_layout_and_no_containerd(node: str) -> None:
    version = in_node(node, "cat", "/kind/version").stdout.strip()
    assert version == in_node(node, "kubeadm", "version", "-o", "short").stdout.strip()
    for binary in ("kubeadm", "kubelet", "kubectl", "crictl", "conmon", "catatonit"):
        assert in_node(node, "sh", "-c", f"command -v {binary}", check=False).returncode == 0, binary
    # no containerd: /usr/local/bin/containerd is pycri's front end (hack/kind/containerd), which
    # answers `config dump` for kind load and refuses the rest
    refused = in_node(node, "containerd", "--version", check=False)
    assert refused.returncode != 0 and "runs pycri" in refused.stderr
    assert in_node(node, "systemctl", "is-enabled", "kubelet").stdout.strip() == "enabled"
    assert "pycri.service" in in_node(node, "cat", "/etc/default/kubelet").stdout

