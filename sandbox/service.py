"""The sandbox service: what criserver calls for pod sandboxes.

A pod's network, IPC and UTS namespaces are pinned by bind mounts under
<state>/ns/<id>/ (no pause process); CNI gives the network namespace its interfaces;
hostname, hosts and resolv.conf are written to <root>/<id>/. The row is written as
`creating` first, so a crash half-way is found and undone by `recover()`; a failure
half-way is undone at once.
"""
from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import structlog

from pycri.common.background import InBackground
from pycri.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from pycri.common.fs import remove_tree
from pycri.common.lifecycle import CREATED, DELETED, STARTED, STOPPED, LifecycleEvent, Publisher
from pycri.sandbox import files, namespaces, portforward
from pycri.cgroups import systemd as systemd_cgroups
from pycri.sandbox.host import (
    HostInfraProcesses, HostNamespacePins, HostPodCgroups, InfraProcesses, NamespacePins, PodCgroups,
    SystemdPodCgroups,
)
from pycri.sandbox.records import CREATING, NOTREADY, READY, PodNamespaces, PortMapping, SandboxRecord, SandboxTable
from pycri.store.db import Database

log = structlog.get_logger("sandbox")


@dataclass(frozen=True)
class NewSandbox:
    name: str
    namespace: str
    uid: str
    attempt: int
    handler: str
    hostname: str
    log_directory: str
    dns: files.DnsConfig | None
    port_mappings: list[PortMapping]
    cgroup_parent: str
    host_network: bool
    host_ipc: bool
    host_pid: bool
    shared_pid: bool = False  # the pod's containers share one PID namespace (an infra process holds it)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    sysctls: dict[str, str] = field(default_factory=dict)
    # a user namespace for the pod with these mappings (NamespaceMode POD); None: the host's
    id_maps: namespaces.IdMaps | None = None


class Network(Protocol):
    """The pod network: CNI, or anything that gives a network namespace its interfaces."""

    def setup(self, sandbox: SandboxRecord, netns: Path, port_mappings: list[PortMapping]) -> list[str]:
        """Attach the pod; return its IPs, primary first."""
        ...

    def teardown(self, sandbox: SandboxRecord, netns: Path | None) -> None:
        """Detach the pod; succeed when it is already detached."""
        ...


class ReleasedPod(Protocol):
    """A pod whose network state no sandbox row named, released (sandbox.orphans.Orphan)."""

    @property
    def container_id(self) -> str: ...


@runtime_checkable
class ReleasesOrphans(Protocol):
    """A network that can release, at start-up, what pods no sandbox row names left attached."""

    def release_orphans(self, known: Collection[str], own_pins: Path) -> Sequence[ReleasedPod]:
        """Detach every attachment whose pod id is not in `known`; `own_pins` is this service's
        pin root (a pod pinned anywhere else belongs to another daemon). Returns what it released."""
        ...


