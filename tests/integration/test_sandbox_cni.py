"""The CNI client with the real plugins (bridge, host-local, portmap, loopback) and pinned
namespaces (root). A test network of its own: bridge pycritest0, 10.199.0.0/24, a host-local
dataDir and a result cache in temporary directories. Everything a test makes is removed even when
it fails: DEL, unpin, the bridge, the iptables rules of the test network (its masquerade chains
too), ip_forward as it was."""
from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pycri.common.errors import Unavailable
from pycri.kernel.linux import LinuxSyscall
from pycri.kernel.syscall import MNT_DETACH
from pycri.sandbox import cni, default_network, masquerade, namespaces, orphans
from pycri.sandbox.cni_network import CniNetwork
from pycri.sandbox.service import SandboxService
from pycri.store.db import Database

BIN_DIRS = ["/opt/cni/bin", "/usr/lib/cni"]
BRIDGE = "pycritest0"
NETWORK = "pycritest"
SUBNET = "10.199.0.0/24"
GATEWAY = "10.199.0.1"
HOST_PORT = 18080

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(t) for t in ("nsenter", "ip", "iptables"))
    or not all(any(Path(d, p).exists() for d in BIN_DIRS) for p in ("bridge", "host-local", "portmap", "loopback")),
    reason="needs root, nsenter, ip, iptables and the CNI plugins")


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=60)


def nat_rules() -> list[str]:
    return run("iptables", "-w", "-t", "nat", "-S").stdout.splitlines()


# -- the test network ------------------------------------------------------------


@dataclass
class TestNet:
    __test__ = False  # not a test class for pytest

    directory: Path
    conf_dir: Path
    data_dir: Path
    cache_dir: Path

    def client(self, conf_dir: Path | None = None, bin_dirs: list[str] | None = None) -> cni.CniClient:
        return cni.CniClient(conf_dir or self.conf_dir, bin_dirs or BIN_DIRS, self.cache_dir, timeout=60)

    def leases(self) -> list[str]:
        directory = self.data_dir / NETWORK
        if not directory.exists():
            return []
        return sorted(n for n in os.listdir(directory) if n[0].isdigit() and not n.startswith("last_reserved"))

    def conflist(self, plugins: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        doc = default_network.default_conflist(name=NETWORK, bridge=BRIDGE, subnet=SUBNET, data_dir=self.data_dir)
        if plugins is not None:
            doc["plugins"] = [doc["plugins"][0], *plugins]
        return doc

    def write_conf(self, directory: Path, doc: dict[str, Any]) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "10-pycritest.conflist").write_text(json.dumps(doc))
        return directory


@pytest.fixture(scope="module")
def testnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestNet]:
    run("ip", "link", "del", BRIDGE, check=False)  # left by a run that was killed
    before = set(nat_rules())
    forwarding = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    directory = tmp_path_factory.mktemp("cni")
    net = TestNet(directory, directory / "net.d", directory / "networks", directory / "results")
    net.write_conf(net.conf_dir, net.conflist())
    try:
        yield net
    finally:
        run("ip", "link", "del", BRIDGE, check=False)
        clean_iptables(before)
        Path("/proc/sys/net/ipv4/ip_forward").write_text(forwarding)


def clean_iptables(before: set[str]) -> None:
    """Remove the nat rules and chains the test network left (never those that were there before)."""
    rules = nat_rules()
    ours = [r for r in rules if r.startswith("-A ") and r not in before and (NETWORK in r or "10.199.0." in r)]
    chains = {r.split(" -j ")[-1].split()[0] for r in ours if " -j CNI-" in r or " -j PYCRI-MASQ-" in r} - {
        "CNI-HOSTPORT-SETMARK", "CNI-HOSTPORT-MASQ", "CNI-HOSTPORT-DNAT"}
    for rule in ours:
        run("iptables", "-w", "-t", "nat", "-D", *shlex.split(rule)[1:], check=False)
    for chain in chains:
        run("iptables", "-w", "-t", "nat", "-F", chain, check=False)
        run("iptables", "-w", "-t", "nat", "-X", chain, check=False)
    # portmap's shared chains: only when this run made them and no one else uses them
    rules = nat_rules()
    if "-N CNI-HOSTPORT-DNAT" not in before and not [r for r in rules if r.startswith("-A CNI-HOSTPORT-DNAT ")]:
        for rule in rules:
            if rule.startswith("-A ") and rule not in before and " -j CNI-HOSTPORT-" in rule:
                run("iptables", "-w", "-t", "nat", "-D", *shlex.split(rule)[1:], check=False)
        for chain in ("CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-SETMARK", "CNI-HOSTPORT-MASQ"):
            if f"-N {chain}" not in before:
                run("iptables", "-w", "-t", "nat", "-F", chain, check=False)
                run("iptables", "-w", "-t", "nat", "-X", chain, check=False)


