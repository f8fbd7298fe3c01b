"""The cgroup v2 half of the suites, run once per pytest process inside a pure cgroup v2 kernel.

These machines boot cgroup v1 (hybrid). `hack/run-in-v2.sh` boots a User-Mode Linux guest with
a pure cgroup v2 hierarchy (cpu io memory pids) over this checkout; `guest_results()` runs there,
in one boot, the tests whose cgroup v2 half cannot run on the host:

- tests/unit/test_cgroups_v1.py, tests/unit/test_cgroups_v2.py (the managers),
- tests/integration (the runtime against the real kernel; layout-aware, see conftest.LAYOUT),
  but not the outer tests themselves nor those that touch no cgroup (`NOT_CGROUP`),
- tests/v2 (v2 only: the eBPF device filter, OOM kills, memory.oom.group, the daemon on v2),
- tests/e2e/test_pods.py -k life_cycle (a pod's life cycle through crictl; the registry runs
  inside the guest, on loopback).

The inner pytest writes a JUnit XML file into a directory of the checkout (the guest mounts the
checkout read-write); the outer tests (tests/integration/test_in_cgroup_v2.py,
tests/security/test_cgroup_v2_devices.py) assert on their part of it. The result is cached, so
however many outer tests ask, the guest boots once.
"""
from __future__ import annotations

import functools
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parents[2]
UML = Path("/usr/bin/linux.uml")
TARGETS = (
    "tests/unit/test_cgroups_v1.py", "tests/unit/test_cgroups_v2.py",
    "tests/integration", "tests/v2",
    "tests/e2e/test_pods.py::test_life_cycle",
)
OUTER = ("tests/integration/test_in_cgroup_v2.py",)
# integration tests that touch no cgroup, left out of the guest (they run on the host): building
# and installing the wheel took 54 of the guest's 916 s (2026-12-07)
NOT_CGROUP = ("tests/integration/test_package.py",)
# a deadline for a guest that hangs, not a check of its speed: the run took ~300 s here on
# 2026-12-06 and 830-1000 s in the CI runs of 2026-12-07 (one UML CPU, as the suites grew);
# 1200 s left too little room, 2400 s still ends well inside CI's 90 minutes
TIMEOUT = 2400


@dataclass
class Case:
    nodeid: str  # "tests/v2/test_devices.py::test_x[param]"
    outcome: str  # passed, failed, error, skipped
    detail: str = ""


@dataclass
class GuestRun:
    returncode: int
    seconds: float
    output: str
    cases: list[Case] = field(default_factory=list)

    def under(self, prefix: str) -> list[Case]:
        return [c for c in self.cases if c.nodeid.startswith(prefix)]

    def report(self, prefix: str) -> str:
        lines = [f"{c.outcome}: {c.nodeid}\n{c.detail[-3000:]}" for c in self.under(prefix) if c.outcome != "passed"]
        return (f"run-in-v2.sh exited {self.returncode} after {self.seconds:.0f} s; {prefix}: "
                f"{len(self.under(prefix))} cases\n" + "\n".join(lines) + f"\n--- output ---\n{self.output[-6000:]}")


def _nodeid(case: ET.Element) -> str:
    """JUnit's classname "tests.v2.test_devices" (or "...test_x.TestClass") and name -> a node id."""
    parts = case.get("classname", "").split(".")
    for cut in range(len(parts), 0, -1):
        module = "/".join(parts[:cut]) + ".py"
        if (CHECKOUT / module).is_file():
            return "::".join([module, *parts[cut:], case.get("name", "")])
    return f"{case.get('classname')}::{case.get('name')}"


def parse_junit(path: Path) -> list[Case]:
    cases = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, detail = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed"}.get(child.tag, child.tag)
                detail = (child.get("message") or "") + "\n" + (child.text or "")
                if child.tag != "skipped":
                    break
        cases.append(Case(_nodeid(case), outcome, detail))
    return cases


def require_guest() -> None:
    """Skip (saying why) where the guest cannot run: not root, or User-Mode Linux not installable."""
    if os.geteuid() != 0:
        pytest.skip("the cgroup v2 guest (User-Mode Linux) runs as root")
    if Path("/sys/fs/cgroup/cgroup.controllers").exists() and "memory" in \
            Path("/sys/fs/cgroup/cgroup.controllers").read_text().split():
        pytest.skip("this host is cgroup v2 already: the suites ran here directly")
    if not UML.exists():
        result = subprocess.run(["apt-get", "install", "-y", "-q", "user-mode-linux"], capture_output=True,
                                text=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, timeout=900)
        if not UML.exists():
            pytest.skip(f"User-Mode Linux cannot be installed (apt-get: {result.returncode}): {result.stderr[-500:]}")


@functools.cache
def guest_results() -> GuestRun:
    """Boot the guest once and run TARGETS there."""
    results = Path(tempfile.mkdtemp(prefix=".pycri-v2-results-", dir=CHECKOUT))
    try:
        junit = results / "junit.xml"
        command = " ".join([
            shlex.quote(sys.executable), "-m", "pytest", *TARGETS, "-q", "-p", "no:cacheprovider", "-rfEs",
            *(f"--ignore={path}" for path in OUTER + NOT_CGROUP), f"--junitxml={shlex.quote(str(junit))}",
        ])
        started = time.monotonic()
        process = subprocess.Popen([str(CHECKOUT / "hack" / "run-in-v2.sh"), command], cwd=CHECKOUT,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   start_new_session=True)
        try:
            output, _ = process.communicate(timeout=TIMEOUT)
            run = GuestRun(process.returncode, time.monotonic() - started, output)
        except subprocess.TimeoutExpired:  # a result all the same (cached: the guest is not booted again)
            os.killpg(process.pid, signal.SIGKILL)  # the script, linux.uml and its threads: its own group
            output, _ = process.communicate()
            run = GuestRun(-1, time.monotonic() - started, f"timed out after {TIMEOUT} s\n{output}")
        if junit.exists():
            run.cases = parse_junit(junit)
        return run
    finally:
        shutil.rmtree(results, ignore_errors=True)


def assert_all_passed(prefix: str, *, at_least: int = 1) -> GuestRun:
    """Every case under `prefix` passed in the guest (no failure, no error, no skip) and there
    were at least `at_least` of them."""
    run = guest_results()
    cases = run.under(prefix)
    assert len(cases) >= at_least, run.report(prefix)
    assert all(c.outcome == "passed" for c in cases), run.report(prefix)
    return run
