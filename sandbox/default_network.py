"""pycri's default pod network, and the loopback interface of every pod.

When the CNI conf dir has no network configuration, `ensure_default()` writes
`10-pycri-bridge.conflist`: a bridge "pycri0" that is the pods' gateway, host-local addresses
from 10.88.0.0/16 (leases under /var/lib/pycri/cni/networks), and portmap for hostPort mappings
(with SNAT, so a pod can reach itself through a hostPort and the host through 127.0.0.1).

The bridge has `"ipMasq": false`: instead of the plugin's per-pod nat chain (eight iptables runs
at each ADD and DEL), pycri masquerades the whole subnet once, as docker does (masquerade.py),
when the network in use is this one (`masquerade_subnets()`: the file, name and plugin that
`ensure_default()` writes). A default file written by an older pycri (`"ipMasq": true`) keeps
working as it did; deleting it makes pycri write the new one.

The loopback interface is not in any network list: like other CRI runtimes pycri brings up
`lo` in each pod's network namespace (`loopback_up()`), with the result the `loopback` plugin
gives (its ADD is netlink's LinkSetUp of `lo`, no more): `lo` up, with the 127.0.0.1/8 and ::1
the kernel gives it. pycri does it itself, a thread of its own entering the namespace for an
ioctl, instead of exec'ing the plugin (~6 ms of a Go program's start-up per pod). Nothing needs
to take it down: it goes with the namespace.
"""
from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import structlog

from pycri.common.background import InBackground
from pycri.common.errors import Unavailable
from pycri.kernel import netdev
from pycri.kernel.syscall import Syscall
from pycri.sandbox import cni, namespaces
from pycri.sandbox.files import write_atomic

log = structlog.get_logger("sandbox.default_network")

DEFAULT_FILE = "10-pycri-bridge.conflist"
DEFAULT_NAME = "pycri"
DEFAULT_BRIDGE = "pycri0"
DEFAULT_SUBNET = "10.88.0.0/16"
DEFAULT_DATA_DIR = Path("/var/lib/pycri/cni/networks")


def default_conflist(
    name: str = DEFAULT_NAME,
    bridge: str = DEFAULT_BRIDGE,
    subnet: str = DEFAULT_SUBNET,
    data_dir: Path = DEFAULT_DATA_DIR,
) -> dict[str, Any]:
    """The default network list (bridge with host-local IPAM, then portmap)."""
    return {
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": True,
                "ipMasq": False,  # pycri masquerades the subnet itself (masquerade.py)
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": subnet}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(data_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
        ],
    }


def ensure_default(conf_dir: Path, **overrides: Any) -> Path | None:
    """Write the default network into `conf_dir` when it has no configuration; return the file written."""
    if cni.config_files(conf_dir):
        return None
    conf_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
    path = conf_dir / DEFAULT_FILE
    write_atomic(path, json.dumps(default_conflist(**overrides), indent=2) + "\n")
    log.info("wrote pycri's default CNI network", path=str(path))
    return path


def masquerade_subnets(network: cni.NetworkList) -> list[str]:
    """The subnets pycri masquerades itself for `network`: the ranges of its default network as
    `ensure_default()` writes it (file DEFAULT_FILE, name DEFAULT_NAME, first plugin a gateway
    bridge with ipMasq false and host-local addresses); [] for any other list, which is the
    user's (and for an older default with ipMasq true, whose plugin masquerades each pod)."""
    if Path(network.source).name != DEFAULT_FILE or network.name != DEFAULT_NAME or not network.plugins:
        return []
    bridge = network.plugins[0].raw
    if bridge.get("type") != "bridge" or bridge.get("ipMasq") is not False or bridge.get("isGateway") is not True:
        return []
    ipam = bridge.get("ipam")
    if not isinstance(ipam, dict) or ipam.get("type") != "host-local":
        return []
    subnets = []
    ranges = ipam.get("ranges")
    for range_set in ranges if isinstance(ranges, list) else []:
        for entry in range_set if isinstance(range_set, list) else []:
            if isinstance(entry, dict) and isinstance(entry.get("subnet"), str):
                subnets.append(entry["subnet"])
    if isinstance(ipam.get("subnet"), str):  # the older single-range form
        subnets.append(ipam["subnet"])
    return [s for s in dict.fromkeys(subnets) if _is_ipv4_network(s)]


def _is_ipv4_network(text: str) -> bool:
    """IPv4 only: the default network has no IPv6 range, and an IPv6 range added to it by hand
    is not masqueraded (as docker's default bridge does not NAT IPv6)."""
    try:
        return ipaddress.ip_network(text, strict=False).version == 4
    except ValueError:
        return False


def loopback_up(netns: Path | str, syscall: Syscall | None = None) -> None:
    """Bring up `lo` in the network namespace at `netns`, as the CNI loopback plugin's ADD does.

    A thread of its own enters the namespace and ends after it, so no thread of the daemon is
    ever left in a pod's namespace, whatever fails."""

    def up() -> None:
        with namespaces.enter_netns(Path(netns), syscall):
            netdev.link_up("lo")

    error = InBackground(up, "pod-loopback").wait()
    if isinstance(error, OSError):
        raise Unavailable(f"bringing up lo in the pod's network namespace {netns}: {error}") from error
    if error is not None:
        raise error
