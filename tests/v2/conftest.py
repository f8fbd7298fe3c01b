"""Tests that need a pure cgroup v2 host. On this project's v1 (hybrid) machines they run
inside User-Mode Linux: tests/integration/cgroup_v2_guest.py runs them (with the other suites'
v2 half) through `hack/run-in-v2.sh`, and tests/integration/test_in_cgroup_v2.py and
tests/security/test_cgroup_v2_devices.py fail unless they pass there. Collected anywhere
else they are skipped, saying so (they are never the only place they run).

The runtime fixtures are tests/integration's (make_bundle, pycri-runtime with its own root).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.integration.conftest import (  # noqa: F401  (fixtures)
    busybox_lower, default_config, launcher, make_bundle, pycri, subreaper,
)

CGROUP_ROOT = Path("/sys/fs/cgroup")


def pure_v2() -> bool:
    try:
        return "memory" in (CGROUP_ROOT / "cgroup.controllers").read_text().split()
    except OSError:
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    skip = None
    if not pure_v2():
        skip = pytest.mark.skip(reason="needs a cgroup v2 host with the memory controller: "
                                       "tests/integration/test_in_cgroup_v2.py runs these in one")
    elif os.geteuid() != 0:
        skip = pytest.mark.skip(reason="needs root")
    for item in items:
        if skip is not None and here in Path(str(item.fspath)).parents:
            item.add_marker(skip)
