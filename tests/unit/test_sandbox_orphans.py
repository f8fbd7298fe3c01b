"""Start-up release of pod network state no sandbox owns (sandbox/orphans.py): which ids get a
DEL, where traces are looked for (pycri's cache; leases and nat rules of networks under pycri's
root only), what DEL is given, and the sandbox service's recovery calling it. Plugins are small
recording processes; iptables and the mount table are fakes."""
from __future__ import annotations

import json
import stat
import sys
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from pycri.common.errors import Unavailable
from pycri.sandbox import cni, orphans
from pycri.sandbox.cni_network import CniNetwork
from pycri.sandbox.fake import FakeCgroups, FakeInfra, FakeNetwork, FakePins
from pycri.sandbox.masquerade import Outcome
from pycri.sandbox.records import CREATING, NOTREADY, READY
from pycri.sandbox.service import SandboxService
from pycri.store.db import Database

GONE = "a" * 64  # ids of the form pycri gives sandboxes
KNOWN = "b" * 64
OTHER_DAEMON = "c" * 64
ALSO_GONE = "d" * 64

RECORDER = """#!{python}
import json, os, sys
conf = json.load(sys.stdin)
with open(conf["log"], "a") as f:
    f.write(json.dumps({{"type": conf["type"], "command": os.environ["CNI_COMMAND"],
                        "id": os.environ["CNI_CONTAINERID"], "netns": os.environ["CNI_NETNS"],
                        "ifname": os.environ["CNI_IFNAME"], "conf": conf}}) + "\\n")
if os.environ["CNI_COMMAND"] == "DEL" and os.environ["CNI_CONTAINERID"] in conf.get("fail", []):
    print(json.dumps({{"cniVersion": conf["cniVersion"], "code": 11, "msg": "try again later"}}))
    sys.exit(1)
if os.environ["CNI_COMMAND"] == "ADD":
    print(json.dumps({{"cniVersion": conf["cniVersion"], "ips": [{{"address": "10.93.0.5/16"}}]}}))
"""


def network_doc(tmp_path: Path, name: str = "benchnet", data_dir: Path | None = None, ip_masq: bool = True,
                **bridge: Any) -> dict[str, Any]:
    """A bridge (with host-local IPAM) and portmap list; both plugins are recorders."""
    log = str(tmp_path / "calls.log")
    ipam = {"type": "host-local", "ranges": [[{"subnet": "10.93.0.0/16"}]]}
    if data_dir is not None:
        ipam["dataDir"] = str(data_dir)
    return {"cniVersion": "1.0.0", "name": name, "plugins": [
        {"type": "bridge", "ipMasq": ip_masq, "ipam": ipam, "log": log, **bridge},
        {"type": "portmap", "capabilities": {"portMappings": True}, "log": log}]}


def parsed(doc: dict[str, Any]) -> cni.NetworkList:
    return cni.parse_network(json.dumps(doc))


def bin_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "bin"
    directory.mkdir(exist_ok=True)
    for name in ("bridge", "portmap", "host-local"):
        path = directory / name
        path.write_text(RECORDER.format(python=sys.executable))
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return directory


