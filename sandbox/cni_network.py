"""The pod network the sandbox service uses: CNI, behind the service's small Network interface.

`CniNetwork.setup()` brings up `lo` in the pod's network namespace (as the loopback plugin does), then
runs ADD of the configured network list with the pod's identity and hostPort mappings and
returns the pod's IPs (IPv4 first). `teardown()` runs DEL, from the cached ADD when there is
one, and succeeds when the pod is already detached. `status()` answers the CRI NetworkReady
condition. With `write_default`, pycri's default bridge network is written when the conf dir
has no configuration.

When the network list in use is pycri's default (`default_network.masquerade_subnets()`: the file,
name and bridge without ipMasq that `ensure_default()` writes, whoever wrote it), its subnet is
masqueraded once for the process (masquerade.ensure, a few iptables runs) at the first status()
or setup() that sees it, not per pod; a failure is logged and tried again at the next call (pods
still get their addresses meanwhile). Any other list is left to its own plugins.

`release_orphans()`, called once at start-up by the sandbox service's recovery, DELs the
attachments that no pod sandbox owns (killed daemons, failed DELs): the rule is in orphans.py.
"""
from __future__ import annotations

import threading
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Protocol

import structlog

from pycri.common.background import InBackground
from pycri.sandbox import cni, default_network, masquerade, orphans

log = structlog.get_logger("sandbox.cni_network")


class Pod(Protocol):
    """What the network needs of a pod sandbox record."""

    @property
    def id(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def namespace(self) -> str: ...

    @property
    def uid(self) -> str: ...


class Port(Protocol):
    """A CRI port mapping (protocol "tcp", "udp" or "sctp")."""

    @property
    def protocol(self) -> str: ...

    @property
    def container_port(self) -> int: ...

    @property
    def host_port(self) -> int: ...

    @property
    def host_ip(self) -> str: ...


class CniNetwork:
    def __init__(
        self,
        conf_dir: Path,
        bin_dirs: Sequence[str | Path],
        state_dir: Path,
        write_default: bool = True,
        timeout: float = cni.DEFAULT_TIMEOUT,
        iptables: masquerade.Runner | None = None,
        owned_root: Path | None = None,
    ) -> None:
        """`state_dir` (e.g. /var/lib/pycri/cni) holds the result cache (results/); `iptables`
        runs the masquerade's iptables commands (default: masquerade.IptablesRunner). `owned_root`
        (default: the parent of `state_dir`, pycri's root) is where a network's host-local
        dataDir must be for `release_orphans()` to read its leases (orphans.py)."""
        self.client = cni.CniClient(conf_dir, bin_dirs, state_dir / "results", timeout)
        self.owned_root = Path(owned_root) if owned_root is not None else state_dir.parent
        self.write_default = write_default
        self.iptables = iptables
        self._masqueraded: set[tuple[str, str]] = set()  # (network name, subnet) made by this process
        self._masquerade_lock = threading.Lock()

    def status(self) -> tuple[bool, str, str]:
        """(ready, reason, message) for the NetworkReady condition."""
        self._ensure_default()
        status = self.client.status()
        if status.ready and not self._masqueraded:
            try:
                self._ensure_masquerade(self.client.network())
            except cni.NetworkConfigError:
                pass  # (changed since client.status(): the next call sees it)
        return status.ready, status.reason, status.message

    def setup(self, sandbox: Pod, netns: Path, port_mappings: Sequence[Port]) -> list[str]:
        self._ensure_default()
        network = self.client.network()
        self._ensure_masquerade(network)
        # `lo` and the network list's interfaces are independent: `lo` comes up (a thread in the
        # pod's netns, ~1 ms) beside the list's ADD (a failure of either fails the pod, whose
        # teardown DELs the list)
        loopback = InBackground(lambda: default_network.loopback_up(netns), "pod-loopback")
        try:
            result = self.client.add(self.attachment(sandbox, netns, port_mappings), network)
        finally:
            loopback_error = loopback.wait()
        if loopback_error is not None:
            raise loopback_error
        return list(result.ips)

    def teardown(self, sandbox: Pod, netns: Path | None) -> None:
        self.client.delete(self.attachment(sandbox, netns, ()))

    def release_orphans(self, known: Collection[str], own_pins: Path) -> list[orphans.Orphan]:
        """At start-up: DEL every attachment no pod sandbox owns (`known`: the ids of every sandbox
        row, any state; `own_pins`: this daemon's pin root), as orphans.py's rule allows. Failures
        are logged, never raised; returns what was released."""
        run = self.iptables or masquerade.IptablesRunner()
        try:
            found = orphans.scan(self.client, self.owned_root, own_pins, run)
        except OSError as exc:
            log.error("cannot look for stale pod network state", error=str(exc))
            return []
        stale = orphans.orphans(found.traces, known, found.live_elsewhere)
        if not stale:
            return []
        released = orphans.release(stale, self.client, run)
        log.info("released stale pod network state", released=len(released), failed=len(stale) - len(released))
        return released

    @staticmethod
    def attachment(sandbox: Pod, netns: Path | None, port_mappings: Sequence[Port]) -> cni.Attachment:
        return cni.Attachment(
            container_id=sandbox.id, netns=str(netns) if netns else "",
            pod_namespace=sandbox.namespace, pod_name=sandbox.name, pod_uid=sandbox.uid,
            port_mappings=tuple(
                cni.PortMapping(host_port=p.host_port, container_port=p.container_port,
                                protocol=p.protocol or "tcp", host_ip=p.host_ip)
                for p in port_mappings if p.host_port > 0
            ),
        )

    def _ensure_default(self) -> None:
        if not self.write_default:
            return
        try:
            default_network.ensure_default(self.client.conf_dir)
        except OSError as exc:
            log.warning("cannot write the default CNI network", conf_dir=str(self.client.conf_dir), error=str(exc))

    def _ensure_masquerade(self, network: cni.NetworkList) -> None:
        """Masquerade the subnets of `network` when it is pycri's default, once per process."""
        wanted = [(network.name, subnet) for subnet in default_network.masquerade_subnets(network)]
        if all(key in self._masqueraded for key in wanted):
            return
        with self._masquerade_lock:  # one at a time: two half-made chains would be rebuilt over each other
            for name, subnet in wanted:
                if (name, subnet) in self._masqueraded:
                    continue
                try:
                    masquerade.ensure(name, subnet, self.iptables)
                except masquerade.MasqueradeError as exc:
                    log.warning("cannot masquerade the default network: pods get addresses but their traffic "
                                "out of the host is not NATed; tried again at the next pod", network=name,
                                subnet=subnet, error=str(exc))
                    continue
                self._masqueraded.add((name, subnet))
