"""CRI ContainerConfig + image config + pod -> OCI runtime spec (config.json), the way
containerd's CRI plugin and CRI-O build it. Pure translation: no I/O but reading the
image's /etc/passwd and /etc/group for user names.
"""
from __future__ import annotations

import functools
import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycri import cgroups

from pycri.api.cri import api_pb2 as cri
from pycri.common.errors import InvalidArgument, Unimplemented
from pycri.containers import users
from pycri.runtime.process.capabilities import NAMES as CAPABILITY_NAMES
from pycri.criserver import seccomp, userns

OCI_VERSION = "1.1.0"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_CAPABILITIES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]
# every capability the kernel knows, in bit order (CAP_LAST_CAP is 40 on current kernels)
ALL_CAPABILITIES = list(CAPABILITY_NAMES)
DEFAULT_MASKED_PATHS = [
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/sys/devices/virtual/powercap", "/proc/scsi",
]
DEFAULT_READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
# kubelet counts image volume failures by this start of CreateContainer's error message
# (cri-api's ErrImageVolumeMountFailed)
IMAGE_VOLUME_FAILED = "ImageVolumeMountFailed"
PROPAGATION = {
    cri.MountPropagation.PROPAGATION_PRIVATE: "rprivate",
    cri.MountPropagation.PROPAGATION_HOST_TO_CONTAINER: "rslave",
    cri.MountPropagation.PROPAGATION_BIDIRECTIONAL: "rshared",
}


@dataclass(frozen=True)
class PodContext:
    """What a container needs to know of its pod sandbox."""

    id: str
    hostname: str
    # OCI namespace type -> path of the pod's pinned namespace; a type not here is the host's
    namespaces: dict[str, str]
    cgroup_parent: str
    files: dict[str, str] = field(default_factory=dict)  # container path -> host file (hostname, hosts, resolv.conf)
    shm: str = ""  # host path of the pod's /dev/shm, "" for a private tmpfs
    sysctls: dict[str, str] = field(default_factory=dict)
    host_pid: bool = False
    # the lowest oom_score_adj the runtime can set (without CAP_SYS_RESOURCE: pycri's own)
    min_oom_score_adj: int = -1000
    # the pod's runtime handler makes mounts recursively read-only ("rro")
    recursive_read_only: bool = False
    # the pod's user namespace mappings (sandbox IdMaps.to_dict), None for the host's
    userns: dict[str, Any] | None = None


def lowest_oom_score_adj() -> int:
    """-1000 with CAP_SYS_RESOURCE; else this process's own value: lower ones would be refused
    (containerd's restrict_oom_score_adj)."""
    status = Path("/proc/self/status").read_text()
    effective = int(next(line.split()[1] for line in status.splitlines() if line.startswith("CapEff:")), 16)
    if effective & (1 << 24):  # CAP_SYS_RESOURCE
        return -1000
    return int(Path("/proc/self/oom_score_adj").read_text())


def command_line(config: cri.ContainerConfig, image: dict[str, Any]) -> list[str]:
    """kubelet's rules: command replaces the entrypoint, args replace the image's Cmd."""
    entrypoint = list(image.get("Entrypoint") or [])
    cmd = list(image.get("Cmd") or [])
    if config.command:
        args = list(config.command) + list(config.args)
    elif config.args:
        args = entrypoint + list(config.args)
    else:
        args = entrypoint + cmd
    if not args:
        raise InvalidArgument("no command specified: the container config and the image give none")
    return args


def environment(config: cri.ContainerConfig, image: dict[str, Any]) -> list[str]:
    merged: dict[str, str] = {}
    for item in image.get("Env") or [DEFAULT_PATH]:
        key, _, value = item.partition("=")
        merged[key] = value
    for kv in config.envs:  # values are bytes in CRI: not every environment is UTF-8
        merged[kv.key] = kv.value.decode("utf-8", "surrogateescape")
    if "PATH" not in merged:
        merged["PATH"] = DEFAULT_PATH.split("=", 1)[1]
    return [f"{k}={v}" for k, v in merged.items()]


