"""Chaos: pycri is killed with SIGKILL at random points of pod and container life cycles and
restarted each time. After every restart what pycri lists must match the kernel (a ready pod has
its namespace pins, a running container's process lives, an exited one's does not), and once
everything is removed nothing may be left: no mount, pin, cgroup, IP lease, process or row.

The kill points come from a seeded random generator, so a failing round can be replayed
(PYCRI_CHAOS_SEED, PYCRI_CHAOS_ROUNDS). Where the kill lands varies with the machine's speed;
what is asserted does not depend on it."""
from __future__ import annotations

import os
import random
import re
import subprocess
import threading
import time
from pathlib import Path

from tests.e2e.harness import Pycri
from tests.e2e.test_pods import IPAM_DIR, exited, wait_for

SEED = int(os.environ.get("PYCRI_CHAOS_SEED", "20261206"))
ROUNDS = int(os.environ.get("PYCRI_CHAOS_ROUNDS", "12"))
CGROUPS = [Path("/sys/fs/cgroup") / c / "pycri" for c in ("memory", "cpu", "pids")]


def life_cycle(pycri: Pycri, n: int, shared_pid: bool, stop: threading.Event) -> None:
    """One pod with two containers, from runp to rmp; every call may fail once pycri is gone."""
    def call(*args: str) -> str:
        if stop.is_set():
            raise InterruptedError
        result = pycri.crictl(*args, check=False, timeout=60)
        if result.returncode != 0:
            raise InterruptedError
        return result.stdout.strip()

    options = {"pid": 0 if shared_pid else 1}  # CRI NamespaceMode: POD shares one, CONTAINER its own
    pod_config = pycri.base / f"pod-chaos{n}.json"
    try:
        pod = pycri.run_pod(f"chaos{n}", linux={"security_context": {"namespace_options": options}})
        ids = []
        for name, command in (("sleeper", ["sleep", "1000"]), ("quitter", ["sh", "-c", "echo bye; exit 3"])):
            ctr = pycri.base / f"ctr-chaos{n}-{name}.json"
            ctr.write_text('{"metadata": {"name": "%s"}, "image": {"image": "busybox"}, "command": %s, '
                           '"log_path": "%s.log", "linux": {}}' % (name, str(command).replace("'", '"'), name))
            ids.append(call("create", pod, str(ctr), str(pod_config)))
            call("start", ids[-1])
        call("exec", "-s", ids[0], "true")
        call("stop", "--timeout", "0", ids[0])
        for ctr_id in ids:
            call("rm", ctr_id)
        call("stopp", pod)
        call("rmp", pod)
    except (InterruptedError, AssertionError, subprocess.TimeoutExpired):
        pass


def consistent(pycri: Pycri) -> list[str]:
    """What pycri lists that the kernel contradicts."""
    problems = []
    for pod in pycri.crictl_json("pods")["items"]:
        if pod["state"] == "SANDBOX_READY" and not (pycri.state / "ns" / pod["id"]).is_dir():
            problems.append(f"ready pod {pod['id'][:12]} has no namespace pins")
    for ctr in pycri.crictl_json("ps", "-a")["containers"]:
        info = pycri.crictl_json("inspect", ctr["id"])
        pid = info.get("info", {}).get("pid", 0)
        state = info["status"]["state"]
        if state == "CONTAINER_RUNNING" and (not pid or exited(pid)):
            problems.append(f"running container {ctr['id'][:12]} has no process (pid {pid})")
        if state == "CONTAINER_EXITED" and pid and not exited(pid):
            problems.append(f"exited container {ctr['id'][:12]} still has process {pid}")
    return problems


def processes_of(pycri: Pycri) -> list[str]:
    ps = subprocess.run(["ps", "-eo", "pid,stat,args"], capture_output=True, text=True).stdout.splitlines()
    daemon = str(pycri.process.pid) if pycri.process else "-"
    return [line for line in ps if (str(pycri.root) in line or str(pycri.state) in line)
            and line.split()[0] != daemon and not line.split()[1].startswith("Z") and "crictl" not in line]


def children(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir() if p.is_dir()} if directory.is_dir() else set()


def test_sigkill_at_random_points_leaks_nothing(pycri: Pycri) -> None:
    rng = random.Random(SEED)
    cgroups_before = {c: children(c) for c in CGROUPS}
    leases_before = set(os.listdir(IPAM_DIR)) if IPAM_DIR.is_dir() else set()
    pycri.crictl("pull", "busybox")
    for n in range(ROUNDS):
        stop = threading.Event()
        worker = threading.Thread(target=life_cycle, args=(pycri, n, n % 3 == 0, stop))
        worker.start()
        time.sleep(rng.uniform(0.0, 1.5))  # where the kill lands: chaos, not synchronisation
        pycri.kill()
        stop.set()
        worker.join(timeout=300)
        assert not worker.is_alive(), "a crictl call hung after pycri died"
        pycri.start()
        assert consistent(pycri) == [], f"round {n} (seed {SEED})"
    pycri.remove_everything()
    for ctr in pycri.crictl_json("ps", "-a")["containers"]:
        pycri.crictl("rm", "-f", ctr["id"])
    assert pycri.crictl_json("pods")["items"] == [] and pycri.crictl_json("ps", "-a")["containers"] == []
    wait_for(lambda: processes_of(pycri) == [])
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(pycri.root / "containers") not in mounts
    assert not any(str(pycri.state / "ns") + "/" in line for line in mounts.splitlines())
    assert children(pycri.state / "ns") == set()
    ours = set(re.findall(r"[0-9a-f]{64}", pycri.log.read_text()))  # every id this daemon handed out
    assert {c: (children(c) - cgroups_before[c]) & ours for c in CGROUPS} == {c: set() for c in CGROUPS}
    leases = (set(os.listdir(IPAM_DIR)) if IPAM_DIR.is_dir() else set()) - leases_before
    # host-local's lease files hold the container (here: pod) id they were leased to
    ours_leased = {name for name in leases if name[0].isdigit()
                   and (IPAM_DIR / name).read_text(errors="replace")[:64] in ours}
    assert not ours_leased, "IP leases left"
