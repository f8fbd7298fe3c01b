"""Fakes of what SandboxService asks of the outside world, for unit tests without root: the pod
network (service.Network), pinned namespaces, the infra process and the pod cgroup
(sandbox/host.py). Each records its calls and changes nothing outside its own directories; a
test makes any call fail (`failures`: name of a call -> the exception it raises before it
changes anything)."""
from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycri.common.recorder import Recorder
from pycri.kernel.syscall import NAMESPACE_FILES
from pycri.sandbox.infra import Infra
from pycri.sandbox.namespaces import IdMaps
from pycri.sandbox.records import PortMapping, SandboxRecord

@dataclass
class FakeNetwork(Recorder):
    """The pod network: each pod attached gets the next address of 10.88.0.0/16."""

    attached: dict[str, list[str]] = field(default_factory=dict)  # pod id -> its IPs
    _hosts: itertools.count[int] = field(default_factory=lambda: itertools.count(2))

    def setup(self, sandbox: SandboxRecord, netns: Path, port_mappings: list[PortMapping]) -> list[str]:
        self._record("setup", sandbox.id, netns, list(port_mappings))
        host = next(self._hosts)
        self.attached[sandbox.id] = [f"10.88.{host // 256}.{host % 256}"]
        return list(self.attached[sandbox.id])

    def teardown(self, sandbox: SandboxRecord, netns: Path | None) -> None:
        self._record("teardown", sandbox.id, netns)
        self.attached.pop(sandbox.id, None)


@dataclass
class FakePins(Recorder):
    """Pinned namespaces as empty files in the pod's directory (no namespace is made)."""

    pinned: set[Path] = field(default_factory=set)  # the files that pin a namespace now

    def pin(self, kinds: list[str], directory: Path, hostname: str | None,
            id_maps: IdMaps | None) -> dict[str, Path]:
        self._record("pin", list(kinds), directory, hostname, id_maps)
        if not kinds:
            return {}
        directory.mkdir(parents=True)
        files = {kind: directory / NAMESPACE_FILES[kind] for kind in kinds}
        for path in files.values():
            path.touch()
            self.pinned.add(path)
        return files

    def unpin(self, directory: Path) -> None:
        self._record("unpin", directory)
        # as the real one: every file in the directory goes, pinned or a mount point left
        for path in sorted(directory.iterdir()) if directory.is_dir() else []:
            self.pinned.discard(path)
            path.unlink()
        with contextlib.suppress(FileNotFoundError):
            directory.rmdir()

    def is_pinned(self, path: Path) -> bool:
        self._record("is_pinned", path)
        return path in self.pinned

    def forget(self) -> None:
        """What a reboot does: every pin is gone (the files stay, as the mount points do)."""
        self.pinned.clear()


@dataclass
class FakeInfra(Recorder):
    """Infra processes that are never started: records named by pids no process has."""

    running: dict[str, Infra] = field(default_factory=dict)  # pod id -> its infra process
    _pids: itertools.count[int] = field(default_factory=lambda: itertools.count(1 << 22))  # above pid_max
    warmed: int = 0  # warm_up calls

    def start(self, pod_namespaces: dict[str, str], id_maps: IdMaps | None, sandbox_id: str) -> Infra:
        self._record("start", dict(pod_namespaces), id_maps, sandbox_id)
        self.running[sandbox_id] = Infra(next(self._pids), 1)
        return self.running[sandbox_id]

    def stop(self, process: Infra) -> None:
        self._record("stop", process)
        for pod, running in list(self.running.items()):
            if running == process:
                del self.running[pod]

    def stop_strays(self, sandbox_id: str) -> None:
        self._record("stop_strays", sandbox_id)
        self.running.pop(sandbox_id, None)

    def warm_up(self) -> None:
        self.warmed += 1


@dataclass
class FakeCgroups(Recorder):
    """Pod cgroups as a set of (cgroup parent, pod id), and infra processes put in a pod cgroup
    (pod id -> pid). `parent_format` names a pod's own cgroup ("pycri-{}.slice" for systemd's)."""

    existing: set[tuple[str, str]] = field(default_factory=set)
    infra: dict[str, int] = field(default_factory=dict)
    parent_format: str = "/pycri/{}"

    def default_parent(self, sandbox_id: str) -> str:
        return self.parent_format.format(sandbox_id)

    def join_infra(self, cgroup_parent: str, sandbox_id: str, pid: int) -> None:
        self._record("join_infra", cgroup_parent, sandbox_id, pid)
        self.infra[sandbox_id] = pid

    def leave_infra(self, cgroup_parent: str, sandbox_id: str) -> None:
        self._record("leave_infra", cgroup_parent, sandbox_id)
        self.infra.pop(sandbox_id, None)

    def create(self, cgroup_parent: str, sandbox_id: str) -> None:
        self._record("create", cgroup_parent, sandbox_id)
        self.existing.add((cgroup_parent, sandbox_id))

    def destroy(self, cgroup_parent: str, sandbox_id: str) -> None:
        self._record("destroy", cgroup_parent, sandbox_id)
        self.existing.discard((cgroup_parent, sandbox_id))

    def remove_stale(self, sandbox_id: str) -> bool:
        self._record("remove_stale", sandbox_id)
        key = (self.default_parent(sandbox_id), sandbox_id)
        if key not in self.existing:
            return False
        self.existing.discard(key)
        return True