@functools.cache
def host_capabilities() -> tuple[str, ...]:
    """The capabilities pycri itself may hand out: its bounding set ("ALL" means these)."""
    status = Path("/proc/self/status").read_text()
    bounding = int(next(line.split()[1] for line in status.splitlines() if line.startswith("CapBnd:")), 16)
    return tuple(cap for bit, cap in enumerate(ALL_CAPABILITIES) if bounding & (1 << bit))


def capabilities(security: cri.LinuxContainerSecurityContext) -> list[str]:
    """The default set, or all when privileged; ALL in add or drop starts from all or none;
    then the added ones join and the dropped ones leave (drop wins)."""
    if security.privileged:
        return list(host_capabilities())
    add = [_cap(c) for c in security.capabilities.add_capabilities]
    drop = [_cap(c) for c in security.capabilities.drop_capabilities]
    caps = list(host_capabilities() if "CAP_ALL" in add else DEFAULT_CAPABILITIES)
    if "CAP_ALL" in drop:
        caps = []
    caps += [c for c in add if c != "CAP_ALL" and c not in caps]
    return [c for c in caps if c not in drop]


def _cap(name: str) -> str:
    name = name.upper()
    cap = name if name.startswith("CAP_") else f"CAP_{name}"
    if cap != "CAP_ALL" and cap not in ALL_CAPABILITIES:
        raise InvalidArgument(f"unknown capability {name!r}")
    return cap


def build(config: cri.ContainerConfig, image: dict[str, Any], layers: list[Path], pod: PodContext,
          container_id_hint: str, annotations: dict[str, str]) -> dict[str, Any]:
    """The OCI runtime spec for `config` (root.path is left to the caller)."""
    image_config = image.get("config") or {}
    linux_config = config.linux
    security = linux_config.security_context
    user = _user(security, image_config, layers)
    caps = capabilities(security)
    process: dict[str, Any] = {
        "terminal": config.tty,
        "user": {"uid": user.uid, "gid": user.gid, "additionalGids": list(user.additional_gids)},
        "args": command_line(config, image_config),
        "env": _with_home(environment(config, image_config), user),
        "cwd": config.working_dir or image_config.get("WorkingDir") or "/",
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "noNewPrivileges": security.no_new_privs,
    }
    ambient = [_cap(c) for c in security.capabilities.add_ambient_capabilities]
    if ambient:
        process["capabilities"]["ambient"] = ambient
        process["capabilities"]["inheritable"] = ambient
    if linux_config.resources.oom_score_adj:
        process["oomScoreAdj"] = max(linux_config.resources.oom_score_adj, pod.min_oom_score_adj)
    spec: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "process": process,
        "root": {"path": "rootfs", "readonly": security.readonly_rootfs},
        "mounts": _mounts(config, pod, security.privileged),
        "annotations": annotations,
        "linux": {
            "namespaces": _namespaces(security, pod) + _cgroup_namespace(security),
            "resources": resources(linux_config.resources, privileged=security.privileged),
            "cgroupsPath": f"{pod.cgroup_parent.rstrip('/')}/{container_id_hint}",
            "maskedPaths": [] if security.privileged else list(security.masked_paths or DEFAULT_MASKED_PATHS),
            "readonlyPaths": [] if security.privileged else list(security.readonly_paths or DEFAULT_READONLY_PATHS),
            "sysctl": dict(pod.sysctls),
            "devices": (_host_devices() if security.privileged else []) + _devices(config),
        },
    }
    propagations = {m.propagation for m in config.mounts}
    if cri.MountPropagation.PROPAGATION_BIDIRECTIONAL in propagations:
        spec["linux"]["rootfsPropagation"] = "rshared"
    elif cri.MountPropagation.PROPAGATION_HOST_TO_CONTAINER in propagations:
        spec["linux"]["rootfsPropagation"] = "rslave"
    if pod.userns and "user" in pod.namespaces:
        spec["linux"].update(userns.oci_mappings(pod.userns))
    device_rules(spec)
    seccomp_profile = seccomp.for_container(security, caps)
    if seccomp_profile is not None:
        spec["linux"]["seccomp"] = seccomp_profile
    seccomp.check_apparmor(security)
    # the pod's pinned UTS namespace carries the hostname already; a container joins it by path
    return spec


