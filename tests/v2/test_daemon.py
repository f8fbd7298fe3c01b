"""The daemon on a real cgroup v2 kernel, through the real crictl (the test registry runs inside
the guest, on loopback): a container killed for its memory limit is reported OOMKilled; its
stats come from the v2 files; a container has a cgroup namespace of its own (as containerd's
CRI gives one on v2), a privileged one the host's; UpdateContainerResources writes v2 files."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import pycri, registries  # noqa: F401  (fixtures; `pycri` here is the daemon)
from tests.e2e.harness import Pycri

pytestmark = pytest.mark.e2e
LIMIT = 32 << 20


def wait_for(predicate: Any, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def inspect(daemon: Pycri, container_id: str) -> dict[str, Any]:
    return daemon.crictl_json("inspect", container_id)


def cgroup_dir(daemon: Pycri, container_id: str) -> Path:
    pid = int(inspect(daemon, container_id)["info"]["pid"])
    line = Path(f"/proc/{pid}/cgroup").read_text().strip()
    assert line.startswith("0::/"), line  # one line, the unified tree
    return Path("/sys/fs/cgroup") / line[len("0::/"):]


def test_oom_killed_container_is_reported_oomkilled(pycri: Pycri) -> None:  # noqa: F811
    pod = pycri.run_pod("oom")
    ctr = pycri.run(pod, "oom", "hog", ["dd", "if=/dev/zero", "of=/dev/null", "bs=96M", "count=1"],
                    linux={"resources": {"memory_limit_in_bytes": LIMIT, "memory_swap_limit_in_bytes": LIMIT}})
    wait_for(lambda: inspect(pycri, ctr)["status"]["state"] == "CONTAINER_EXITED")
    status = inspect(pycri, ctr)["status"]
    assert status["reason"] == "OOMKilled" and status["exitCode"] == 137, status
    pycri.crictl("rm", ctr)
    pycri.crictl("stopp", pod)
    pycri.crictl("rmp", pod)


def test_stats_namespaces_and_update_on_v2(pycri: Pycri) -> None:  # noqa: F811
    pod = pycri.run_pod("v2")
    ctr = pycri.run(pod, "v2", "main", ["sh", "-c", "head -c 8000000 /dev/zero > /tmp/file; exec sleep 1000"],
                    linux={"resources": {"memory_limit_in_bytes": 64 << 20, "cpu_quota": 50000,
                                         "cpu_period": 100000, "cpu_shares": 512}})
    cgroup = cgroup_dir(pycri, ctr)
    assert (cgroup / "memory.max").read_text().strip() == str(64 << 20)
    assert (cgroup / "cpu.max").read_text().strip() == "50000 100000"
    assert (cgroup / "cpu.weight").read_text().strip() == "20"
    # its own cgroup namespace: the container sees its cgroup as / and only its subtree
    seen = pycri.crictl("exec", "-s", ctr, "cat", "/proc/self/cgroup", "/sys/fs/cgroup/memory.max").stdout.split()
    assert seen == ["0::/", str(64 << 20)], seen
    pid = int(inspect(pycri, ctr)["info"]["pid"])
    assert os.readlink(f"/proc/{pid}/ns/cgroup") != os.readlink("/proc/self/ns/cgroup")

    # stats: v2's memory.current, memory.stat (the tmpfs file is shmem, in the working set), cpu.stat
    wait_for(lambda: int(json.loads(pycri.crictl("stats", "-o", "json", ctr).stdout)["stats"][0]
                         ["memory"]["workingSetBytes"]["value"]) > 8_000_000)
    stats = json.loads(pycri.crictl("stats", "-o", "json", ctr).stdout)["stats"][0]
    assert int(stats["cpu"]["usageCoreNanoSeconds"]["value"]) > 0

    # UpdateContainerResources writes the v2 files
    pycri.crictl("update", "--memory", str(128 << 20), "--cpu-quota", "20000", ctr)
    assert (cgroup / "memory.max").read_text().strip() == str(128 << 20)
    assert (cgroup / "cpu.max").read_text().strip() == "20000 100000"

    privileged = pycri.run(pod, "v2", "privileged", ["sleep", "1000"],
                           linux={"security_context": {"privileged": True}})
    ppid = int(inspect(pycri, privileged)["info"]["pid"])
    assert os.readlink(f"/proc/{ppid}/ns/cgroup") == os.readlink("/proc/self/ns/cgroup")
    pycri.crictl("stopp", pod)
    pycri.crictl("rmp", pod)
    assert not cgroup.exists()