# -- one pod -------------------------------------------------------------------------


@dataclass
class Pod:
    id: str
    netns: Path
    directory: Path
    attachments: list[tuple[cni.CniClient, cni.Attachment]] = field(default_factory=list)

    def attachment(self, **kw: Any) -> cni.Attachment:
        values: dict[str, Any] = dict(container_id=self.id, netns=str(self.netns), pod_namespace="default",
                                      pod_name=f"web-{self.id[:6]}", pod_uid=f"uid-{self.id[:8]}")
        values.update(kw)
        return cni.Attachment(**values)

    def add(self, client: cni.CniClient, **kw: Any) -> cni.NetworkResult:
        att = self.attachment(**kw)
        self.attachments.append((client, att))
        return client.add(att)

    def nsenter(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run("nsenter", f"--net={self.netns}", *argv, check=check)


@pytest.fixture
def pod(testnet: TestNet, tmp_path: Path) -> Iterator[Pod]:
    root = tmp_path / "ns"
    pod_id = uuid.uuid4().hex + uuid.uuid4().hex
    pinned = namespaces.pin(["network", "ipc", "uts"], root / pod_id, "pycri-test")
    p = Pod(pod_id, pinned["network"], root / pod_id)
    try:
        yield p
    finally:
        for client, att in p.attachments:
            with contextlib.suppress(Exception):
                client.delete(att)
        namespaces.unpin(root / pod_id)
        if namespaces.find_mount(root) is not None:
            LinuxSyscall().umount(str(root), MNT_DETACH)


def veths_on_bridge() -> list[str]:
    out = run("ip", "-o", "link", "show", "master", BRIDGE, check=False).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if line.strip()]


def rules_of(container_id: str) -> list[str]:
    return [r for r in nat_rules() if container_id in r]


def ping(ip: str) -> int:
    argv = ["ping", "-c", "1", "-W", "1", ip] if shutil.which("ping") else ["busybox", "ping", "-c", "1", "-W", "1", ip]
    return subprocess.run(argv, capture_output=True, timeout=10).returncode


def http_get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as response:
        return int(response.status)