class SandboxService:
    def __init__(self, db: Database, root: Path, state: Path, network: Network, *,
                 pins: NamespacePins | None = None, infra: InfraProcesses | None = None,
                 cgroups: PodCgroups | None = None, cgroup_driver: str = "cgroupfs") -> None:
        """`pins`, `infra` and `cgroups` are the host's (sandbox/host.py) unless a test gives fakes;
        `cgroup_driver` "systemd" makes pod cgroups slices (SystemdPodCgroups over D-Bus)."""
        self.root = root
        self.ns_root = state / "ns"
        self.network = network
        self.pins: NamespacePins = pins or HostNamespacePins()
        self.infra: InfraProcesses = infra or HostInfraProcesses()
        self.cgroup_driver = cgroup_driver
        if cgroups is None and cgroup_driver == "systemd":
            from pycri.cgroups import systemd_dbus

            cgroups = SystemdPodCgroups(systemd_dbus.connect)
        self.cgroups: PodCgroups = cgroups or HostPodCgroups()
        self.table = SandboxTable(db)
        self.db = db
        # the pod's own created, started (both on run), stopped and deleted events, as containerd
        # sends them with the pod's id as the container id
        self.events = Publisher()
        root.mkdir(parents=True, exist_ok=True)
        self.ns_root.mkdir(parents=True, exist_ok=True)

    def run(self, new: NewSandbox) -> SandboxRecord:
        if not new.name or not new.namespace or not new.uid:
            raise InvalidArgument("the pod sandbox metadata needs name, namespace and uid")
        if self.table.by_name(new.name, new.namespace, new.uid, new.attempt):
            raise AlreadyExists(
                f"pod sandbox {new.namespace}/{new.name} (uid {new.uid}, attempt {new.attempt}) already exists")
        if self.cgroup_driver == "systemd" and new.cgroup_parent and systemd_cgroups.pod_slice(
                new.cgroup_parent) is None:
            raise InvalidArgument(f"config.linux.cgroup_parent {new.cgroup_parent!r} is not a systemd slice "
                                  "(the systemd cgroup driver: kubepods-besteffort-pod<uid>.slice, or kubelet's "
                                  "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid>.slice)")
        sandbox_id = uuid.uuid4().hex + uuid.uuid4().hex
        hostname = new.hostname or _host_hostname()  # as containerd and CRI-O: the node's name
        record = SandboxRecord(
            id=sandbox_id, name=new.name, namespace=new.namespace, uid=new.uid, attempt=new.attempt,
            state=CREATING, handler=new.handler, created_at=time.time_ns(),
            labels=new.labels, annotations=new.annotations, hostname=hostname, log_directory=new.log_directory,
            cgroup_parent=new.cgroup_parent or self.cgroups.default_parent(sandbox_id),
            # without a parent from kubelet, the pod cgroup is ours to make and remove
            own_cgroup=not new.cgroup_parent,
            host_network=new.host_network, host_ipc=new.host_ipc, host_pid=new.host_pid,
            sysctls=new.sysctls, port_mappings=list(new.port_mappings), userns=new.id_maps,
        )
        with self.db.transaction() as tx:
            self.table.insert(tx, record)
        try:
            # the pod cgroup (a mkdir per hierarchy, ~1 ms on v1) is made beside the pins
            cgroup_job = InBackground(lambda: self.cgroups.create(record.cgroup_parent, sandbox_id),
                                      "pod-cgroup") if record.own_cgroup else None
            try:
                kinds = [k for k, host in (("user", new.id_maps is None), ("network", new.host_network),
                                           ("ipc", new.host_ipc), ("uts", new.host_network)) if not host]
                pinned = self.pins.pin(kinds, self.ns_root / sandbox_id, None if new.host_network else hostname,
                                       new.id_maps)
                record.namespaces = PodNamespaces.from_paths(pinned)
            finally:
                cgroup_error = cgroup_job.wait() if cgroup_job is not None else None
            if cgroup_error is not None:
                raise cgroup_error
            # The infra process (a launcher's start-up, and the move into the pod's cgroup, which
            # waits for an RCU grace period) and the CNI ADD (plugins exec'd one after another)
            # need only the pinned namespaces: they run side by side.
            infra_job = None
            if new.shared_pid and not new.host_pid:
                infra_job = InBackground(lambda: self._start_infra(record, new.id_maps), "pod-infra")
            try:
                if "network" in pinned:
                    record.ips = self.network.setup(record, pinned["network"], new.port_mappings)
            finally:
                infra_error = infra_job.wait() if infra_job is not None else None
            if infra_error is not None:
                raise infra_error
            directory = self.root / sandbox_id
            record.files = {
                str(k): str(v) for k, v in files.write_pod_files(
                    directory, hostname, record.ips[0] if record.ips else "", new.dns, host_network=new.host_network
                ).items()
            }
            if new.id_maps is not None:
                _give_to_pod_root(list(record.files.values()), new.id_maps)
            record.state = READY
            with self.db.transaction() as tx:
                self.table.update(tx, record)
        except BaseException:
            self._destroy(record)
            raise
        log.info("pod sandbox ready", pod_sandbox_id=sandbox_id, name=new.name, namespace=new.namespace, ips=record.ips)
        self._publish(CREATED, record)
        self._publish(STARTED, record)
        return record

    def stop(self, sandbox_id: str) -> SandboxRecord:
        """Detach the pod from its network and release its namespaces (its containers are the
        caller's to stop first): a stopped pod, which kubelet may keep for a while, holds
        no namespace, IP or process (as with CRI-O); its files and cgroup go with remove."""
        record = self.get(sandbox_id)
        if record.state == READY:
            netns = record.namespaces.network
            self.network.teardown(record, Path(netns) if netns else None)
            self._stop_infra(record)
            self.pins.unpin(self.ns_root / record.id)
            record.state = NOTREADY
            with self.db.transaction() as tx:
                self.table.update(tx, record)
            self._publish(STOPPED, record)
        return record

    def remove(self, sandbox_id: str) -> None:
        record = self.find(sandbox_id)
        if record is None:
            return
        if record.state == READY:
            self.stop(record.id)
        self._destroy(record)
        self._publish(DELETED, record)
        log.info("pod sandbox removed", pod_sandbox_id=record.id)

    def get(self, sandbox_id: str) -> SandboxRecord:
        record = self.find(sandbox_id)
        if record is None:
            raise NotFound(f"pod sandbox {sandbox_id!r} not found")
        return record

    def connect(self, sandbox_id: str, port: int) -> socket.socket:
        """A TCP connection to localhost:`port` inside a ready pod (port-forward)."""
        record = self.get(sandbox_id)
        if record.state != READY:
            raise FailedPrecondition(f"pod sandbox {record.id} is not ready")
        netns = record.namespaces.network
        return portforward.connect(Path(netns) if netns else None, port)

    def find(self, sandbox_id: str) -> SandboxRecord | None:
        record = self.table.get(sandbox_id)
        if record is None and sandbox_id:
            matches = self.table.with_prefix(sandbox_id)
            if len(matches) > 1:
                raise InvalidArgument(f"pod sandbox id prefix {sandbox_id!r} is ambiguous")
            record = matches[0] if matches else None
        return None if record is None or record.state == CREATING else record

    def list(self) -> list[SandboxRecord]:
        return [r for r in self.table.records() if r.state != CREATING]

    def recover(self) -> None:
        """Undo what a crash left: half-made sandboxes go, ready ones whose namespaces are gone
        (a reboot) are detached and become not ready; then the network releases what no
        sandbox row owns any more (`ReleasesOrphans`: leases and rules of pods whose DEL never
        ran), when it can; and the infra processes' launcher is warmed up."""
        for record in self.table.records():
            if record.state == CREATING:
                log.warning("removing a pod sandbox a crash left half-made", pod_sandbox_id=record.id)
                self._destroy(record)
            elif record.state == READY and not self._pins_intact(record):
                # after a reboot: the namespaces are gone. The pod gets no CNI DEL later (its
                # stop and remove see it NOTREADY), so release what the plugins hold for it,
                # its IP lease above all, now: DEL without a namespace, as the CNI spec allows.
                if not record.host_network:
                    try:
                        self.network.teardown(record, None)
                    except Exception as exc:
                        log.warning("network teardown failed", pod_sandbox_id=record.id, error=str(exc))
                record.state = NOTREADY
                with self.db.transaction() as tx:
                    self.table.update(tx, record)
        if isinstance(self.network, ReleasesOrphans):
            known = {record.id for record in self.table.records()}
            try:
                released = self.network.release_orphans(known, self.ns_root)
            except Exception as exc:  # the daemon starts all the same
                log.error("releasing stale pod network state failed", error=str(exc))
            else:
                # the pod cgroup pycri made for such a pod (no parent given) goes with it, if empty
                for pod_id in {orphan.container_id for orphan in released} - known:
                    try:
                        if self.cgroups.remove_stale(pod_id):
                            log.info("removed the cgroup of a pod no sandbox row names", pod_sandbox_id=pod_id)
                    except Exception as exc:  # noqa: BLE001 - the daemon starts all the same
                        log.warning("removing a stale pod cgroup failed", pod_sandbox_id=pod_id, error=str(exc))
        self.infra.warm_up()  # (the warm infra launcher, for pods that share their PID namespace)

    def _destroy(self, record: SandboxRecord) -> None:
        netns = record.namespaces.network
        if record.state in (CREATING, READY) and not record.host_network:
            # A crash during CNI ADD leaves a row that names no namespace while the plugins may
            # have leased an address: DEL by the pod's id all the same (the CNI cache, written
            # before ADD, knows the namespace and the network).
            try:
                self.network.teardown(record, Path(netns) if netns else None)
            except Exception as exc:  # keep tearing down the rest
                log.warning("network teardown failed", pod_sandbox_id=record.id, error=str(exc))
        self._stop_infra(record)
        self.pins.unpin(self.ns_root / record.id)
        if record.own_cgroup:
            self.cgroups.destroy(record.cgroup_parent, record.id)
        remove_tree(self.root / record.id)
        with self.db.transaction() as tx:
            self.table.delete(tx, record.id)

    def _start_infra(self, record: SandboxRecord, id_maps: namespaces.IdMaps | None) -> None:
        record.infra = self.infra.start(record.namespaces.paths(), id_maps, record.id)
        self.cgroups.join_infra(record.cgroup_parent, record.id, record.infra.pid)

    def _publish(self, kind: str, record: SandboxRecord) -> None:
        self.events.publish(LifecycleEvent(kind, record.id, record.id, time.time_ns()))

    def _stop_infra(self, record: SandboxRecord) -> None:
        if record.infra is not None:
            self.infra.stop(record.infra)
        elif record.state == CREATING:
            self.infra.stop_strays(record.id)  # started, then pycri died before the row named it
        else:
            return
        try:
            self.cgroups.leave_infra(record.cgroup_parent, record.id)
        except Exception as exc:  # the pod goes all the same; systemd drops an empty scope itself
            log.warning("removing the infra process's cgroup failed", pod_sandbox_id=record.id, error=str(exc))

    def _pins_intact(self, record: SandboxRecord) -> bool:
        return all(self.pins.is_pinned(Path(p)) for p in record.namespaces.paths().values())


def _give_to_pod_root(paths: list[str], id_maps: namespaces.IdMaps) -> None:
    """The pod's files (hostname, hosts, resolv.conf) belong to its root, as with CRI-O: bind
    mounts of them are not idmapped, and root in the pod may rewrite them."""
    uid = next(m.host_id for m in id_maps.uids if m.container_id == 0)
    gid = next(m.host_id for m in id_maps.gids if m.container_id == 0)
    for path in paths:
        os.chown(path, uid, gid)
    for directory in {os.path.dirname(path) for path in paths}:  # only the pod's root may pass
        os.chown(directory, 0, gid)
        os.chmod(directory, 0o710)


def _host_hostname() -> str:
    import socket
    return socket.gethostname()


def pod_namespaces(record: SandboxRecord) -> dict[str, str]:
    """What containers join of the pod: kind -> file of its pinned namespaces, and "pid" -> the
    infra process's PID namespace while that process lives."""
    joined = record.namespaces.paths()
    if record.infra is not None and record.infra.alive():
        joined["pid"] = record.infra.pid_namespace
    return joined
