"""Pod user namespaces (KEP-127): the CRI UserNamespace of a pod, checked as containerd and
CRI-O check it, and reported back in PodSandboxStatus.

NODE (and no userns_options at all) is no user namespace: the pod's processes see the host's uid_map. POD is
one user namespace for the whole pod, with exactly one uid and one gid mapping that maps
the container's id 0 (kubelet sends one range of 65536 ids). CONTAINER and TARGET are
refused: there is no per-container user namespace in Kubernetes.
"""
from __future__ import annotations

from typing import Any

from pycri.api.cri import api_pb2 as cri
from pycri.common.errors import InvalidArgument
from pycri.containers import oci_config
from pycri.sandbox.namespaces import IdMapping, IdMaps

MAX_ID = 1 << 32  # ids are 32 bits; (uid_t)-1 is never a valid one


def id_maps(options: cri.NamespaceOption) -> IdMaps | None:
    """The pod's mappings for mode POD, None for NODE; InvalidArgument for anything else."""
    if not options.HasField("userns_options"):
        return None  # no options at all: the host's (mode POD is 0, the proto default)
    userns = options.userns_options
    mode = userns.mode
    if mode == cri.NamespaceMode.NODE:
        if userns.uids or userns.gids:
            raise InvalidArgument("user namespace mode NODE takes no uid or gid mappings")
        return None
    if mode != cri.NamespaceMode.POD:
        name = cri.NamespaceMode.Name(mode) if mode in cri.NamespaceMode.values() else str(mode)
        raise InvalidArgument(f"user namespace mode {name} is not supported: only NODE and POD")
    maps = IdMaps(uids=_mapping(userns.uids, "uid"), gids=_mapping(userns.gids, "gid"))
    for kind, mode_of in (("network", options.network), ("ipc", options.ipc), ("pid", options.pid)):
        if mode_of == cri.NamespaceMode.NODE:
            raise InvalidArgument(f"a pod with its own user namespace cannot use the host's {kind} namespace")
    return maps


def _mapping(mappings: Any, kind: str) -> tuple[IdMapping, ...]:
    if len(mappings) != 1:
        raise InvalidArgument(f"user namespace mode POD needs exactly one {kind} mapping, got {len(mappings)}")
    m = mappings[0]
    if m.container_id != 0:
        raise InvalidArgument(f"user namespace {kind} mapping must map container id 0 (it starts at {m.container_id})")
    if m.length == 0 or m.host_id + m.length > MAX_ID - 1:
        raise InvalidArgument(f"user namespace {kind} mapping {m.container_id}:{m.host_id}:{m.length} is out of range")
    return (IdMapping(m.container_id, m.host_id, m.length),)


def to_cri(maps: IdMaps | None) -> cri.UserNamespace:
    """A pod's mappings (None: the host's user namespace) as the CRI UserNamespace."""
    if maps is None:
        return cri.UserNamespace(mode=cri.NamespaceMode.NODE)
    return cri.UserNamespace(
        mode=cri.NamespaceMode.POD,
        uids=[cri.IDMapping(container_id=m.container_id, host_id=m.host_id, length=m.length) for m in maps.uids],
        gids=[cri.IDMapping(container_id=m.container_id, host_id=m.host_id, length=m.length) for m in maps.gids],
    )


def oci_mappings(maps: IdMaps) -> tuple[list[oci_config.IdMapping], list[oci_config.IdMapping]]:
    """linux.uidMappings and linux.gidMappings of a container in the pod."""
    return ([oci_config.IdMapping(m.container_id, m.host_id, m.length) for m in maps.uids],
            [oci_config.IdMapping(m.container_id, m.host_id, m.length) for m in maps.gids])
