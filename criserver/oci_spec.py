"""CRI ContainerConfig + image config + pod -> OCI runtime spec (config.json), the way
containerd's CRI plugin and CRI-O build it, as the typed `containers.oci_config.Spec`. Pure
translation: no I/O but reading the image's /etc/passwd and /etc/group for user names (and
the device nodes and seccomp profile files a config names).
"""
from __future__ import annotations

import functools
import hashlib
import os
import posixpath
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycri import cgroups
from pycri.cgroups import systemd as systemd_cgroups

from pycri.api.cri import api_pb2 as cri
from pycri.common.errors import InvalidArgument, Unimplemented
from pycri.containers import users
from pycri.containers.oci_config import (OCI_VERSION, Capabilities, Cpu, Device, DeviceRule, HugepageLimit, IdMapping,
                                         Linux, Memory, Mount, Namespace, Process, Resources, Root, Spec, User)
from pycri.runtime.process.capabilities import NAMES as CAPABILITY_NAMES
from pycri.sandbox.namespaces import IdMaps
from pycri.criserver import seccomp, userns

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
    # the pod's user namespace mappings, None for the host's
    userns: IdMaps | None = None
    # the systemd cgroup driver (cgroup_parent is a slice); None: told by the parent's form
    systemd_cgroup: bool | None = None


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


def build_spec(config: cri.ContainerConfig, image: dict[str, Any], layers: list[Path], pod: PodContext,
               container_id_hint: str, annotations: dict[str, str]) -> Spec:
    """The OCI runtime spec for `config` (root.path is "rootfs": the caller sets the real one)."""
    image_config = image.get("config") or {}
    linux_config = config.linux
    security = linux_config.security_context
    # in the order the checks ran before, so that the first error stays the one reported
    user = _user(security, image_config, layers)
    caps = capabilities(security)
    args = command_line(config, image_config)
    env = _with_home(environment(config, image_config), user)
    ambient = [_cap(c) for c in security.capabilities.add_ambient_capabilities] or None
    oom_score_adj = linux_config.resources.oom_score_adj
    process = Process(
        terminal=config.tty,
        user=User(uid=user.uid, gid=user.gid, additional_gids=list(user.additional_gids)),
        args=args,
        env=env,
        cwd=config.working_dir or image_config.get("WorkingDir") or "/",
        capabilities=Capabilities(bounding=caps, effective=caps, permitted=caps, ambient=ambient, inheritable=ambient),
        no_new_privileges=security.no_new_privs,
        oom_score_adj=max(oom_score_adj, pod.min_oom_score_adj) if oom_score_adj else None,
    )
    mounts = _mounts(config, pod, security.privileged)
    namespaces = _namespaces(security, pod) + _cgroup_namespace(security)
    resources = build_resources(linux_config.resources, privileged=security.privileged)
    requested = _devices(config)
    resources.devices = [*(resources.devices or []), *device_rules(requested)]
    uid_mappings, gid_mappings = _id_mappings(pod)
    seccomp_profile = seccomp.for_container(security, caps)
    seccomp.check_apparmor(security)
    # the pod's pinned UTS namespace carries the hostname already; a container joins it by path
    return Spec(
        oci_version=OCI_VERSION,
        process=process,
        root=Root(path="rootfs", readonly=security.readonly_rootfs),
        mounts=mounts,
        annotations=annotations,
        linux=Linux(
            namespaces=namespaces,
            resources=resources,
            cgroups_path=cgroups_path(pod, container_id_hint),
            masked_paths=[] if security.privileged else list(security.masked_paths or DEFAULT_MASKED_PATHS),
            readonly_paths=[] if security.privileged else list(security.readonly_paths or DEFAULT_READONLY_PATHS),
            sysctl=dict(pod.sysctls),
            devices=(_host_devices() if security.privileged else []) + [device for device, _ in requested],
            rootfs_propagation=_rootfs_propagation(config),
            uid_mappings=uid_mappings,
            gid_mappings=gid_mappings,
            seccomp=seccomp_profile,
        ),
    )


def _rootfs_propagation(config: cri.ContainerConfig) -> str | None:
    """rshared when a mount is bidirectional, rslave when one receives the host's mounts."""
    propagations = {m.propagation for m in config.mounts}
    if cri.MountPropagation.PROPAGATION_BIDIRECTIONAL in propagations:
        return "rshared"
    if cri.MountPropagation.PROPAGATION_HOST_TO_CONTAINER in propagations:
        return "rslave"
    return None