def _user(security: cri.LinuxContainerSecurityContext, image_config: dict[str, Any], layers: list[Path]) -> users.User:
    if security.HasField("run_as_group") and not security.HasField("run_as_user") and not security.run_as_username:
        raise InvalidArgument("run_as_group is only allowed together with run_as_user or run_as_username")
    uid = security.run_as_user.value if security.HasField("run_as_user") else None
    group = security.run_as_group.value if security.HasField("run_as_group") else None
    name = security.run_as_username if uid is None else ""
    if uid is None and not name:
        name = str(image_config.get("User") or "")
    return users.resolve(layers, name, uid, group, tuple(security.supplemental_groups),
                         image_groups=_merges_image_groups(security.supplemental_groups_policy))


def _with_home(env: list[str], user: users.User) -> list[str]:
    """HOME from the image's /etc/passwd (read inside the image) when nothing sets it, so the
    runtime never reads that file itself, in the container, where it may be a FIFO or a link
    to /dev/zero."""
    return env if any(e.startswith("HOME=") for e in env) else [*env, f"HOME={user.home}"]


def _merges_image_groups(policy: int) -> bool:
    """SupplementalGroupsPolicy: Merge (the default) adds the user's groups in the image's
    /etc/group to the requested ones; Strict uses only the requested ones (and the primary gid)."""
    if policy == cri.SupplementalGroupsPolicy.Merge:
        return True
    if policy == cri.SupplementalGroupsPolicy.Strict:
        return False
    raise InvalidArgument(f"unknown supplemental_groups_policy {policy}")


def _namespaces(security: cri.LinuxContainerSecurityContext, pod: PodContext) -> list[dict[str, str]]:
    options = security.namespace_options
    namespaces: list[dict[str, str]] = [{"type": "mount"}]
    for kind in ("user", "network", "ipc", "uts"):
        if kind in pod.namespaces:
            namespaces.append({"type": kind, "path": pod.namespaces[kind]})
    if options.pid == cri.NamespaceMode.NODE or pod.host_pid:
        pass  # the host's PID namespace
    elif options.pid == cri.NamespaceMode.POD and "pid" in pod.namespaces:
        namespaces.append({"type": "pid", "path": pod.namespaces["pid"]})
    elif options.pid == cri.NamespaceMode.TARGET:
        raise InvalidArgument("PID namespace mode TARGET is not supported yet")
    else:
        namespaces.append({"type": "pid"})
    return namespaces


def _cgroup_namespace(security: cri.LinuxContainerSecurityContext) -> list[dict[str, str]]:
    """A cgroup namespace of its own for a container on a cgroup v2 host, unless privileged (as
    containerd's CRI and CRI-O do, per the cgroup v2 KEP): /sys/fs/cgroup and /proc/self/cgroup
    then show the container's own cgroup as the root, not the host's tree. v1 keeps the host's
    (compatibility); CRI has no field to ask for the host's one."""
    if security.privileged or not cgroup_v2():
        return []
    return [{"type": "cgroup"}]


@functools.cache
def cgroup_v2() -> bool:
    return cgroups.detect() == cgroups.V2


