"""What SandboxService asks of the host besides the pod network: pinned namespaces, the infra
process of a shared PID namespace, and the pod cgroup. Each is a narrow interface with the real
implementation here (over sandbox/namespaces.py, sandbox/infra.py and cgroups); unit tests give
the service the fakes of sandbox/fake.py instead, and need no root.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

from pycri import cgroups

from pycri.sandbox import infra, namespaces
from pycri.sandbox.infra import Infra
from pycri.sandbox.namespaces import IdMaps


class NamespacePins(Protocol):
    """Makes a pod's namespaces and pins them by files in its directory."""

    def pin(self, kinds: list[str], directory: Path, hostname: str | None,
            id_maps: IdMaps | None) -> dict[str, Path]:
        """New namespaces of `kinds` pinned under `directory`; kind -> file."""
        ...

    def unpin(self, directory: Path) -> None:
        """Release every pin in `directory` and remove it; idempotent."""
        ...

    def is_pinned(self, path: Path) -> bool:
        """`path` still pins a namespace (false after a reboot)."""
        ...


class InfraProcesses(Protocol):
    """Starts and stops the infra process that holds a pod's shared PID namespace."""

    def start(self, pod_namespaces: dict[str, str], id_maps: IdMaps | None, sandbox_id: str) -> Infra: ...

    def stop(self, process: Infra) -> None: ...

    def stop_strays(self, sandbox_id: str) -> None:
        """Stop the infra processes of `sandbox_id` that no record names."""
        ...


class PodCgroups(Protocol):
    """Makes and removes the pod cgroup pycri owns (when kubelet gave no parent)."""

    def create(self, cgroup_parent: str, sandbox_id: str) -> None: ...

    def destroy(self, cgroup_parent: str, sandbox_id: str) -> None: ...


class HostNamespacePins:
    """nsfs bind mounts of the namespaces of a short-lived child (sandbox/namespaces.py)."""

    def pin(self, kinds: list[str], directory: Path, hostname: str | None,
            id_maps: IdMaps | None) -> dict[str, Path]:
        return namespaces.pin(kinds, directory, hostname, id_maps=id_maps)

    def unpin(self, directory: Path) -> None:
        namespaces.unpin(directory)

    def is_pinned(self, path: Path) -> bool:
        return namespaces.is_pinned(path)


class HostInfraProcesses:
    """catatonit, started by sandbox/pause.py (sandbox/infra.py)."""

    def start(self, pod_namespaces: dict[str, str], id_maps: IdMaps | None, sandbox_id: str) -> Infra:
        return infra.start(pod_namespaces, id_maps.to_dict() if id_maps is not None else None, sandbox_id=sandbox_id)

    def stop(self, process: Infra) -> None:
        infra.stop(process)

    def stop_strays(self, sandbox_id: str) -> None:
        infra.stop_strays(sandbox_id)


class HostPodCgroups:
    """The host's cgroup hierarchy (v1 or v2, as cgroups.new_manager picks)."""

    def create(self, cgroup_parent: str, sandbox_id: str) -> None:
        cgroups.new_manager(cgroup_parent, sandbox_id).create()

    def destroy(self, cgroup_parent: str, sandbox_id: str) -> None:
        cgroups.new_manager(cgroup_parent, sandbox_id).destroy()