def wait_listening(ip: str, port: int) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection((ip, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


# -- tests -----------------------------------------------------------------------------


def test_add_attaches_the_pod_and_del_releases_everything(testnet: TestNet, pod: Pod) -> None:
    client = testnet.client()
    default_network.loopback_up(pod.netns)
    result = pod.add(client)
    assert len(result.ips) == 1 and result.ips[0].startswith("10.199.0.")
    ip = result.ips[0]
    assert result.ip_configs[0].gateway == GATEWAY
    assert f"inet {ip}/24" in pod.nsenter("ip", "-o", "-4", "addr", "show", "dev", "eth0").stdout
    assert ",UP," in pod.nsenter("ip", "-o", "link", "show", "lo").stdout
    assert "inet 127.0.0.1/8" in pod.nsenter("ip", "-o", "-4", "addr", "show", "dev", "lo").stdout
    veth = result.interfaces[1].name
    assert veth in veths_on_bridge() and not result.interfaces[1].sandbox
    assert result.interfaces[2].sandbox == str(pod.netns) and result.interfaces[2].name == "eth0"
    assert ping(ip) == 0
    assert testnet.leases() == [ip]
    assert pod.id in (testnet.data_dir / NETWORK / ip).read_text()
    assert client.cached(NETWORK, pod.id) is not None
    assert rules_of(pod.id) == []  # ipMasq false: no per-pod nat chain (pycri masquerades the subnet)

    client.delete(pod.attachment())
    assert testnet.leases() == []
    assert veth not in veths_on_bridge()
    assert run("ip", "link", "show", veth, check=False).returncode != 0
    assert "eth0" not in pod.nsenter("ip", "-o", "link").stdout
    assert client.cached(NETWORK, pod.id) is None
    assert rules_of(pod.id) == []


def test_portmap_forwards_a_host_port_to_the_pod(testnet: TestNet, pod: Pod, tmp_path: Path) -> None:
    client = testnet.client()
    default_network.loopback_up(pod.netns)
    ip = pod.add(client, port_mappings=(cni.PortMapping(HOST_PORT, 8080),)).ips[0]
    server = subprocess.Popen(
        ["nsenter", f"--net={pod.netns}", sys.executable, "-m", "http.server", "8080", "--bind", "0.0.0.0"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(ip, 8080)
        assert http_get(f"http://{ip}:8080/") == 200
        # hostIP-less mappings: DNAT in PREROUTING and OUTPUT for every local address
        assert http_get(f"http://{GATEWAY}:{HOST_PORT}/") == 200
        # localhost works because portmap (snat: true) sets route_localnet on the bridge and masquerades
        assert http_get(f"http://127.0.0.1:{HOST_PORT}/") == 200
        assert Path(f"/proc/sys/net/ipv4/conf/{BRIDGE}/route_localnet").read_text().strip() == "1"
        # the pod reaches itself through its host port (hairpin mode + masquerade)
        hairpin = pod.nsenter(sys.executable, "-c",
                              f"import urllib.request as u; print(u.urlopen('http://{GATEWAY}:{HOST_PORT}/', "
                              "timeout=5).status)")
        assert hairpin.stdout.strip() == "200"
        assert any("dnat" in r and pod.id in r for r in nat_rules())
    finally:
        server.kill()
        server.wait()
    client.delete(pod.attachment())
    assert rules_of(pod.id) == []
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", HOST_PORT), timeout=1).close()


def test_del_after_a_restart_uses_the_cache_and_can_be_repeated(testnet: TestNet, pod: Pod, tmp_path: Path) -> None:
    ip = pod.add(testnet.client(), port_mappings=(cni.PortMapping(HOST_PORT + 1, 80),)).ips[0]
    assert testnet.leases() == [ip] and any(f"--dport {HOST_PORT + 1}" in r for r in nat_rules())
    # a new daemon: a new client, and the configuration is gone meanwhile
    restarted = testnet.client(conf_dir=tmp_path / "empty-net.d")
    restarted.delete(pod.attachment())  # no port mappings given: they come from the cache
    assert testnet.leases() == [] and rules_of(pod.id) == []
    assert not any(f"--dport {HOST_PORT + 1}" in r for r in nat_rules())
    assert veths_on_bridge() == []
    restarted.delete(pod.attachment())
    testnet.client().delete(pod.attachment())  # no cache: the configured list, without prevResult
    namespaces.unpin(pod.directory)
    testnet.client().delete(pod.attachment())  # the namespace is gone too: CNI_NETNS=""


def test_an_add_with_a_missing_plugin_leaves_no_veth_and_no_lease(testnet: TestNet, pod: Pod,
                                                                   tmp_path: Path) -> None:
    conf_dir = testnet.write_conf(tmp_path / "net.d", testnet.conflist([{"type": "pycri-no-such-plugin"}]))
    client = testnet.client(conf_dir)
    assert not client.status().ready and "pycri-no-such-plugin" in client.status().message
    with pytest.raises(cni.PluginNotFound, match="pycri-no-such-plugin"):
        pod.add(client)
    assert veths_on_bridge() == [] and testnet.leases() == [] and rules_of(pod.id) == []
    assert client.cached(NETWORK, pod.id) is None


def test_an_add_failing_half_way_is_rolled_back(testnet: TestNet, pod: Pod, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    seen = tmp_path / "seen.json"
    failing = bin_dir / "pycri-fail-add"
    failing.write_text(f"""#!/bin/sh
# fails ADD with a CNI error object after saving what it got; DEL succeeds
if [ "$CNI_COMMAND" = ADD ]; then
  cat > {seen}
  echo '{{"cniVersion": "1.0.0", "code": 11, "msg": "try again later", "details": "test failure"}}'
  exit 1
fi
cat > /dev/null
""")
    failing.chmod(0o755)
    conf_dir = testnet.write_conf(tmp_path / "net.d", testnet.conflist([{"type": "pycri-fail-add"}]))
    client = testnet.client(conf_dir, BIN_DIRS + [str(bin_dir)])
    with pytest.raises(cni.CniError, match=r"pycri-fail-add ADD failed \(code 11: try again later\)"):
        pod.add(client)
    ip = json.loads(seen.read_text())["prevResult"]["ips"][0]["address"]  # the bridge did attach the pod
    assert ip.startswith("10.199.0.")
    assert veths_on_bridge() == [] and testnet.leases() == [] and rules_of(pod.id) == []
    assert "eth0" not in pod.nsenter("ip", "-o", "link").stdout
    assert client.cached(NETWORK, pod.id) is None


def test_check_passes_on_an_attached_pod_and_fails_on_a_broken_one(testnet: TestNet, pod: Pod,
                                                                    tmp_path: Path) -> None:
    # bridge only: portmap 1.1.1's CHECK looks for ip6tables rules an IPv4-only pod does not have
    # (containernetworking/plugins#819, fixed in later releases)
    bridge_only = {**testnet.conflist(), "plugins": testnet.conflist()["plugins"][:1]}
    conf_dir = testnet.write_conf(tmp_path / "net.d", bridge_only)
    client = testnet.client(conf_dir)
    pod.add(client)
    client.check(pod.attachment())
    pod.nsenter("ip", "link", "del", "eth0")  # deletes the host side of the veth pair too
    with pytest.raises(cni.CniError, match="bridge CHECK failed"):
        client.check(pod.attachment())
    client.delete(pod.attachment())
    assert testnet.leases() == []


def test_cni_network_sets_up_and_tears_down_a_pod(testnet: TestNet, pod: Pod, tmp_path: Path) -> None:
    network = CniNetwork(testnet.conf_dir, BIN_DIRS, tmp_path / "state", write_default=False)
    assert network.status() == (True, "", "")
    record = SimpleNamespace(id=pod.id, name="web", namespace="default", uid="uid-1")
    port = SimpleNamespace(protocol="tcp", container_port=80, host_port=HOST_PORT + 3, host_ip="")
    pod.attachments.append((network.client, pod.attachment()))  # so the fixture cleans up on failure
    ips = network.setup(record, pod.netns, [port])
    assert testnet.leases() == ips and ips[0].startswith("10.199.0.")
    assert ",UP," in pod.nsenter("ip", "-o", "link", "show", "lo").stdout
    assert any(f"--dport {HOST_PORT + 3}" in r for r in nat_rules())
    network.teardown(record, pod.netns)
    assert testnet.leases() == [] and rules_of(pod.id) == []
    network.teardown(record, None)


def test_loopback_up_leaves_lo_as_the_loopback_plugin_does(tmp_path: Path) -> None:
    """pycri brings `lo` up itself: the same link and addresses as the plugin's ADD gives."""
    root = tmp_path / "ns"
    ours = namespaces.pin(["network"], root / "ours")["network"]
    theirs = namespaces.pin(["network"], root / "theirs")["network"]
    try:
        default_network.loopback_up(ours)
        plugin = cni.find_plugin("loopback", BIN_DIRS)
        attachment = cni.Attachment(container_id="theirs", netns=str(theirs), ifname="lo")
        conf = {"cniVersion": "1.0.0", "name": "cni-loopback", "type": "loopback"}
        cni.exec_plugin(plugin, "ADD", cni.plugin_env("ADD", attachment, BIN_DIRS, str(theirs)), conf, 60)

        def lo(netns: Path) -> tuple[str, str]:
            link = run("nsenter", f"--net={netns}", "ip", "-o", "link", "show", "lo").stdout
            addrs = run("nsenter", f"--net={netns}", "ip", "-o", "addr", "show", "dev", "lo").stdout
            return link.split(":", 1)[1].strip(), "\n".join(" ".join(line.split()[1:4]) for line in addrs.splitlines())

        assert lo(ours) == lo(theirs)
        assert ",UP," in lo(ours)[0] and "inet 127.0.0.1/8" in lo(ours)[1]
        default_network.loopback_up(ours)  # again: nothing changes
        assert lo(ours) == lo(theirs)
    finally:
        for name in ("ours", "theirs"):
            namespaces.unpin(root / name)
        if namespaces.find_mount(root) is not None:
            LinuxSyscall().umount(str(root), MNT_DETACH)


def test_loopback_up_in_a_namespace_that_is_not_there_fails_and_moves_no_thread(tmp_path: Path) -> None:
    own = os.stat("/proc/self/ns/net").st_ino
    with pytest.raises(Unavailable, match="bringing up lo"):
        default_network.loopback_up(tmp_path / "missing")
    (tmp_path / "plain").write_text("")
    with pytest.raises(Unavailable, match="bringing up lo"):
        default_network.loopback_up(tmp_path / "plain")  # not a namespace: setns refuses it
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(FileNotFoundError):  # (a thread of another test's may end meanwhile)
            assert os.stat(f"/proc/self/task/{tid}/ns/net").st_ino == own


# -- the default network's masquerade (sandbox/masquerade.py) ----------------------------------


class RecordingIptables:
    """The real iptables, recording each command."""

    def __init__(self) -> None:
        self.real = masquerade.IptablesRunner()
        self.calls: list[list[str]] = []

    def __call__(self, args: Any) -> masquerade.Outcome:
        self.calls.append(list(args))
        return self.real(args)

    def writes(self) -> list[list[str]]:
        return [c for c in self.calls if c[2] not in ("-S", "-C")]


def masquerade_rules(chain: str) -> list[str]:
    """The nat rules of this test network's subnet or chain (others' come and go meanwhile)."""
    return sorted(r for r in nat_rules() if chain in r or "10.199.0." in r)


def test_masquerade_makes_exactly_the_chain_and_the_jump_once(testnet: TestNet) -> None:
    chain = masquerade.chain_name(NETWORK, SUBNET)
    assert masquerade_rules(chain) == []
    iptables = RecordingIptables()
    try:
        assert masquerade.ensure(NETWORK, SUBNET, iptables) is True
        made = masquerade_rules(chain)
        assert made == sorted([
            f"-N {chain}",
            f"-A {chain} -d {SUBNET} -j RETURN",
            f"-A {chain} -d 224.0.0.0/4 -j RETURN",
            f"-A {chain} -j MASQUERADE",
            f'-A POSTROUTING -s {SUBNET} -m comment --comment "pycri {NETWORK} masquerade" -j {chain}',
        ])
        iptables.calls.clear()
        assert masquerade.ensure(NETWORK, SUBNET, iptables) is False  # a restart: iptables -S prints what -A gave
        assert iptables.writes() == [] and masquerade_rules(chain) == made
        run("iptables", "-w", "-t", "nat", "-I", chain, "-j", "ACCEPT")  # someone changed it: rebuilt
        assert masquerade.ensure(NETWORK, SUBNET, iptables) is True
        assert masquerade_rules(chain) == made
    finally:
        masquerade.remove(NETWORK, SUBNET)
    assert masquerade_rules(chain) == []


@pytest.fixture
def outside(tmp_path: Path) -> Iterator[Path]:
    """A network namespace beyond the host, as the internet is: a veth from the host
    (10.198.255.1/30) to it (10.198.255.2/30); the host routes the pods' traffic to it."""
    root = tmp_path / "ns-outside"
    netns = namespaces.pin(["network"], root / "outside")["network"]
    run("ip", "link", "del", "pycrimasq0", check=False)  # left by a run that was killed
    try:
        run("ip", "link", "add", "pycrimasq0", "type", "veth", "peer", "name", "pycrimasq1")
        run("ip", "link", "set", "pycrimasq1", "netns", str(netns))
        run("ip", "addr", "add", "10.198.255.1/30", "dev", "pycrimasq0")
        run("ip", "link", "set", "pycrimasq0", "up")
        inside = ("nsenter", f"--net={netns}", "ip")
        run(*inside, "addr", "add", "10.198.255.2/30", "dev", "pycrimasq1")
        run(*inside, "link", "set", "pycrimasq1", "up")
        yield netns
    finally:
        run("ip", "link", "del", "pycrimasq0", check=False)
        namespaces.unpin(root / "outside")
        if namespaces.find_mount(root) is not None:
            LinuxSyscall().umount(str(root), MNT_DETACH)


def source_seen_outside(pod: Pod, outside: Path) -> str:
    """The source address a UDP datagram from the pod to 10.198.255.2 arrives with."""
    receiver = subprocess.Popen(
        ["nsenter", f"--net={outside}", sys.executable, "-c",
         "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('10.198.255.2', 9999)); "
         "s.settimeout(60); print(s.recvfrom(64)[1][0], flush=True)"],
        stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while receiver.poll() is None and time.monotonic() < deadline:  # until the receiver got one
            pod.nsenter(sys.executable, "-c", "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
                        ".sendto(b'x', ('10.198.255.2', 9999))")
            time.sleep(0.2)
        out, _ = receiver.communicate(timeout=60)
    finally:
        receiver.kill()
        receiver.wait()
    return out.strip()


def test_a_pod_on_the_default_network_adds_no_nat_rule_and_leaves_the_host_masqueraded(
        testnet: TestNet, pod: Pod, outside: Path, tmp_path: Path) -> None:
    """pycri's default network (its file, name and ipMasq false) on the test bridge and subnet:
    the masquerade is made once, at status(); a pod's ADD and DEL run no iptables of pycri's and
    leave the nat table as it was; the pod's traffic leaves the host with the host's address."""
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    doc = default_network.default_conflist(bridge=BRIDGE, subnet=SUBNET, data_dir=testnet.data_dir)
    (conf_dir / default_network.DEFAULT_FILE).write_text(json.dumps(doc))
    chain = masquerade.chain_name(default_network.DEFAULT_NAME, SUBNET)
    iptables = RecordingIptables()
    network = CniNetwork(conf_dir, BIN_DIRS, tmp_path / "state", write_default=False, iptables=iptables)
    try:
        assert network.status() == (True, "", "")
        made = masquerade_rules(chain)
        assert f"-A {chain} -j MASQUERADE" in made and len(made) == 5
        calls = len(iptables.calls)
        record = SimpleNamespace(id=pod.id, name="web", namespace="default", uid="uid-1")
        pod.attachments.append((network.client, pod.attachment()))  # so the fixture cleans up on failure
        ip = network.setup(record, pod.netns, [])[0]
        assert ip.startswith("10.199.0.")
        assert masquerade_rules(chain) == made and rules_of(pod.id) == []
        assert source_seen_outside(pod, outside) == "10.198.255.1"  # masqueraded, not the pod's own address
        network.teardown(record, pod.netns)
        assert masquerade_rules(chain) == made and network.status()[0]
        assert len(iptables.calls) == calls  # neither the pod nor the second status() ran iptables
    finally:
        masquerade.remove(default_network.DEFAULT_NAME, SUBNET)
    assert masquerade_rules(chain) == []


def test_without_the_masquerade_the_pod_leaves_with_its_own_address(testnet: TestNet, pod: Pod,
                                                                     outside: Path) -> None:
    """The check above tells the two apart: with ipMasq false and no masquerade, the pod's own
    address arrives outside."""
    ip = pod.add(testnet.client()).ips[0]
    assert masquerade_rules(masquerade.chain_name(default_network.DEFAULT_NAME, SUBNET)) == []
    assert source_seen_outside(pod, outside) == ip


# -- start-up: what no pod sandbox owns (sandbox/orphans.py) ------------------------------------


def masq_network(testnet: TestNet, tmp_path: Path, owned_root: Path | None = None) -> CniNetwork:
    """The test network with the bridge's per-pod masquerade (as the benchmarks' networks have
    it) and portmap, for a daemon whose root is `tmp_path/root`; its leases are under `owned_root`
    (default: the test network's directory, which holds the dataDir)."""
    doc = testnet.conflist()
    doc["plugins"][0]["ipMasq"] = True
    conf_dir = testnet.write_conf(tmp_path / "net.d", doc)
    return CniNetwork(conf_dir, BIN_DIRS, tmp_path / "root" / "cni", write_default=False,
                      owned_root=owned_root or testnet.directory)


def traces_of(testnet: TestNet, network: CniNetwork, pod: Pod) -> dict[str, Any]:
    """What the pod's attachment leaves on the host: its leases, its cache entry, the bridge's
    masquerade chain, portmap's chains (CNI-DN-/CNI-SN- and the same hash) and rules naming it."""
    chain = orphans.bridge_chain(NETWORK, pod.id)
    rules = nat_rules()
    return {
        "leases": testnet.leases(),
        "cached": network.client.cached(NETWORK, pod.id) is not None,
        "bridge chain": f"-N {chain}" in rules,
        "portmap chains": len([r for r in rules if r.startswith("-N CNI-") and chain[4:4 + 21] in r
                               and r != f"-N {chain}"]),
        "rules": len(rules_of(pod.id)),
    }


GONE = {"leases": [], "cached": False, "bridge chain": False, "portmap chains": 0, "rules": 0}


@pytest.mark.parametrize("left", ["killed daemon", "no cache, no namespace", "nat rules only"])
def test_start_up_releases_what_a_forgotten_pod_left(testnet: TestNet, pod: Pod, tmp_path: Path,
                                                     left: str) -> None:
    """A pod attached, then its daemon gone without a DEL and its row with it: the next start's
    recovery DELs it from whatever is left (the cache; else the lease; else the nat rules' comments)
    and removes the bridge's masquerade chain the plugin leaves when the namespace is gone."""
    network = masq_network(testnet, tmp_path)
    record = SimpleNamespace(id=pod.id, name="web", namespace="default", uid="uid-1")
    port = SimpleNamespace(protocol="tcp", container_port=80, host_port=HOST_PORT + 4, host_ip="")
    pod.attachments.append((network.client, pod.attachment()))  # so the fixture cleans up on failure
    ip = network.setup(record, pod.netns, [port])[0]
    before = traces_of(testnet, network, pod)
    assert before["leases"] == [ip] and before["cached"] and before["bridge chain"]  # the chain's name is right
    assert before["portmap chains"] == 1 and before["rules"] == 4
    assert any(f"--dport {HOST_PORT + 4}" in r for r in nat_rules())
    if left != "killed daemon":  # (a killed daemon leaves the pins: the namespace is still there)
        namespaces.unpin(pod.directory)
        network.client.cache_path(NETWORK, pod.id, "eth0").unlink()
    if left == "nat rules only":
        (testnet.data_dir / NETWORK / ip).unlink()
    db = Database(tmp_path / "root" / "pycri.db")  # a daemon with no row for the pod
    try:
        # its pins are under tmp_path/ns: this service's own pin root, so the pod is its own
        SandboxService(db, tmp_path / "root" / "sandboxes", tmp_path, network).recover()
    finally:
        db.close()
    assert traces_of(testnet, network, pod) == GONE
    assert not any(f"--dport {HOST_PORT + 4}" in r for r in nat_rules())
    assert veths_on_bridge() == []


def test_start_up_leaves_known_pods_and_other_daemons_pods_alone(testnet: TestNet, pod: Pod,
                                                                 tmp_path: Path) -> None:
    """Nothing of a pod is touched when it is a sandbox of this daemon (any state), when its
    namespace is pinned by another daemon, or (without a cache entry) when its leases are not
    under this daemon's root."""
    network = masq_network(testnet, tmp_path)
    record = SimpleNamespace(id=pod.id, name="web", namespace="default", uid="uid-1")
    pod.attachments.append((network.client, pod.attachment()))
    ip = network.setup(record, pod.netns, [])[0]
    attached = traces_of(testnet, network, pod)
    assert attached["leases"] == [ip] and attached["bridge chain"]

    assert network.release_orphans({pod.id}, tmp_path / "ns") == []  # a sandbox of this daemon
    assert traces_of(testnet, network, pod) == attached
    # unknown here, but pinned under another daemon's pin root: a live pod of that daemon (its
    # lease and rules are left; this daemon's own cache entry for the id would still go)
    network.client.cache_path(NETWORK, pod.id, "eth0").rename(tmp_path / "kept-cache")
    assert network.release_orphans(set(), tmp_path / "other-ns") == []
    # leases under a dataDir outside this daemon's root: another daemon's, or another runtime's
    namespaces.unpin(pod.directory)
    elsewhere = masq_network(testnet, tmp_path, owned_root=tmp_path / "root")
    assert elsewhere.release_orphans(set(), tmp_path / "ns") == []
    assert traces_of(testnet, network, pod) == {**attached, "cached": False}
    (tmp_path / "kept-cache").rename(network.client.cache_path(NETWORK, pod.id, "eth0"))
    network.teardown(record, None)
    orphans.remove_bridge_chain(NETWORK, pod.id, masquerade.IptablesRunner())  # (DEL without the namespace)
    assert traces_of(testnet, network, pod) == GONE