def cgroups_path(pod: PodContext, name: str) -> str:
    """linux.cgroupsPath: cgroupfs <parent>/<name>; systemd `<pod slice>:pycri:<name>` (runc's
    slice:prefix:name; the runtime asks systemd for the scope pycri-<name>.scope in the slice, as
    containerd does with its prefix cri-containerd). kubelet sends a systemd parent as the slice's
    expanded path (/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice):
    its last part is the slice. Without `systemd_cgroup` the parent's form tells. A name systemd would refuse in a unit name
    (characters beyond [A-Za-z0-9_.-], or too long) is replaced by a digest of it."""
    pod_slice = systemd_cgroups.pod_slice(pod.cgroup_parent) if pod.systemd_cgroup is not False else None
    if pod.systemd_cgroup and pod_slice is None:
        raise InvalidArgument(f"cgroup parent {pod.cgroup_parent!r} is not a systemd slice")
    if pod_slice is None:
        return f"{pod.cgroup_parent.rstrip('/')}/{name}"
    return f"{pod_slice}:{SCOPE_PREFIX}:{_unit_safe(name)}"


SCOPE_PREFIX = "pycri"
_UNIT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def _unit_safe(name: str) -> str:
    if name and len(name) <= 200 and set(name) <= _UNIT_CHARS and not name.endswith(".slice"):
        return name
    return hashlib.sha256(name.encode()).hexdigest()


def _id_mappings(pod: PodContext) -> tuple[list[IdMapping] | None, list[IdMapping] | None]:
    """linux.uidMappings and gidMappings: the pod's, when its containers join its user namespace."""
    if pod.userns is None or "user" not in pod.namespaces:
        return None, None
    return userns.oci_mappings(pod.userns)


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


def _namespaces(security: cri.LinuxContainerSecurityContext, pod: PodContext) -> list[Namespace]:
    options = security.namespace_options
    namespaces = [Namespace("mount")]
    for kind in ("user", "network", "ipc", "uts"):
        if kind in pod.namespaces:
            namespaces.append(Namespace(kind, pod.namespaces[kind]))
    if options.pid == cri.NamespaceMode.NODE or pod.host_pid:
        pass  # the host's PID namespace
    elif options.pid == cri.NamespaceMode.POD and "pid" in pod.namespaces:
        namespaces.append(Namespace("pid", pod.namespaces["pid"]))
    elif options.pid == cri.NamespaceMode.TARGET:
        raise InvalidArgument("PID namespace mode TARGET is not supported yet")
    else:
        namespaces.append(Namespace("pid"))
    return namespaces


def _cgroup_namespace(security: cri.LinuxContainerSecurityContext) -> list[Namespace]:
    """A cgroup namespace of its own for a container on a cgroup v2 host, unless privileged (as
    containerd's CRI and CRI-O do, per the cgroup v2 KEP): /sys/fs/cgroup and /proc/self/cgroup
    then show the container's own cgroup as the root, not the host's tree. v1 keeps the host's
    (compatibility); CRI has no field to ask for the host's one."""
    if security.privileged or not cgroup_v2():
        return []
    return [Namespace("cgroup")]


@functools.cache
def cgroup_v2() -> bool:
    return cgroups.detect() == cgroups.V2


def build_resources(res: cri.LinuxContainerResources, privileged: bool = False) -> Resources:
    """linux.resources for CRI resources: the devices cgroup allows all devices when
    privileged, none otherwise (build_spec adds the requested ones); only the limits set."""
    cpu = Cpu(shares=res.cpu_shares or None, quota=res.cpu_quota or None, period=res.cpu_period or None,
              cpus=res.cpuset_cpus or None, mems=res.cpuset_mems or None)
    memory = Memory(limit=res.memory_limit_in_bytes or None, swap=res.memory_swap_limit_in_bytes or None)
    hugepages = res.hugepage_limits and _hugetlb_available()
    return Resources(
        devices=[DeviceRule(allow=bool(privileged), access="rwm")],
        cpu=cpu if cpu != Cpu() else None,
        memory=memory if memory != Memory() else None,
        hugepage_limits=[HugepageLimit(h.page_size, h.limit) for h in res.hugepage_limits] if hugepages else None,
        unified=dict(res.unified) if res.unified else None,
    )