def resources(res: cri.LinuxContainerResources, privileged: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"devices": [{"allow": True, "access": "rwm"}] if privileged else [{"allow": False, "access": "rwm"}]}
    cpu: dict[str, Any] = {}
    if res.cpu_shares:
        cpu["shares"] = res.cpu_shares
    if res.cpu_quota:
        cpu["quota"] = res.cpu_quota
    if res.cpu_period:
        cpu["period"] = res.cpu_period
    if res.cpuset_cpus:
        cpu["cpus"] = res.cpuset_cpus
    if res.cpuset_mems:
        cpu["mems"] = res.cpuset_mems
    if cpu:
        out["cpu"] = cpu
    memory: dict[str, Any] = {}
    if res.memory_limit_in_bytes:
        memory["limit"] = res.memory_limit_in_bytes
    if res.memory_swap_limit_in_bytes:
        memory["swap"] = res.memory_swap_limit_in_bytes
    if memory:
        out["memory"] = memory
    if res.hugepage_limits and _hugetlb_available():
        out["hugepageLimits"] = [{"pageSize": h.page_size, "limit": h.limit} for h in res.hugepage_limits]
    if res.unified:
        out["unified"] = dict(res.unified)
    return out


@functools.cache
def _hugetlb_available() -> bool:
    """kubelet asks for a hugetlb limit for every page size the kernel has; like CRI-O, pass
    them on only where containers' cgroups have the controller (runc fails otherwise)."""
    return cgroups.has_controller("hugetlb")


