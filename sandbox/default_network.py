"""pycri's default pod network, and the loopback interface of every pod.

When the CNI conf dir has no network configuration, `ensure_default()` writes
`10-pycri-bridge.conflist`: a bridge "pycri0" that is the pods' gateway and masquerades their
traffic, host-local addresses from 10.88.0.0/16 (leases under /var/lib/pycri/cni/networks), and
portmap for hostPort mappings (with SNAT, so a pod can reach itself through a hostPort and the
host through 127.0.0.1).

The loopback interface is not in any network list: like other CRI runtimes pycri brings up
`lo` in each pod's network namespace (`loopback_up()`), with the result the `loopback` plugin
gives (its ADD is netlink's LinkSetUp of `lo`, no more): `lo` up, with the 127.0.0.1/8 and ::1
the kernel gives it. pycri does it itself, a thread of its own entering the namespace for an
ioctl, instead of exec'ing the plugin (~6 ms of a Go program's start-up per pod). Nothing needs
to take it down: it goes with the namespace.
"""
from __future__ import annotations

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
                "ipMasq": True,
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
