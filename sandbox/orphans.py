"""Pod network state no pod sandbox owns: found and released when pycri starts.

A pod's CNI attachment leaves traces on the host until its DEL: pycri's cache entry (written
before ADD), host-local's lease file (`<dataDir>/<network>/<ip>`, first line the container id),
and nat rules (portmap's per-pod chains; with `"ipMasq": true`, the bridge plugin's
`CNI-<hash of network name and container id>` chain and its POSTROUTING jump). A daemon killed
between a sandbox's row and its DEL, or a DEL that failed (the row is removed all the same),
leaves them for ever: leases fill the subnet, chains pile up. At start-up, after the sandbox
service's own recovery, `find()` gathers the traces and `release()` runs a CNI DEL for each
attachment whose container id is not a pod sandbox of this daemon (in any state), then
removes the bridge's masquerade chain, which the plugin leaves when the namespace is gone.

What counts as an orphan (the rule; traces that fail it are never touched):

- Cache entries: pycri's cache dir (<root>/cni/results) is this daemon's alone, so every entry
  whose container id is not a sandbox row is an orphan. Its DEL uses the cached network list
  and the cached namespace when that is still a namespace; the entry goes when the DEL succeeds
  (a failed DEL keeps it, for the next start to try again).
- Leases: only in the host-local dataDir of a network pycri uses (the one configured now, or one
  named by a cache entry), and only when that dataDir is under pycri's own root (`owned_root`):
  a shared dir such as /var/lib/cni/networks (containerd's default) is never read. Only leases
  whose owner line is an id of the form pycri gives sandboxes (64 lower-case hex digits). DEL
  runs with that network's list, without a namespace.
- Nat rules: only rules whose comment names such an owned network and a pycri-form id
  (`name: "<network>" id: "<id>"`, as bridge and portmap write them). DEL as for leases, with
  the host ports of portmap's DNAT rule as the portMappings (without any, portmap's DEL does
  nothing), then the bridge's chain by the name computed from the two (`bridge_chain()`).
- Never an id that is a sandbox row, nor one whose network namespace is pinned anywhere on the
  host (an nsfs mount at `.../<id>/net`) outside this daemon's own pin root: that is a live pod
  of another pycri daemon (e2e tests and benchmarks run several, and the default network's
  dataDir, /var/lib/pycri/cni/networks, is shared by every daemon that uses the default conflist,
  but under the root of only one of them).

Not covered: nat chains whose rules carry no such comment or whose network pycri does not use
any more (its name is in no configuration and no cache entry), and leases under a dataDir
outside pycri's root: none can be told from another runtime's, so they are left alone.
"""
from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import shlex
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import structlog

from pycri.sandbox import cni
from pycri.sandbox.masquerade import MasqueradeError, Runner, checked, iptables_error

log = structlog.get_logger("sandbox.orphans")

# the id SandboxService.run gives a pod sandbox (two uuid4 hex strings)
POD_ID = re.compile(r"^[0-9a-f]{64}$")
HOST_LOCAL_DEFAULT_DIR = "/var/lib/cni/networks"  # host-local's dataDir when the config names none
NAT = "nat"
# bridge's and portmap's rule comments: name: "<network>" id: "<container id>" (iptables -S escapes the quotes)
_COMMENT = re.compile(r'name: \\?"(?P<network>[a-zA-Z0-9][a-zA-Z0-9_.\-]*)\\?" id: \\?"(?P<id>[0-9a-f]{64})\\?"')
# portmap's rule in CNI-HOSTPORT-DNAT: -p <protocol> ... --dports <port>[,<port>...] -j CNI-DN-...
_PROTOCOL = re.compile(r" -p (?P<protocol>tcp|udp|sctp) ")
_DPORTS = re.compile(r" --dports? (?P<ports>[0-9,]+)")

CACHE, LEASE, NAT_RULE = "cache", "lease", "nat"


@dataclass(frozen=True)
class Trace:
    """One thing on the host that an attachment left: a cache entry, a lease or a nat rule."""

    kind: str  # CACHE, LEASE or NAT_RULE
    network: cni.NetworkList
    container_id: str
    ifname: str
    where: str  # the file, or the rule as iptables -S prints it
    # the host ports of a portmap DNAT rule (containerPort unknown: the host port stands in)
    port_mappings: tuple[cni.PortMapping, ...] = ()


@dataclass(frozen=True)
class Orphan:
    """An attachment no pod sandbox owns, and every trace of it found."""

    network: cni.NetworkList
    container_id: str
    ifname: str
    traces: tuple[Trace, ...]

    @property
    def cached(self) -> bool:
        return any(t.kind == CACHE for t in self.traces)

    def describe(self) -> list[str]:
        return [f"{t.kind} {t.where}" for t in self.traces]

    def attachment(self) -> cni.Attachment:
        """What DEL is given: no namespace; without a cache entry, the host ports read from
        portmap's rules (portmap's DEL does nothing without portMappings, and what it removes
        is named by the network and the id alone, so any valid mapping would do)."""
        mappings = () if self.cached else tuple(dict.fromkeys(m for t in self.traces for m in t.port_mappings))
        return cni.Attachment(container_id=self.container_id, netns="", ifname=self.ifname, port_mappings=mappings)