def calls(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "calls.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def lease(data_dir: Path, network: str, ip: str, owner: str, ifname: str = "eth0") -> Path:
    directory = data_dir / network
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / ip
    path.write_text(f"{owner}\r\n{ifname}")
    return path


class FakeIptables:
    """A nat table as `iptables -S` lines; -D, -F and -X change it; every call is recorded."""

    def __init__(self, rules: list[str] | None = None, fail: bool = False) -> None:
        self.rules = list(rules or [])
        self.calls: list[list[str]] = []
        self.fail = fail

    def __call__(self, args: Any) -> Outcome:
        args = list(args)
        self.calls.append(args)
        if self.fail:
            return Outcome(4, "", "iptables: Resource temporarily unavailable.")
        table, op, rest = args[1], args[2], args[3:]
        assert table == "nat"
        if op == "-S":
            if not rest:
                return Outcome(0, "\n".join(self.rules) + "\n")
            chain = rest[0]
            if chain != "POSTROUTING" and f"-N {chain}" not in self.rules:
                return Outcome(1, "", "iptables: No chain/target/match by that name.")
            return Outcome(0, "\n".join(r for r in self.rules if r.split()[1] == chain) + "\n")
        if op == "-D":
            match = [r for r in self.rules if r.startswith(f"-A {rest[0]} ") and r.split(" -j ")[-1] == rest[-1]]
            if not match:
                return Outcome(1, "", "iptables: Bad rule.")
            self.rules.remove(match[0])
            return Outcome(0)
        if op == "-F":
            self.rules = [r for r in self.rules if not r.startswith(f"-A {rest[0]} ")]
            return Outcome(0)
        if op == "-X":
            self.rules.remove(f"-N {rest[0]}")
            return Outcome(0)
        raise AssertionError(f"unexpected iptables call {args}")

    def writes(self) -> list[list[str]]:
        return [c for c in self.calls if c[2] != "-S"]


def bridge_rules(network: str, pod_id: str, ip: str = "10.93.0.5") -> list[str]:
    """What the bridge plugin's ipMasq makes for a pod, as iptables -S prints it."""
    chain = orphans.bridge_chain(network, pod_id)
    comment = f'--comment "name: \\"{network}\\" id: \\"{pod_id}\\""'
    return [f"-N {chain}",
            f"-A POSTROUTING -s {ip}/32 -m comment {comment} -j {chain}",
            f"-A {chain} -d 10.93.0.0/16 -m comment {comment} -j ACCEPT",
            f"-A {chain} ! -d 224.0.0.0/4 -m comment {comment} -j MASQUERADE"]


def dnat_rule(network: str, pod_id: str, ports: str = "18080") -> str:
    return (f'-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \\"{network}\\" id: \\"{pod_id}\\"" '
            f"-m multiport --dports {ports} -j CNI-DN-{orphans.bridge_chain(network, pod_id)[4:25]}")


def mountinfo(*mount_points: str) -> str:
    return "".join(f"{900 + i} 30 0:4 net:[4026532{i}] {m} rw shared:1 - nsfs nsfs rw\n"
                   for i, m in enumerate(mount_points))


# -- which ids get a DEL ----------------------------------------------------------


def trace(kind: str, pod_id: str, network: str = "benchnet", ifname: str = "eth0") -> orphans.Trace:
    return orphans.Trace(kind, parsed({"cniVersion": "1.0.0", "name": network, "plugins": [{"type": "bridge"}]}),
                         pod_id, ifname, f"{kind} of {pod_id[:4]}")


def test_only_ids_no_sandbox_has_and_no_other_daemon_pins_are_orphans() -> None:
    found = orphans.orphans(
        [trace(orphans.CACHE, GONE), trace(orphans.LEASE, KNOWN), trace(orphans.NAT_RULE, KNOWN),
         trace(orphans.LEASE, OTHER_DAEMON), trace(orphans.NAT_RULE, ALSO_GONE)],
        known={KNOWN}, live_elsewhere={OTHER_DAEMON})
    assert sorted(o.container_id for o in found) == [GONE, ALSO_GONE]


def test_traces_of_one_attachment_make_one_del_with_the_cache_first() -> None:
    (orphan,) = orphans.orphans([trace(orphans.NAT_RULE, GONE), trace(orphans.LEASE, GONE, ifname="net1"),
                                 trace(orphans.CACHE, GONE, ifname="eth0")], known=set(), live_elsewhere=set())
    assert orphan.cached and orphan.ifname == "eth0" and len(orphan.traces) == 3
    (lease_only,) = orphans.orphans([trace(orphans.NAT_RULE, GONE), trace(orphans.LEASE, GONE, ifname="net1")],
                                    set(), set())
    assert not lease_only.cached and lease_only.ifname == "net1"
    # one id on two networks: a DEL for each
    assert len(orphans.orphans([trace(orphans.LEASE, GONE), trace(orphans.LEASE, GONE, network="other")],
                               set(), set())) == 2


def test_a_lease_or_rule_of_an_id_pycri_does_not_make_is_never_an_orphan() -> None:
    assert orphans.orphans([trace(orphans.LEASE, "k8s-pod-1"), trace(orphans.NAT_RULE, "A" * 64)], set(), set()) == []


def test_the_bridge_chain_name_is_the_plugins() -> None:
    # as the bridge plugin named it for this network and id (tests/integration/test_sandbox_cni.py checks live)
    assert orphans.bridge_chain(
        "pycritest", "4c0844724e9d43d2b74ebe84ef271c2d31b09f13c9e841c3af367246d491a305") == \
        "CNI-46f330d7cd2cd328091bbc71"


# -- where traces are looked for --------------------------------------------------


def test_cache_entries_give_network_id_and_interface_even_with_dashes_in_names(tmp_path: Path) -> None:
    client = cni.CniClient(tmp_path / "net.d", [], tmp_path / "cache")
    network = parsed(network_doc(tmp_path, name="pycri-bench-a"))
    client._write_cache(client.cache_path(network.name, GONE, "eth0"), network, {}, "/run/x", None)
    client._write_cache(client.cache_path(network.name, KNOWN, "net-1"), network, {}, "", None)
    (tmp_path / "cache" / ".pycri-bench-a-xyz.tmp").write_text("{")  # a write a crash cut short
    (tmp_path / "cache" / f"junk-{ALSO_GONE}-eth0").write_text("not json")
    found = {(c.container_id, c.ifname, c.entry.network.name) for c in client.cached_attachments()}
    assert found == {(GONE, "eth0", "pycri-bench-a"), (KNOWN, "net-1", "pycri-bench-a")}


def test_leases_are_read_only_under_pycris_root_and_only_of_pycri_ids(tmp_path: Path) -> None:
    root = tmp_path / "root"
    mine = parsed(network_doc(tmp_path, data_dir=root / "cni-networks"))
    shared = parsed(network_doc(tmp_path, data_dir=tmp_path / "var-lib-cni-networks"))
    default_dir = parsed(network_doc(tmp_path))  # no dataDir: host-local's /var/lib/cni/networks
    assert orphans.owned(mine, root) and not orphans.owned(shared, root) and not orphans.owned(default_dir, root)
    assert orphans.host_local_dir(default_dir) == Path("/var/lib/cni/networks/benchnet")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (root / "cni-networks").mkdir(parents=True)
    (root / "cni-networks" / "benchnet").symlink_to(outside)  # a link out of the root is not the root
    assert not orphans.owned(mine, root)
    (root / "cni-networks" / "benchnet").unlink()
    data = root / "cni-networks"
    lease(data, "benchnet", "10.93.0.5", GONE, "eth0")
    lease(data, "benchnet", "10.93.0.6", "containerd-sandbox-1")
    lease(data, "benchnet", "10.93.0.7", GONE.upper())
    (data / "benchnet" / "lock").write_text("")
    (data / "benchnet" / "last_reserved_ip.0").write_text("10.93.0.7")
    (data / "benchnet" / "10.93.0.8").write_text(KNOWN)  # an older host-local: no interface line
    found = sorted((t.container_id, t.ifname, Path(t.where).name) for t in orphans.lease_traces(mine))
    assert found == [(GONE, "eth0", "10.93.0.5"), (KNOWN, "eth0", "10.93.0.8")]


def test_nat_rules_are_traced_by_their_comment_for_the_given_networks_only() -> None:
    net = parsed({"cniVersion": "1.0.0", "name": "benchnet", "plugins": [{"type": "bridge"}]})
    rules = [*bridge_rules("benchnet", GONE), dnat_rule("benchnet", GONE, "18080,18081"),
             *bridge_rules("containerd-bench", ALSO_GONE), "-A POSTROUTING -j CNI-HOSTPORT-MASQ"]
    found = orphans.nat_traces([net], rules)
    assert {t.container_id for t in found} == {GONE} and len(found) == 4
    ports = [m for t in found for m in t.port_mappings]
    assert ports == [cni.PortMapping(18080, 18080, "tcp"), cni.PortMapping(18081, 18081, "tcp")]


def test_pods_pinned_by_another_daemon_are_live_and_this_daemons_own_pins_are_not(tmp_path: Path) -> None:
    own = tmp_path / "run" / "ns"
    text = mountinfo(f"/run/pycri-list-bench-a/ns/{OTHER_DAEMON}/net", f"{own}/{GONE}/net",
                     f"/run/pycri/ns/{KNOWN}/ipc", "/run/netns/cni-1234", f"/x/{ALSO_GONE}/netns")
    text += f"950 30 0:50 / /somewhere/{ALSO_GONE}/net rw - tmpfs tmpfs rw\n"  # not a namespace
    assert orphans.pinned_elsewhere(own, text) == {OTHER_DAEMON}


# -- what is released, and how -----------------------------------------------------


def setup_daemon(tmp_path: Path, **doc: Any) -> tuple[CniNetwork, cni.NetworkList]:
    """A daemon rooted at tmp_path/root whose network's leases are under it."""
    (tmp_path / "net.d").mkdir()
    network_json = network_doc(tmp_path, data_dir=tmp_path / "root" / "cni-networks", **doc)
    (tmp_path / "net.d" / "10-bench.conflist").write_text(json.dumps(network_json))
    return (CniNetwork(tmp_path / "net.d", [str(bin_dir(tmp_path))], tmp_path / "root" / "cni",
                       write_default=False), parsed(network_json))


def test_release_dels_cache_orphans_with_the_cache_and_lease_or_rule_orphans_without(tmp_path: Path) -> None:
    network, net = setup_daemon(tmp_path)
    client = network.client
    data = tmp_path / "root" / "cni-networks"
    # (the namespaces: paths that are no namespace any more, as after a reboot)
    client.add(cni.Attachment(GONE, str(tmp_path / "netns"), port_mappings=(cni.PortMapping(18080, 80),)))
    client.add(cni.Attachment(KNOWN, "/proc/self/ns/net"))
    lease(data, "benchnet", "10.93.0.5", GONE)
    lease(data, "benchnet", "10.93.0.6", KNOWN)
    lease(data, "benchnet", "10.93.0.7", OTHER_DAEMON)
    iptables = FakeIptables([*bridge_rules("benchnet", GONE), *bridge_rules("benchnet", KNOWN),
                             *bridge_rules("benchnet", OTHER_DAEMON), *bridge_rules("benchnet", ALSO_GONE),
                             dnat_rule("benchnet", ALSO_GONE)])
    network.iptables = iptables
    (tmp_path / "calls.log").unlink()
    found = orphans.scan(client, tmp_path / "root", tmp_path / "run" / "ns", iptables,
                         mountinfo(f"/run/other/ns/{OTHER_DAEMON}/net"))
    stale = orphans.orphans(found.traces, {KNOWN}, found.live_elsewhere)
    assert sorted(o.container_id for o in stale) == [GONE, ALSO_GONE]
    released = orphans.release(stale, client, iptables)
    assert len(released) == 2
    dels = calls(tmp_path)
    assert {d["id"] for d in dels} == {GONE, ALSO_GONE} and {d["command"] for d in dels} == {"DEL"}
    cached_del = [d for d in dels if d["id"] == GONE and d["type"] == "portmap"][0]
    assert cached_del["conf"]["runtimeConfig"]["portMappings"][0]["containerPort"] == 80  # from the cache
    assert cached_del["netns"] == ""
    ruled_del = [d for d in dels if d["id"] == ALSO_GONE and d["type"] == "portmap"][0]
    assert ruled_del["conf"]["runtimeConfig"]["portMappings"] == [
        {"hostPort": 18080, "containerPort": 18080, "protocol": "tcp"}]
    assert "prevResult" not in ruled_del["conf"]
    assert client.cached("benchnet", GONE) is None and client.cached("benchnet", KNOWN) is not None
    # the bridge chains of the orphans are gone, the others' stay
    assert iptables.rules == [*bridge_rules("benchnet", KNOWN), *bridge_rules("benchnet", OTHER_DAEMON),
                              dnat_rule("benchnet", ALSO_GONE)]  # (portmap's own DEL takes its rule)


def test_a_failed_del_is_logged_keeps_its_cache_entry_and_stops_nothing(tmp_path: Path) -> None:
    network, _ = setup_daemon(tmp_path, fail=[GONE])
    network.iptables = FakeIptables()
    network.client.add(cni.Attachment(GONE, "/proc/self/ns/net"))
    network.client.add(cni.Attachment(ALSO_GONE, "/proc/self/ns/net"))
    released = network.release_orphans(set(), tmp_path / "run" / "ns")
    assert [o.container_id for o in released] == [ALSO_GONE]
    assert network.client.cached("benchnet", GONE) is not None  # the next start tries again
    assert network.client.cached("benchnet", ALSO_GONE) is None


def test_iptables_failing_keeps_the_release_of_leases_going(tmp_path: Path) -> None:
    network, _ = setup_daemon(tmp_path)
    network.iptables = FakeIptables(fail=True)
    lease(tmp_path / "root" / "cni-networks", "benchnet", "10.93.0.5", GONE)
    assert network.release_orphans(set(), tmp_path / "run" / "ns") == []  # the chain could not be removed
    # DEL ran all the same (the bridge's: portmap, given no host ports, is not run: cni.is_idle_portmap)
    assert [(d["type"], d["id"]) for d in calls(tmp_path) if d["command"] == "DEL"] == [("bridge", GONE)]


def test_no_iptables_run_for_a_network_without_per_pod_nat_rules(tmp_path: Path) -> None:
    network, _ = setup_daemon(tmp_path, ip_masq=False)
    doc = json.loads((tmp_path / "net.d" / "10-bench.conflist").read_text())
    doc["plugins"] = doc["plugins"][:1]  # bridge alone, ipMasq false (pycri's default masquerades itself)
    (tmp_path / "net.d" / "10-bench.conflist").write_text(json.dumps(doc))
    network.iptables = iptables = FakeIptables()
    lease(tmp_path / "root" / "cni-networks", "benchnet", "10.93.0.5", GONE)
    assert [o.container_id for o in network.release_orphans(set(), tmp_path / "run" / "ns")] == [GONE]
    assert iptables.calls == []


def test_nothing_is_read_from_a_lease_dir_outside_the_root(tmp_path: Path) -> None:
    (tmp_path / "net.d").mkdir()
    shared = tmp_path / "var-lib-cni-networks"
    (tmp_path / "net.d" / "10.conflist").write_text(json.dumps(network_doc(tmp_path, data_dir=shared)))
    network = CniNetwork(tmp_path / "net.d", [str(bin_dir(tmp_path))], tmp_path / "root" / "cni",
                         write_default=False, iptables=FakeIptables([*bridge_rules("benchnet", GONE)]))
    lease(shared, "benchnet", "10.93.0.5", GONE)
    assert network.release_orphans(set(), tmp_path / "run" / "ns") == []
    assert calls(tmp_path) == [] and network.iptables.calls == []  # type: ignore[union-attr]


# -- the sandbox service's recovery ---------------------------------------------------


class ReleasingNetwork(FakeNetwork):
    released: tuple[Any, ...] = ()  # what release_orphans returns (a test sets it)

    def release_orphans(self, known: Any, own_pins: Path) -> list[Any]:
        self._record("release_orphans", set(known), own_pins)
        return list(self.released)


def test_recovery_releases_orphans_knowing_every_row_left(tmp_path: Path) -> None:
    network = ReleasingNetwork()
    pins = FakePins()
    service = SandboxService(Database(tmp_path / "db.sqlite"), tmp_path / "sandboxes", tmp_path / "state", network,
                             pins=pins, infra=FakeInfra(), cgroups=FakeCgroups())
    from tests.unit.test_sandbox_service import new_pod

    ready = service.run(new_pod("ready"))
    stopped = service.stop(service.run(new_pod("stopped")).id)
    half = service.run(new_pod("half"))
    half.state = CREATING
    with service.db.transaction() as tx:
        service.table.update(tx, half)
    service.recover()
    (known, own_pins), = network.called("release_orphans")
    assert known == {ready.id, stopped.id} and own_pins == service.ns_root
    assert service.get(ready.id).state == READY and service.get(stopped.id).state == NOTREADY
    # the half-made pod was torn down before: its id is not known, so what DEL left of it goes too
    assert network.calls[-1][0] == "release_orphans"


class ReleasedOrphan(NamedTuple):
    container_id: str


def test_recovery_removes_the_own_cgroup_of_each_pod_it_released(tmp_path: Path) -> None:
    # a killed daemon whose database was lost: its pod's network state and its pod cgroup
    # (/pycri/<id>, made because kubelet gave no parent) are left; a cgroup pycri does not
    # make for a pod (kubelet's parent) is never touched, nor one of a pod with a row
    OTHER = "d" * 64  # noqa: N806 - a pod kubelet gave a parent
    cgroups = FakeCgroups()
    network = ReleasingNetwork()
    service = SandboxService(Database(tmp_path / "db.sqlite"), tmp_path / "sandboxes", tmp_path / "state", network,
                             pins=FakePins(), infra=FakeInfra(), cgroups=cgroups)
    from tests.unit.test_sandbox_service import new_pod

    alive = service.run(new_pod("alive"))
    cgroups.existing |= {(f"/pycri/{GONE}", GONE), ("/kubepods/pod1", OTHER)}
    network.released = (ReleasedOrphan(GONE), ReleasedOrphan(OTHER), ReleasedOrphan(alive.id))
    service.recover()
    assert sorted(cgroups.called("remove_stale")) == sorted([(GONE,), (OTHER,)])  # (not the pod with a row)
    assert (f"/pycri/{GONE}", GONE) not in cgroups.existing
    assert ("/kubepods/pod1", OTHER) in cgroups.existing
    assert (f"/pycri/{alive.id}", alive.id) in cgroups.existing


def test_recovery_goes_on_when_releasing_fails_or_the_network_cannot(tmp_path: Path) -> None:
    network = ReleasingNetwork(failures={"release_orphans": Unavailable("iptables gone")})
    service = SandboxService(Database(tmp_path / "db.sqlite"), tmp_path / "sandboxes", tmp_path / "state", network,
                             pins=FakePins(), infra=FakeInfra(), cgroups=FakeCgroups())
    service.recover()  # logged, not raised
    plain = SandboxService(Database(tmp_path / "db2.sqlite"), tmp_path / "sandboxes2", tmp_path / "state2",
                           FakeNetwork(), pins=FakePins(), infra=FakeInfra(), cgroups=FakeCgroups())
    plain.recover()


@pytest.mark.parametrize("owner", [GONE, KNOWN])
def test_cni_network_release_orphans_end_to_end(tmp_path: Path, owner: str) -> None:
    network, _ = setup_daemon(tmp_path)
    network.iptables = FakeIptables()
    path = lease(tmp_path / "root" / "cni-networks", "benchnet", "10.93.0.9", owner)
    released = network.release_orphans({KNOWN}, tmp_path / "run" / "ns")
    assert [o.container_id for o in released] == ([GONE] if owner == GONE else [])
    assert [o.describe() for o in released] == ([[f"lease {path}"]] if owner == GONE else [])
