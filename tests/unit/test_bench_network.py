"""hack/bench's CNI networks: pycri's daemon gets pycri's own default network (ipMasq false, the
daemon masquerades the subnet, the bench's take-down removes that chain), containerd's a bridge
with ipMasq true as its own default has. No daemon runs, no iptables: a fake nat table."""
from __future__ import annotations

import json
from pathlib import Path

from hack.bench import runtimes
from pycri.sandbox import cni, default_network, masquerade
from tests.unit.test_sandbox_masquerade import FakeIptables


def test_pycris_bench_network_is_its_default_on_the_bench_bridge_and_subnet(tmp_path: Path) -> None:
    daemon = runtimes.PycriDaemon()
    daemon.root, daemon.cni_conf_dir = tmp_path / "root", tmp_path / "cni"
    daemon.cni_conf_dir.mkdir()
    (daemon.cni_conf_dir / "10-pycri-bench.conflist").write_text("{}")  # an earlier run's, sorting first
    (daemon.cni_conf_dir / "notes.txt").write_text("not a network")
    path = daemon.write_network()
    assert sorted(p.name for p in daemon.cni_conf_dir.iterdir()) == ["10-pycri-bridge.conflist", "notes.txt"]
    network = cni.load_network(daemon.cni_conf_dir)
    assert network.source == str(path) and network.name == "pycri"
    assert json.loads(path.read_text()) == default_network.default_conflist(
        bridge="pycribench0", subnet="10.89.0.0/16", data_dir=tmp_path / "root" / "cni-networks")
    assert network.plugins[0].raw["ipMasq"] is False
    # what the daemon recognizes as its default, so it masquerades the bench subnet (not 10.88)
    assert default_network.masquerade_subnets(network) == ["10.89.0.0/16"]


def test_containerds_bench_network_keeps_the_plugins_masquerade(tmp_path: Path) -> None:
    daemon = runtimes.ContainerdDaemon(Path("/cache/bin"))
    daemon.root, daemon.cni_conf_dir = tmp_path / "root", tmp_path / "cni"
    network = cni.load_network(daemon.write_network().parent)
    assert network.name == "containerd-bench" and network.plugins[0].raw["ipMasq"] is True
    assert network.plugins[0].raw["bridge"] == "ctrdbench0"
    assert network.plugins[0].raw["ipam"]["ranges"] == [[{"subnet": "10.90.0.0/16"}]]
    assert default_network.masquerade_subnets(network) == []


def test_the_take_down_removes_the_pycri_daemons_masquerade_chain_only() -> None:
    iptables = FakeIptables()
    masquerade.ensure("pycri", "10.88.0.0/16", iptables)  # the default daemon's: stays, as docker's does
    masquerade.ensure("pycri", "10.89.0.0/16", iptables)
    daemon = runtimes.PycriDaemon()
    daemon.iptables = iptables
    bench_chain = masquerade.chain_name("pycri", "10.89.0.0/16")
    assert f"nat chain {bench_chain} (masquerade of 10.89.0.0/16)" in daemon.leftovers()
    daemon.remove_masquerade()
    assert bench_chain not in iptables.chains
    assert masquerade.chain_name("pycri", "10.88.0.0/16") in iptables.chains
    assert len(iptables.chains["POSTROUTING"]) == 1
    assert not [x for x in daemon.leftovers() if x.startswith("nat chain")]
    daemon.remove_masquerade()  # nothing left: nothing to do, no error