class Client(Protocol):
    """What release() needs of the CNI client (cni.CniClient)."""

    def delete(self, attachment: cni.Attachment, network: cni.NetworkList | None = None) -> None: ...


# -- deciding --------------------------------------------------------------------


def orphans(traces: Iterable[Trace], known: Collection[str], live_elsewhere: Collection[str]) -> list[Orphan]:
    """The attachments (network name, container id) among `traces` that no sandbox owns: ids not
    in `known` (this daemon's sandboxes, any state) nor in `live_elsewhere` (pinned by another
    daemon). A cache trace gives the network list and interface DEL uses; otherwise a lease's."""
    groups: dict[tuple[str, str], list[Trace]] = {}
    for trace in traces:
        if trace.container_id in known or trace.container_id in live_elsewhere:
            continue
        if trace.kind != CACHE and not POD_ID.match(trace.container_id):
            continue  # (the scanners keep only these; a trace made by hand must not slip through)
        groups.setdefault((trace.network.name, trace.container_id), []).append(trace)
    found = []
    for (_, container_id), group in groups.items():
        rank = {CACHE: 0, LEASE: 1, NAT_RULE: 2}
        best = min(group, key=lambda t: rank[t.kind])
        found.append(Orphan(best.network, container_id, best.ifname, tuple(group)))
    return found


# -- finding ---------------------------------------------------------------------


def host_local_dir(network: cni.NetworkList) -> Path | None:
    """Where host-local keeps `network`'s leases (<dataDir>/<name>), or None when no plugin of
    the list uses host-local."""
    for plugin in network.plugins:
        ipam = plugin.raw.get("ipam")
        if plugin.ipam_type == "host-local" and isinstance(ipam, dict):
            return Path(str(ipam.get("dataDir") or HOST_LOCAL_DEFAULT_DIR)) / network.name
    return None


def owned(network: cni.NetworkList, owned_root: Path) -> bool:
    """True when `network`'s leases live under pycri's root: the network is pycri's alone."""
    directory = host_local_dir(network)
    if directory is None:
        return False
    try:
        return Path(os.path.realpath(directory)).is_relative_to(os.path.realpath(owned_root))
    except OSError:
        return False


def cache_traces(entries: Iterable[cni.CachedAttachment]) -> list[Trace]:
    return [Trace(CACHE, e.entry.network, e.container_id, e.ifname, str(e.path)) for e in entries]


