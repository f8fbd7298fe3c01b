"""The cgroup v2 half of the suites, on this v1 (hybrid) host: one User-Mode Linux guest with a
pure cgroup v2 hierarchy runs the cgroup unit tests, the runtime integration tests (each asserts
its layout's files, conftest.LAYOUT), tests/v2 and the e2e pod life cycle through crictl
(tests/integration/cgroup_v2_guest.py); each test here fails unless its part passed there, none
skipped. tests/security/test_cgroup_v2_devices.py reads the device filter's part of the same run.

Skipped only where the guest cannot run (not root, no User-Mode Linux) or on a v2 host, where
the suites run directly."""
from __future__ import annotations

import pytest

from tests.integration.cgroup_v2_guest import assert_all_passed, guest_results, require_guest


@pytest.fixture(autouse=True)
def _guest() -> None:
    require_guest()


def test_cgroup_unit_tests_in_v2() -> None:
    assert_all_passed("tests/unit/test_cgroups_v1.py", at_least=10)
    assert_all_passed("tests/unit/test_cgroups_v2.py", at_least=10)


@pytest.mark.parametrize("module", [
    "test_runtime_lifecycle", "test_runtime_exec", "test_runtime_options", "test_runtime_conmon",
    "test_runtime_console", "test_runtime_differential", "test_runtime_mount_attrs", "test_runtime_seccomp",
    "test_runtime_startup", "test_runtime_create_order", "test_sandbox_cni", "test_sandbox_namespaces", "test_sandbox_portforward",
    "test_image_files", "test_cgroup_v2_device_filter", "test_cgroup_usage",
])
def test_runtime_integration_in_v2(module: str) -> None:
    assert_all_passed(f"tests/integration/{module}.py")


def test_v2_only_tests() -> None:
    for module in ("test_resources", "test_daemon"):
        assert_all_passed(f"tests/v2/{module}.py", at_least=2)


def test_e2e_pod_life_cycle_in_v2() -> None:
    assert_all_passed("tests/e2e/test_pods.py::test_life_cycle", at_least=1)


def test_nothing_else_failed_in_v2() -> None:
    run = guest_results()
    bad = [c for c in run.cases if c.outcome in ("failed", "error")]
    assert run.returncode == 0 and run.cases and not bad, run.report("")
    print(f"cgroup v2 guest: {len(run.cases)} cases in {run.seconds:.0f} s")
