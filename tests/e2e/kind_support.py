"""What the kind tests share (tests/e2e/test_kind*.py, test_systemd_cgroups.py): the opt-in
mark, commands, polling, the node image and a node container started the way kind starts one
(kind v0.33.0, pkg/cluster/internal/providers/docker/provision.go: --privileged, a private cgroup
namespace, tmpfs /tmp and /run, a volume on /var), without kind itself."""
from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

REPO = Path(__file__).resolve().parents[2]
NODE_IMAGE = os.environ.get("PYCRI_KIND_IMAGE", "pycri.local/node:v1.37.2")
KUBECTL = Path(os.environ.get("PYCRI_KUBE_BIN", "/usr/local/lib/pycri/kube/bin")) / "kubectl"

OPT_IN = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.environ.get("PYCRI_KIND_E2E") != "1", reason="kind tests are opt-in: PYCRI_KIND_E2E=1"),
]

T = TypeVar("T")


def run(*args: str, check: bool = True, timeout: float = 600, env: dict[str, str] | None = None,
        input: str | bytes | None = None) -> subprocess.CompletedProcess[str]:
    """The command's result; with check, a test failure naming the command and its stderr."""
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, input=input,
                          env=None if env is None else {**os.environ, **env})
    if check and done.returncode:
        pytest.fail(f"{' '.join(args)}: exit {done.returncode}: {done.stderr.strip()[-2000:]}")
    return done


def poll(what: str, check: Callable[[], T], deadline_s: float = 120.0, every_s: float = 0.5) -> T:
    """check() until it returns something true; its last value, or fail with `what`."""
    end = time.monotonic() + deadline_s
    last = None
    while time.monotonic() < end:
        last = check()
        if last:
            return last
        time.sleep(every_s)
    pytest.fail(f"{what}: not after {deadline_s}s (last: {last!r})")


def node_image() -> str:
    """The node image, built (hack/kind-node-image.sh) if docker lacks it or PYCRI_KIND_REBUILD=1;
    dockerd is started first (hack/docker.sh)."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    run(str(REPO / "hack/docker.sh"))
    present = run("docker", "image", "inspect", NODE_IMAGE, check=False).returncode == 0
    if not present or os.environ.get("PYCRI_KIND_REBUILD") == "1":
        run(str(REPO / "hack/kind-node-image.sh"), timeout=3600)
    return NODE_IMAGE


def start_node(name: str, image: str) -> str:
    """A node container as kind starts one; remove it with remove_node."""
    run("docker", "run", "-d", "--name", name, "--hostname", name,
        "--privileged", "--cgroupns=private",
        "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
        "--tmpfs", "/tmp", "--tmpfs", "/run", "--volume", "/var",
        "-e", "container=docker", image)
    return name


def remove_node(name: str) -> None:
    run("docker", "rm", "-f", "-v", name, check=False)
