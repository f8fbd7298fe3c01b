"""Interface counters of a pod's network namespace, read from /proc/net/dev inside it (the
calling thread enters the namespace for the read, as port-forward does for its socket)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pycri.sandbox.namespaces import enter_netns
from pycri.sandbox.records import SandboxRecord

LOOPBACK = "lo"  # left out, as cadvisor does: traffic inside the pod is not the pod's network use


@dataclass(frozen=True)
class InterfaceStats:
    name: str
    rx_bytes: int
    rx_packets: int
    rx_errors: int
    rx_dropped: int
    tx_bytes: int
    tx_packets: int
    tx_errors: int
    tx_dropped: int


def parse_net_dev(text: str) -> list[InterfaceStats]:
    """/proc/net/dev: two header lines, then `name: rx bytes packets errs drop fifo frame
    compressed multicast, tx bytes packets errs drop fifo colls carrier compressed`."""
    interfaces = []
    for line in text.splitlines()[2:]:
        name, sep, counters = line.partition(":")
        fields = counters.split()
        if not sep or len(fields) < 16 or name.strip() == LOOPBACK:
            continue
        rx, tx = [int(f) for f in fields[0:4]], [int(f) for f in fields[8:12]]
        interfaces.append(InterfaceStats(name.strip(), *rx, *tx))
    return interfaces


def interface_stats(netns: Path) -> list[InterfaceStats]:
    """The counters of every interface but loopback in the network namespace at `netns`."""
    with enter_netns(netns):
        with open("/proc/thread-self/net/dev") as f:  # the thread's namespace, not the process's
            text = f.read()
    return parse_net_dev(text)


def pod_interface_stats(record: SandboxRecord) -> list[InterfaceStats]:
    """A pod's interfaces; none for a pod on the host's network (those are the node's)."""
    netns = record.namespaces.network
    return interface_stats(Path(netns)) if netns else []