def cri_resources(spec: Spec) -> cri.ContainerResources | None:
    """What ContainerStatus reports of a container's resources: its config.json's
    linux.resources (with any UpdateContainerResources merged in) in CRI's terms, as
    containerd reports the resources it applied. kubelet's in-place resize reads them; when a
    runtime reports none, kubelet fills in the resources it actuated and shows a memory request
    of "0" for a container that asked for none."""
    resources = spec.linux.resources if spec.linux else None
    if resources is None and spec.process.oom_score_adj is None:
        return None
    resources = resources or Resources()
    cpu, memory = resources.cpu or Cpu(), resources.memory or Memory()
    return cri.ContainerResources(linux=cri.LinuxContainerResources(
        cpu_period=cpu.period or 0, cpu_quota=cpu.quota or 0, cpu_shares=cpu.shares or 0,
        cpuset_cpus=cpu.cpus or "", cpuset_mems=cpu.mems or "",
        memory_limit_in_bytes=memory.limit or 0, memory_swap_limit_in_bytes=memory.swap or 0,
        oom_score_adj=spec.process.oom_score_adj or 0,
        hugepage_limits=[cri.HugepageLimit(page_size=h.page_size, limit=h.limit)
                         for h in resources.hugepage_limits or []],
        unified=resources.unified or {},
    ))


@functools.cache
def _hugetlb_available() -> bool:
    """kubelet asks for a hugetlb limit for every page size the kernel has; like CRI-O, pass
    them on only where containers' cgroups have the controller (runc fails otherwise)."""
    return cgroups.has_controller("hugetlb")


def _mounts(config: cri.ContainerConfig, pod: PodContext, privileged: bool) -> list[Mount]:
    read_only = [] if privileged else ["ro"]
    mounts = [
        Mount("/proc", "proc", "proc", ["nosuid", "noexec", "nodev"]),
        Mount("/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"]),
        Mount("/dev/pts", "devpts", "devpts", ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]),
        Mount("/dev/mqueue", "mqueue", "mqueue", ["nosuid", "noexec", "nodev"]),
        Mount("/sys", "sysfs", "sysfs", ["nosuid", "noexec", "nodev", *read_only]),
        Mount("/sys/fs/cgroup", "cgroup", "cgroup", ["nosuid", "noexec", "nodev", "relatime", *read_only]),
    ]
    if pod.shm:
        mounts.append(Mount("/dev/shm", "bind", pod.shm, ["rbind", "rw"]))
    else:
        mounts.append(Mount("/dev/shm", "tmpfs", "shm", ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]))
    wanted = {m.container_path for m in config.mounts}
    for destination, source in pod.files.items():
        if destination not in wanted:
            mounts.append(Mount(destination, "bind", source, ["rbind", "rw"]))
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
        mounts.append(Mount(m.container_path, "bind", source, options))
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


def _image_mount(m: cri.Mount, rro_supported: bool) -> Mount:
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
    return Mount(m.container_path, "bind", "", options)


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


def _devices(config: cri.ContainerConfig) -> list[tuple[Device, str]]:
    """The requested devices, each with the access its cgroup rule allows."""
    devices = []
    for device in config.devices:
        try:
            st = os.stat(device.host_path)
        except OSError as exc:
            raise InvalidArgument(f"device {device.host_path!r}: {exc.strerror}") from None
        kind = _device_type(st.st_mode)
        if not kind:
            raise InvalidArgument(f"{device.host_path!r} is not a device")
        node = Device(path=device.container_path or device.host_path, type=kind, major=os.major(st.st_rdev),
                      minor=os.minor(st.st_rdev), file_mode=st.st_mode & 0o777, uid=0, gid=0)
        devices.append((node, device.permissions or "rwm"))
    return devices


def _device_type(mode: int) -> str:
    return "c" if stat.S_ISCHR(mode) else "b" if stat.S_ISBLK(mode) else ""


def _host_devices() -> list[Device]:
    """Every device node of the host's /dev, for privileged containers (as containerd gives them)."""
    devices = []
    for dirpath, dirnames, filenames in os.walk("/dev"):
        dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) not in ("/dev/pts", "/dev/shm", "/dev/mqueue")]
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if path in ("/dev/console", "/dev/ptmx") or not _device_type(st.st_mode):
                continue
            devices.append(Device(path=path, type=_device_type(st.st_mode), major=os.major(st.st_rdev),
                                  minor=os.minor(st.st_rdev), file_mode=st.st_mode & 0o777, uid=st.st_uid,
                                  gid=st.st_gid))
    return devices


def device_rules(requested: list[tuple[Device, str]]) -> list[DeviceRule]:
    """The devices cgroup rules (after the deny-all one) that allow the requested devices, with
    the permissions the request gave; the OCI device entries do not carry them."""
    return [DeviceRule(allow=True, type=device.type, major=device.major, minor=device.minor, access=access)
            for device, access in requested if access]
