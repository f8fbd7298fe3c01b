"""Attack: root in a container with CAP_MKNOD (in the default capability set) on a cgroup v2
host makes a node of the host's disk and reads it. cgroup v2 has no devices controller: the
device rules must be an eBPF program (cgroups/devices_bpf.py), and pycri-runtime loaded none,
so only v1 hosts were protected.

These machines boot cgroup v1, so the tests that show it (tests/v2/test_devices.py: the disk
stays closed with the default rules, /dev/null and /dev/zero work, an allow rule opens it) run
inside a pure cgroup v2 User-Mode Linux through hack/run-in-v2.sh; this test runs all of
tests/v2 there and fails unless they pass. Skipped only where UML cannot be installed."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parents[2]
UML = Path("/usr/bin/linux.uml")


@pytest.fixture(scope="module")
def uml() -> Path:
    if os.geteuid() != 0:
        pytest.skip("the cgroup v2 guest (User-Mode Linux) runs as root")
    if not UML.exists():
        result = subprocess.run(["apt-get", "install", "-y", "-q", "user-mode-linux"], capture_output=True,
                                text=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, timeout=900)
        if not UML.exists():
            pytest.skip(f"User-Mode Linux cannot be installed (apt-get: {result.returncode}): {result.stderr[-500:]}")
    return UML


def test_v2_device_filter_in_a_cgroup_v2_guest(uml: Path) -> None:
    command = f"{sys.executable} -m pytest tests/v2 -q -p no:cacheprovider -rs"
    started = time.monotonic()
    result = subprocess.run([str(CHECKOUT / "hack" / "run-in-v2.sh"), command], cwd=CHECKOUT,
                            capture_output=True, text=True, timeout=1800)
    took = time.monotonic() - started
    report = f"run-in-v2.sh exited {result.returncode} after {took:.0f} s:\n{result.stdout}\n{result.stderr}"
    assert result.returncode == 0, report
    assert " passed" in result.stdout and "skipped" not in result.stdout, report
