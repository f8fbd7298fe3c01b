"""Resources of containers on a real cgroup v2 kernel, through pycri-runtime as conmon runs it:
the memory limit holds (a process that allocates past it is OOM-killed and memory.events counts
it), memory.oom.group from linux.resources.unified kills the whole container, the stats come from
the v2 files, and a container has a cgroup namespace whose root is its own cgroup."""
from __future__ import annotations

import json
from pathlib import Path

from pycri.cgroups.v2 import V2Manager
from tests.integration.conftest import CGROUP_ROOT, Bundle, Runtime, new_id, reap

LIMIT = 32 << 20
# busybox dd allocates its block and fills it from /dev/zero: 96 MiB charged to the cgroup
ALLOCATE = "dd if=/dev/zero of=/dev/null bs=96M count=1"


def memory_events(cgroup: Path) -> dict[str, int]:
    return {key: int(value) for key, value in
            (line.split() for line in (cgroup / "memory.events").read_text().splitlines())}


def limited(make_bundle, script: str, **unified: str) -> Bundle:
    bundle = make_bundle("sh", "-c", script)
    bundle.linux["resources"]["memory"] = {"limit": LIMIT, "swap": LIMIT}  # and no swap
    if unified:
        bundle.linux["resources"]["unified"] = dict(unified)
    return bundle.write()


def run(pycri: Runtime, bundle: Bundle, tmp_path: Path, subreaper: set[int]) -> tuple[str, int, Path, str]:
    cid = new_id()
    out = tmp_path / f"{cid}.out"
    with open(out, "wb") as stdout:
        pycri.create(cid, bundle, stdout=stdout, stderr=stdout)
    pid = pycri.state(cid)["pid"]
    subreaper.add(pid)
    cgroup = CGROUP_ROOT / bundle.linux["cgroupsPath"].lstrip("/")
    assert (cgroup / "memory.max").read_text().strip() == str(LIMIT)
    assert (cgroup / "memory.swap.max").read_text().strip() == "0"
    pycri.run("start", cid, check=True)
    code = reap(pid, timeout=120)
    assert code is not None
    pycri.wait_status(cid, "stopped", timeout=60)
    return cid, code, cgroup, out.read_text()


def test_allocating_past_memory_max_is_oom_killed(pycri: Runtime, make_bundle, tmp_path: Path,
                                                  subreaper: set[int]) -> None:
    bundle = limited(make_bundle, f"{ALLOCATE}; echo dd-exit=$?")
    cid, code, cgroup, out = run(pycri, bundle, tmp_path, subreaper)
    assert code == 0, out  # the shell lives: only dd was chosen
    assert "dd-exit=137" in out, out
    events = memory_events(cgroup)
    assert events["oom_kill"] == 1 and events["max"] >= 1, events
    stats = json.loads(pycri.run("events", "--stats", cid, check=True).stdout)["data"]
    assert stats["memory"]["usage"]["limit"] == LIMIT
    assert stats["memory"]["usage"]["usage"] < LIMIT
    # what the daemon's stats and metrics read (cgroups.V2Manager.stats)
    sample = V2Manager(str(CGROUP_ROOT), bundle.linux["cgroupsPath"]).stats()
    assert (sample.oom_kills, sample.memory_limit, sample.memory_swap_limit) == (1, LIMIT, LIMIT)
    assert sample.memory_failcnt >= 1  # memory.events max
    assert sample.memory_max_usage == 0 or LIMIT // 2 < sample.memory_max_usage <= LIMIT  # memory.peak
    assert sample.cpu_usage_ns > 0 and sample.pgfault > 0
    if (cgroup / "memory.pressure").exists():  # PSI, where the kernel has it
        assert set(sample.pressure) == {"cpu", "memory", "io"}
    pycri.run("delete", cid, check=True)
    assert not cgroup.exists()


def test_memory_oom_group_kills_the_whole_container(pycri: Runtime, make_bundle, tmp_path: Path,
                                                   subreaper: set[int]) -> None:
    bundle = limited(make_bundle, f"{ALLOCATE}; echo survived", **{"memory.oom.group": "1"})
    cid, code, cgroup, out = run(pycri, bundle, tmp_path, subreaper)
    assert (cgroup / "memory.oom.group").read_text().strip() == "1"
    assert code == 137 and "survived" not in out, out
    assert memory_events(cgroup)["oom_group_kill"] == 1
    pycri.run("delete", cid, check=True)


def test_cpu_io_pids_and_the_cgroup_namespace(pycri: Runtime, make_bundle, tmp_path: Path,
                                              subreaper: set[int]) -> None:
    bundle = make_bundle("sh", "-c", "cat /proc/self/cgroup; ls /sys/fs/cgroup | grep -c '^memory.max$'; "
                                     "cat /sys/fs/cgroup/pids.max")
    bundle.linux["resources"].update({"cpu": {"shares": 2048, "quota": 25000, "period": 50000},
                                      "pids": {"limit": 42}, "blockIO": {"weight": 500}})
    assert {"type": "cgroup"} in bundle.linux["namespaces"]  # runc spec on v2
    bundle.write()
    cid = new_id()
    out, err = tmp_path / "out", tmp_path / "err"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        pycri.create(cid, bundle, stdout=stdout, stderr=stderr)
    pid = pycri.state(cid)["pid"]
    subreaper.add(pid)
    cgroup = CGROUP_ROOT / bundle.linux["cgroupsPath"].lstrip("/")
    assert (cgroup / "cpu.max").read_text().strip() == "25000 50000"
    assert (cgroup / "cpu.weight").read_text().strip() == "79"
    assert (cgroup / "pids.max").read_text().strip() == "42"
    if (cgroup / "io.weight").exists():
        assert (cgroup / "io.weight").read_text().split()[-1] == "4950"
    else:  # this kernel's io controller has no weight (no BFQ, no io.cost): said, not fatal
        assert "blockIO.weight: the cgroup has no io.weight" in err.read_text()
    pycri.run("update", "--resources", "-", cid, input='{"cpu": {"quota": 10000}}', check=True)
    assert (cgroup / "cpu.max").read_text().strip() == "10000 50000"  # the period stays
    pycri.run("start", cid, check=True)
    assert reap(pid, timeout=120) == 0
    # the container sees its own cgroup as the root of the cgroup2 mount
    assert out.read_text().split() == ["0::/", "1", "42"], err.read_text()
    pycri.wait_status(cid, "stopped", timeout=60)
    pycri.run("delete", cid, check=True)