def _mounts(config: cri.ContainerConfig, pod: PodContext, privileged: bool) -> list[dict[str, Any]]:
    sys_options = ["nosuid", "noexec", "nodev"] + ([] if privileged else ["ro"])
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": sys_options},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime"] + ([] if privileged else ["ro"])},
    ]
    if pod.shm:
        mounts.append({"destination": "/dev/shm", "type": "bind", "source": pod.shm, "options": ["rbind", "rw"]})
    else:
        mounts.append({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                       "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]})
    wanted = {m.container_path for m in config.mounts}
    for destination, source in pod.files.items():
        if destination not in wanted:
            mounts.append({"destination": destination, "type": "bind", "source": source, "options": ["rbind", "rw"]})
    for m in config.mounts:
        if is_image_mount(m):
            mounts.append(_image_mount(m, pod.recursive_read_only))
            continue
        if m.image_sub_path:
            raise InvalidArgument(f"mount {m.container_path!r}: image_sub_path is only for image volumes")
        if not m.container_path or not m.host_path:
            raise InvalidArgument("a mount needs container_path and host_path")
        if not os.path.isabs(m.container_path):
            raise InvalidArgument(f"mount container_path {m.container_path!r} is not absolute")
        if not os.path.exists(m.host_path):
            raise InvalidArgument(f"mount host_path {m.host_path!r} does not exist")
        source = os.path.realpath(m.host_path)  # host paths that are symlinks
        options = ["rbind", _read_only_option(m, pod.recursive_read_only), PROPAGATION.get(m.propagation, "rprivate")]
        mounts.append({"destination": m.container_path, "type": "bind", "source": source, "options": options})
    return mounts


def is_image_mount(m: cri.Mount) -> bool:
    """An image volume (KEP-4639): an image's files, not a host path."""
    return m.HasField("image") and bool(m.image.image)


def image_sub_path(m: cri.Mount) -> str:
    """The image volume's image_sub_path, normalised ("" for the image's root). Like kubelet's
    subPath it is relative and never steps up with "..", so it names a path in the image."""
    sub_path = m.image_sub_path
    if sub_path.startswith("/") or "\0" in sub_path or ".." in sub_path.split("/"):
        raise InvalidArgument(f"{IMAGE_VOLUME_FAILED}: image volume {m.container_path!r}: image_sub_path "
                              f"{sub_path!r} is not a relative path without '..'")
    normalised = posixpath.normpath(sub_path) if sub_path else "."
    return "" if normalised == "." else normalised


def _image_mount(m: cri.Mount, rro_supported: bool) -> dict[str, Any]:
    """The bind mount of an image volume; the container service mounts the image and fills
    in the source. Read-only, as the CRI defines image mounts (containerd refuses
    readonly=false too); nosuid and nodev as CRI-O; no noexec, which KEP-4639 dropped."""
    where = f"{IMAGE_VOLUME_FAILED}: image volume {m.container_path!r}"
    if m.host_path:
        raise InvalidArgument(f"{where}: host_path must be empty")
    if not m.readonly:
        raise InvalidArgument(f"{where}: image volumes are read-only, readonly must be set")
    if not os.path.isabs(m.container_path):
        raise InvalidArgument(f"{where}: container_path is not absolute")
    image_sub_path(m)
    options = ["rbind", _read_only_option(m, rro_supported), "nosuid", "nodev",
               PROPAGATION.get(m.propagation, "rprivate")]
    return {"destination": m.container_path, "type": "bind", "source": "", "options": options}


def _read_only_option(m: cri.Mount, rro_supported: bool) -> str:
    """"rw", "ro", or "rro" (read-only with every submount read-only too) for recursive_read_only,
    which the CRI allows only with readonly and PRIVATE propagation (as containerd checks)."""
    if not m.recursive_read_only:
        return "ro" if m.readonly else "rw"
    if not m.readonly:
        raise InvalidArgument(f"mount {m.container_path!r}: recursive_read_only needs readonly")
    if m.propagation != cri.MountPropagation.PROPAGATION_PRIVATE:
        name = cri.MountPropagation.Name(m.propagation) if m.propagation in PROPAGATION else str(m.propagation)
        raise InvalidArgument(f"mount {m.container_path!r}: recursive_read_only needs PROPAGATION_PRIVATE, not {name}")
    if not rro_supported:
        raise Unimplemented(f"mount {m.container_path!r}: the pod's runtime handler does not support "
                            "recursive read-only mounts")
    return "rro"


def _devices(config: cri.ContainerConfig) -> list[dict[str, Any]]:
    devices = []
    for device in config.devices:
        try:
            st = os.stat(device.host_path)
        except OSError as exc:
            raise InvalidArgument(f"device {device.host_path!r}: {exc.strerror}") from None
        import stat as stat_module
        kind = "c" if stat_module.S_ISCHR(st.st_mode) else "b" if stat_module.S_ISBLK(st.st_mode) else ""
        if not kind:
            raise InvalidArgument(f"{device.host_path!r} is not a device")
        devices.append({
            "path": device.container_path or device.host_path, "type": kind,
            "major": os.major(st.st_rdev), "minor": os.minor(st.st_rdev),
            "fileMode": st.st_mode & 0o777, "uid": 0, "gid": 0,
            "permissions": device.permissions or "rwm",
        })
    return devices


def _host_devices() -> list[dict[str, Any]]:
    """Every device node of the host's /dev, for privileged containers (as containerd gives them)."""
    import stat as stat_module
    devices = []
    for dirpath, dirnames, filenames in os.walk("/dev"):
        dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) not in ("/dev/pts", "/dev/shm", "/dev/mqueue")]
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if path in ("/dev/console", "/dev/ptmx") or not (stat_module.S_ISCHR(st.st_mode) or stat_module.S_ISBLK(st.st_mode)):
                continue
            devices.append({"path": path, "type": "c" if stat_module.S_ISCHR(st.st_mode) else "b",
                            "major": os.major(st.st_rdev), "minor": os.minor(st.st_rdev),
                            "fileMode": st.st_mode & 0o777, "uid": st.st_uid, "gid": st.st_gid})
    return devices


def device_rules(spec: dict[str, Any]) -> None:
    """Allow the requested devices in the devices cgroup (after the deny-all rule), with the
    permissions the request gave; the OCI device entries do not carry them."""
    rules = spec["linux"]["resources"].setdefault("devices", [])
    for device in spec["linux"].get("devices", []):
        access = device.pop("permissions", None)
        if access:
            rules.append({"allow": True, "type": device["type"], "major": device["major"],
                          "minor": device["minor"], "access": access})
