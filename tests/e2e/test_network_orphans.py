"""A daemon that starts over what an earlier one left: pod network state that no sandbox row
names (sandbox/orphans.py). The daemon has a network of its own (conf dir, bridge pycrio0,
10.196.0.0/24, the bridge's per-pod masquerade as the benchmarks' networks have it, portmap) whose
host-local dataDir is under its root. A pod runs with a host port, the daemon is SIGKILLed and its
pins taken down, and then either its database goes (its rows: the CNI cache and the lease stay) or
its whole root (as the benchmarks' fresh start does: only the nat rules stay). The next start
takes down the lease and every nat rule and chain of the pod."""
from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pycri import cgroups
from tests.e2e.harness import Pycri

BRIDGE = "pycrio0"
NETWORK = "pycri-orphans"
SUBNET = "10.196.0.0/24"
HOST_PORT = 18196


def pod_cgroup(pod_id: str) -> cgroups.CgroupManager:
    """The cgroup pycri makes for a pod whose config names no parent (sandbox/host.py)."""
    return cgroups.new_manager(f"/pycri/{pod_id}", pod_id, driver="cgroupfs")


def nat_rules() -> list[str]:
    return subprocess.run(["iptables", "-w", "-t", "nat", "-S"], capture_output=True, text=True,
                          check=True).stdout.splitlines()


def pod_hash(pod_id: str) -> str:
    return hashlib.sha512((NETWORK + pod_id).encode()).hexdigest()[:21]


def traces(pod_id: str, data_dir: Path) -> dict[str, Any]:
    rules = nat_rules()
    leases = data_dir / NETWORK
    return {
        "rules": [r for r in rules if pod_id in r],
        # the bridge's CNI-<hash> and portmap's CNI-DN-<hash>: sha512 of network name and pod id
        "chains": [r for r in rules if r.startswith("-N CNI-") and pod_hash(pod_id) in r],
        "leases": sorted(n for n in (leases.iterdir() if leases.is_dir() else []) if n.name[0].isdigit()
                         and n.read_text(errors="replace").startswith(pod_id)),
    }


def remove_rules_of(pod_id: str) -> None:
    """The test's own rules and chains, should the daemon not have removed them."""
    rules = nat_rules()
    ours = [r for r in rules if r.startswith("-A ") and pod_id in r]
    chains = {r.split(" -j ")[-1].split()[0] for r in ours} - {"ACCEPT", "MASQUERADE", "CNI-HOSTPORT-DNAT"}
    chains |= {r.split()[1] for r in ours} - {"POSTROUTING", "CNI-HOSTPORT-DNAT", "OUTPUT", "PREROUTING"}
    for rule in ours:
        subprocess.run(["iptables", "-w", "-t", "nat", "-D", *shlex.split(rule)[1:]], capture_output=True)
    for chain in chains:
        if chain.startswith("CNI-") and "HOSTPORT" not in chain:
            subprocess.run(["iptables", "-w", "-t", "nat", "-F", chain], capture_output=True)
            subprocess.run(["iptables", "-w", "-t", "nat", "-X", chain], capture_output=True)


@pytest.mark.parametrize("wiped", ["database", "root"])
def test_a_start_takes_down_what_pods_no_row_names_left(tmp_path: Path, registries: Any, wiped: str) -> None:
    if not shutil.which("iptables"):
        pytest.skip("needs iptables")
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    data_dir = tmp_path / "root" / "cni-networks"
    (conf_dir / "10-orphans.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0", "name": NETWORK, "plugins": [
            {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": True, "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": SUBNET}]], "routes": [{"dst": "0.0.0.0/0"}],
                      "dataDir": str(data_dir)}},
            {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True}]}))
    pycri = Pycri(tmp_path, f'[network]\ncni_conf_dir = "{conf_dir}"\ncni_bin_dirs = ["/opt/cni/bin", '
                            '"/usr/lib/cni"]\nwrite_default = false\n')
    pod_id = ""
    try:
        pycri.start()
        pod_id = pycri.run_pod("orphan", port_mappings=[{"protocol": 0, "container_port": 80,
                                                         "host_port": HOST_PORT}])
        before = traces(pod_id, data_dir)
        assert len(before["leases"]) == 1 and len(before["chains"]) == 2 and len(before["rules"]) >= 4
        assert pod_cgroup(pod_id).exists()  # pycri's own (crictl's pod names no parent)
        pycri.kill()
        pycri.unmount_pin_root()  # (its namespace goes: the bridge plugin's DEL cannot reach it)
        if wiped == "database":
            for path in pycri.root.glob("pycri.db*"):
                path.unlink()
        else:
            shutil.rmtree(pycri.root)
        pycri.start()  # recovery is over before it serves
        assert pycri.crictl_json("pods")["items"] == []
        assert traces(pod_id, data_dir) == {"rules": [], "chains": [], "leases": []}
        assert "releasing pod network state that no pod sandbox owns" in pycri.log.read_text()
        assert not pod_cgroup(pod_id).exists()  # (empty: the pod had no process of its own)
    finally:
        pycri.stop()
        pycri.unmount_pin_root()
        if pod_id:
            remove_rules_of(pod_id)
        subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)
        if pod_id and pod_cgroup(pod_id).exists():
            pod_cgroup(pod_id).destroy()
