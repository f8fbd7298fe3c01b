"""Attack: root in a container with CAP_MKNOD (in the default capability set) on a cgroup v2
host makes a node of the host's disk and reads it. cgroup v2 has no devices controller: the
device rules must be an eBPF program (cgroups/devices_bpf.py), and pycri-runtime loaded none,
so only v1 hosts were protected.

These machines boot cgroup v1, so the tests that show it (tests/v2/test_devices.py: the disk
stays closed with the default rules, /dev/null and /dev/zero work, an allow rule opens it) run
inside a pure cgroup v2 User-Mode Linux through hack/run-in-v2.sh; the guest
(tests/integration/cgroup_v2_guest.py, one boot for the whole v2 half of the suites) runs them and
this test fails unless they all pass there. Skipped only where UML cannot be installed."""
from __future__ import annotations

import pytest

from tests.integration.cgroup_v2_guest import assert_all_passed, require_guest


@pytest.fixture
def guest() -> None:
    require_guest()


def test_v2_device_filter_in_a_cgroup_v2_guest(guest: None) -> None:
    # the guest boots once for the whole v2 half (tests/integration/cgroup_v2_guest.py):
    # this test reads the device filter's part of that run
    assert_all_passed("tests/v2/test_devices.py", at_least=3)