def lease_traces(network: cni.NetworkList) -> list[Trace]:
    """The leases host-local holds for `network` whose owner is a pycri-form id (the caller has
    checked the network is owned)."""
    directory = host_local_dir(network)
    if directory is None:
        return []
    try:
        names = sorted(os.listdir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = []
    for name in names:
        try:
            ipaddress.ip_address(name)  # lock, last_reserved_ip.0, ...: not leases
            lines = (directory / name).read_text().splitlines()
        except (ValueError, OSError, UnicodeDecodeError):
            continue
        owner = lines[0].strip() if lines else ""
        ifname = lines[1].strip() if len(lines) > 1 and lines[1].strip() else cni.DEFAULT_IFNAME
        if POD_ID.match(owner):
            found.append(Trace(LEASE, network, owner, ifname, str(directory / name)))
    return found


def nat_traces(networks: Sequence[cni.NetworkList], rules: Iterable[str]) -> list[Trace]:
    """The nat rules (lines of `iptables -t nat -S`) whose comment names one of `networks` and a
    pycri-form id."""
    by_name = {n.name: n for n in networks}
    found = []
    for rule in rules:
        if not rule.startswith("-A "):
            continue
        match = _COMMENT.search(rule)
        if match and match["network"] in by_name:
            found.append(Trace(NAT_RULE, by_name[match["network"]], match["id"], cni.DEFAULT_IFNAME, rule,
                               _host_ports(rule)))
    return found


def _host_ports(rule: str) -> tuple[cni.PortMapping, ...]:
    """The host ports of a portmap DNAT rule (`dnat name: ...` in CNI-HOSTPORT-DNAT), else ()."""
    if not rule.startswith("-A CNI-HOSTPORT-DNAT ") or '"dnat name: ' not in rule:
        return ()
    protocol, ports = _PROTOCOL.search(rule), _DPORTS.search(rule)
    if protocol is None or ports is None:
        return ()
    numbers = [int(p) for p in ports["ports"].split(",") if p.isdigit() and 0 < int(p) < 65536]
    return tuple(cni.PortMapping(host_port=n, container_port=n, protocol=protocol["protocol"]) for n in numbers)


def pinned_elsewhere(own_pins: Path, mountinfo: str) -> set[str]:
    """Ids whose network namespace is pinned (an nsfs mount at `.../<id>/net`, as SandboxService
    pins them) anywhere but under `own_pins`: live pods of another pycri daemon."""
    own = os.path.realpath(own_pins)
    ids = set()
    for line in mountinfo.splitlines():
        fields = line.split(" - ", 1)
        head = fields[0].split()
        if len(fields) < 2 or len(head) < 5 or not fields[1].startswith("nsfs "):
            continue
        mount_point = head[4].replace("\\040", " ")
        parent, base = os.path.split(mount_point)
        pod_id = os.path.basename(parent)
        if base == "net" and POD_ID.match(pod_id) and not mount_point.startswith(own + "/"):
            ids.add(pod_id)
    return ids


def nat_rules_wanted(networks: Iterable[cni.NetworkList]) -> bool:
    """True when a plugin of `networks` makes per-pod nat rules (bridge with ipMasq, portmap)."""
    return any(masquerades(n) or any(p.type == "portmap" for p in n.plugins) for n in networks)


def masquerades(network: cni.NetworkList) -> bool:
    """True when `network`'s bridge plugin makes a masquerade chain per pod."""
    return any(p.type == "bridge" and p.raw.get("ipMasq") is True for p in network.plugins)


def bridge_chain(network_name: str, container_id: str) -> str:
    """The bridge plugin's masquerade chain of a pod (its utils.FormatChainName: "CNI-" and the
    first 24 hex digits of sha512(name + id))."""
    return "CNI-" + hashlib.sha512((network_name + container_id).encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Scan:
    """Everything start-up reconciliation looks at."""

    traces: list[Trace]
    live_elsewhere: set[str]


def scan(client: cni.CniClient, owned_root: Path, own_pins: Path, run: Runner | None,
         mountinfo: str | None = None) -> Scan:
    """Gather the traces in pycri's cache, in the lease dirs of the networks it owns, and (when
    those networks make nat rules and `run` is given) in the nat table."""
    cached = client.cached_attachments()
    networks: dict[str, cni.NetworkList] = {}
    try:
        current = client.network()
        networks[current.name] = current
    except cni.NetworkConfigError:
        pass
    for entry in cached:
        networks.setdefault(entry.entry.network.name, entry.entry.network)
    mine = [n for n in networks.values() if owned(n, owned_root)]
    traces = cache_traces(cached)
    for network in mine:
        traces += lease_traces(network)
    if run is not None and nat_rules_wanted(mine):
        try:
            listed = run(["-t", NAT, "-S"])
        except MasqueradeError as exc:
            log.warning("cannot list the nat table: stale pod rules are not looked for", error=str(exc))
        else:
            if listed.returncode == 0:
                traces += nat_traces(mine, listed.stdout.splitlines())
            else:
                log.warning("cannot list the nat table: stale pod rules are not looked for",
                            error=(listed.stderr or listed.stdout).strip()[-500:])
    # the mount table is read after the traces: a live pod of another daemon is pinned before its
    # ADD and unpinned after its DEL, so a trace seen above has its pin seen here while it lives
    if mountinfo is None:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    return Scan(traces, pinned_elsewhere(own_pins, mountinfo))


# -- releasing -------------------------------------------------------------------


def release(found: Sequence[Orphan], client: Client, run: Runner | None) -> list[Orphan]:
    """DEL each orphan (the cached list and namespace when there is a cache entry, else the
    network's list without a namespace), then take down the bridge's masquerade chain the
    plugin leaves without a namespace. Failures are logged; returns the orphans released."""
    released = []
    for orphan in found:
        log.warning("releasing pod network state that no pod sandbox owns", container_id=orphan.container_id,
                    network=orphan.network.name, found=orphan.describe())
        try:
            client.delete(orphan.attachment(), orphan.network)
            if run is not None and masquerades(orphan.network):
                remove_bridge_chain(orphan.network.name, orphan.container_id, run)
        except Exception as exc:  # the next one all the same; the daemon starts whatever fails here
            log.error("releasing a stale pod attachment failed", container_id=orphan.container_id,
                      network=orphan.network.name, error=str(exc))
            continue
        released.append(orphan)
    return released


def remove_bridge_chain(network_name: str, container_id: str, run: Runner) -> bool:
    """Delete the POSTROUTING jumps to the bridge's chain of (network, id), then the chain;
    True when anything was there. Raises MasqueradeError when iptables refuses a deletion."""
    chain = bridge_chain(network_name, container_id)
    removed = False
    listed = checked(run, ["-t", NAT, "-S", "POSTROUTING"])
    for rule in listed.stdout.splitlines():
        if rule.startswith("-A POSTROUTING ") and rule.split(" -j ")[-1].split() == [chain]:
            checked(run, ["-t", NAT, "-D", *shlex.split(rule)[1:]])
            removed = True
    present = run(["-t", NAT, "-S", chain])
    if present.returncode == 0:
        checked(run, ["-t", NAT, "-F", chain])
        checked(run, ["-t", NAT, "-X", chain])
        removed = True
    elif present.returncode != 1:  # 1: no such chain (in words of its own with iptables-nft)
        raise iptables_error(["-t", NAT, "-S", chain], present)
    if removed:
        log.info("removed a stale masquerade chain", chain=chain, network=network_name, container_id=container_id)
    return removed

