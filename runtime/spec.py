"""The OCI runtime spec (config.json, runtime-spec 1.0-1.2) as plain classes, with validation.

Only what pycri-runtime acts on is modelled; `linux.resources` and `linux.seccomp` stay as
the raw JSON objects and are parsed by `cgroups.resources` and `runtime.seccomp`. Relative
paths (root.path, bind-mount sources) are made absolute against the bundle here.

The classes are `Record`s (__slots__, keyword or positional arguments, equality and repr),
not dataclasses: `create` and `exec` parse a spec on every call, and importing dataclasses
(which brings inspect, re and enum) would cost more than the rest of their start-up.
"""
from __future__ import annotations

import os

from pycri.kernel.record import Record
from pycri.runtime import jsonlite
from pycri.runtime.errors import RuntimeFailure

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

SUPPORTED_NAMESPACES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time")


class SpecError(RuntimeFailure):
    pass


def _obj(data: Any, where: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SpecError(f"{where} must be an object")
    return data


def _strings(data: Any, where: str) -> list[str]:
    if data is None:
        return []
    if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
        raise SpecError(f"{where} must be a list of strings")
    return list(data)


def _int(data: Any, where: str, default: int | None = None) -> int | None:
    if data is None:
        return default
    if isinstance(data, bool) or not isinstance(data, int):
        raise SpecError(f"{where} must be an integer")
    return data


def _str(data: Any, where: str, default: str = "") -> str:
    if data is None:
        return default
    if not isinstance(data, str):
        raise SpecError(f"{where} must be a string")
    return data


class User(Record):
    __slots__ = ("uid", "gid", "umask", "additional_gids")

    def __init__(self, uid: int = 0, gid: int = 0, umask: int | None = None,
                 additional_gids: list[int] | None = None) -> None:
        self.uid = uid
        self.gid = gid
        self.umask = umask
        self.additional_gids: list[int] = [] if additional_gids is None else additional_gids

    @classmethod
    def from_dict(cls, data: Any, where: str = "process.user") -> User:
        d = _obj(data, where)
        gids = d.get("additionalGids") or []
        if not isinstance(gids, list) or not all(isinstance(g, int) and not isinstance(g, bool) for g in gids):
            raise SpecError(f"{where}.additionalGids must be a list of integers")
        return cls(uid=_int(d.get("uid"), f"{where}.uid", 0) or 0, gid=_int(d.get("gid"), f"{where}.gid", 0) or 0,
                   umask=_int(d.get("umask"), f"{where}.umask"), additional_gids=list(gids))


class Capabilities(Record):
    __slots__ = ("bounding", "effective", "permitted", "inheritable", "ambient")

    def __init__(self, bounding: list[str] | None = None, effective: list[str] | None = None,
                 permitted: list[str] | None = None, inheritable: list[str] | None = None,
                 ambient: list[str] | None = None) -> None:
        self.bounding: list[str] = [] if bounding is None else bounding
        self.effective: list[str] = [] if effective is None else effective
        self.permitted: list[str] = [] if permitted is None else permitted
        self.inheritable: list[str] = [] if inheritable is None else inheritable
        self.ambient: list[str] = [] if ambient is None else ambient

    @classmethod
    def from_dict(cls, data: Any, where: str = "process.capabilities") -> Capabilities:
        d = _obj(data, where)
        return cls(**{name: _strings(d.get(name), f"{where}.{name}") for name in cls.__slots__})


class Rlimit(Record):
    __slots__ = ("type", "soft", "hard")

    def __init__(self, type: str, soft: int, hard: int) -> None:
        self.type = type
        self.soft = soft
        self.hard = hard


class Process(Record):
    __slots__ = ("args", "env", "cwd", "user", "terminal", "capabilities", "rlimits", "no_new_privileges",
                 "oom_score_adj")

    def __init__(self, args: list[str], env: list[str] | None = None, cwd: str = "/", user: User | None = None,
                 terminal: bool = False, capabilities: Capabilities | None = None, rlimits: list[Rlimit] | None = None,
                 no_new_privileges: bool = False, oom_score_adj: int | None = None) -> None:
        self.args = args
        self.env: list[str] = [] if env is None else env
        self.cwd = cwd
        self.user = User() if user is None else user
        self.terminal = terminal
        self.capabilities = capabilities
        self.rlimits: list[Rlimit] = [] if rlimits is None else rlimits
        self.no_new_privileges = no_new_privileges
        self.oom_score_adj = oom_score_adj

    @classmethod
    def from_dict(cls, data: Any, where: str = "process") -> Process:
        d = _obj(data, where)
        args = _strings(d.get("args"), f"{where}.args")
        if not args:
            raise SpecError(f"{where}.args must not be empty")
        cwd = _str(d.get("cwd"), f"{where}.cwd", "/") or "/"
        if not os.path.isabs(cwd):
            raise SpecError(f"{where}.cwd {cwd!r} is not an absolute path")
        rlimits = []
        for i, raw in enumerate(d.get("rlimits") or []):
            r = _obj(raw, f"{where}.rlimits[{i}]")
            rlimits.append(Rlimit(type=_str(r.get("type"), f"{where}.rlimits[{i}].type"),
                                  soft=_int(r.get("soft"), f"{where}.rlimits[{i}].soft", 0) or 0,
                                  hard=_int(r.get("hard"), f"{where}.rlimits[{i}].hard", 0) or 0))
        caps = d.get("capabilities")
        return cls(
            args=args,
            env=_strings(d.get("env"), f"{where}.env"),
            cwd=cwd,
            user=User.from_dict(d.get("user"), f"{where}.user"),
            terminal=bool(d.get("terminal", False)),
            capabilities=Capabilities.from_dict(caps, f"{where}.capabilities") if caps is not None else None,
            rlimits=rlimits,
            no_new_privileges=bool(d.get("noNewPrivileges", False)),
            oom_score_adj=_int(d.get("oomScoreAdj"), f"{where}.oomScoreAdj"),
        )


class Mount(Record):
    __slots__ = ("destination", "type", "source", "options")

    def __init__(self, destination: str, type: str = "", source: str = "", options: list[str] | None = None) -> None:
        self.destination = destination
        self.type = type
        self.source = source
        self.options: list[str] = [] if options is None else options


class Namespace(Record):
    __slots__ = ("type", "path")

    def __init__(self, type: str, path: str = "") -> None:
        self.type = type
        self.path = path


class Device(Record):
    __slots__ = ("type", "path", "major", "minor", "file_mode", "uid", "gid")

    def __init__(self, type: str, path: str, major: int = 0, minor: int = 0, file_mode: int | None = None,
                 uid: int | None = None, gid: int | None = None) -> None:
        self.type = type  # c, b, u, p
        self.path = path
        self.major = major
        self.minor = minor
        self.file_mode = file_mode
        self.uid = uid
        self.gid = gid


class IdMapping(Record):
    """One entry of linux.uidMappings or linux.gidMappings."""

    __slots__ = ("container_id", "host_id", "size")

    def __init__(self, container_id: int, host_id: int, size: int) -> None:
        self.container_id = container_id
        self.host_id = host_id
        self.size = size


def id_map_text(mappings: list[IdMapping]) -> str:
    """The contents of a uid_map or gid_map file (containers with a user namespace of their own)."""
    from pycri.kernel import idmap

    return idmap.id_map_text((m.container_id, m.host_id, m.size) for m in mappings)


def _id_mappings(data: Any, where: str) -> list[IdMapping]:
    result = []
    for i, raw in enumerate(data or []):
        d = _obj(raw, f"{where}[{i}]")
        values = [d.get(k) for k in ("containerID", "hostID", "size")]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
            raise SpecError(f"{where}[{i}]: containerID, hostID and size must be non-negative integers")
        result.append(IdMapping(*values))
    return result


class Linux(Record):
    __slots__ = ("namespaces", "devices", "cgroups_path", "resources", "rootfs_propagation", "masked_paths",
                 "readonly_paths", "sysctl", "seccomp", "uid_mappings", "gid_mappings")

    def __init__(self, namespaces: list[Namespace] | None = None, devices: list[Device] | None = None,
                 cgroups_path: str = "", resources: dict[str, Any] | None = None, rootfs_propagation: str = "",
                 masked_paths: list[str] | None = None, readonly_paths: list[str] | None = None,
                 sysctl: dict[str, str] | None = None, seccomp: dict[str, Any] | None = None,
                 uid_mappings: list[IdMapping] | None = None, gid_mappings: list[IdMapping] | None = None) -> None:
        self.namespaces: list[Namespace] = [] if namespaces is None else namespaces
        self.devices: list[Device] = [] if devices is None else devices
        self.cgroups_path = cgroups_path
        self.resources: dict[str, Any] = {} if resources is None else resources
        self.rootfs_propagation = rootfs_propagation
        self.masked_paths: list[str] = [] if masked_paths is None else masked_paths
        self.readonly_paths: list[str] = [] if readonly_paths is None else readonly_paths
        self.sysctl: dict[str, str] = {} if sysctl is None else sysctl
        self.seccomp = seccomp
        self.uid_mappings: list[IdMapping] = [] if uid_mappings is None else uid_mappings
        self.gid_mappings: list[IdMapping] = [] if gid_mappings is None else gid_mappings

    def namespace(self, ns_type: str) -> Namespace | None:
        for ns in self.namespaces:
            if ns.type == ns_type:
                return ns
        return None

    def creates(self, ns_type: str) -> bool:
        """The container gets a new namespace of this type (listed without a path)."""
        ns = self.namespace(ns_type)
        return ns is not None and not ns.path


class Spec(Record):
    __slots__ = ("bundle", "oci_version", "process", "root_path", "root_readonly", "hostname", "domainname",
                 "mounts", "linux", "annotations", "raw")

    def __init__(self, bundle: str, oci_version: str, process: Process, root_path: str, root_readonly: bool = False,
                 hostname: str = "", domainname: str = "", mounts: list[Mount] | None = None,
                 linux: Linux | None = None, annotations: dict[str, str] | None = None,
                 raw: dict[str, Any] | None = None) -> None:
        self.bundle = bundle
        self.oci_version = oci_version
        self.process = process
        self.root_path = root_path  # absolute
        self.root_readonly = root_readonly
        self.hostname = hostname
        self.domainname = domainname
        self.mounts: list[Mount] = [] if mounts is None else mounts
        self.linux = Linux() if linux is None else linux
        self.annotations: dict[str, str] = {} if annotations is None else annotations
        self.raw: dict[str, Any] = {} if raw is None else raw  # the whole config.json (left out of repr)


def _namespaces(data: Any) -> list[Namespace]:
    result: list[Namespace] = []
    seen: set[str] = set()
    for i, raw in enumerate(data or []):
        d = _obj(raw, f"linux.namespaces[{i}]")
        ns_type = _str(d.get("type"), f"linux.namespaces[{i}].type")
        if ns_type not in SUPPORTED_NAMESPACES:
            raise SpecError(f"linux.namespaces[{i}]: unknown namespace type {ns_type!r}")
        if ns_type in seen:
            raise SpecError(f"linux.namespaces: duplicate namespace {ns_type!r}")
        seen.add(ns_type)
        path = _str(d.get("path"), f"linux.namespaces[{i}].path")
        if path and not os.path.isabs(path):
            raise SpecError(f"linux.namespaces[{i}].path {path!r} is not absolute")
        result.append(Namespace(ns_type, path))
    return result


def _devices(data: Any) -> list[Device]:
    result = []
    for i, raw in enumerate(data or []):
        d = _obj(raw, f"linux.devices[{i}]")
        where = f"linux.devices[{i}]"
        dev_type = _str(d.get("type"), f"{where}.type")
        path = _str(d.get("path"), f"{where}.path")
        if dev_type not in ("c", "b", "u", "p"):
            raise SpecError(f"{where}: unknown device type {dev_type!r}")
        if not os.path.isabs(path):
            raise SpecError(f"{where}.path {path!r} is not absolute")
        result.append(Device(dev_type, path, _int(d.get("major"), f"{where}.major", 0) or 0,
                             _int(d.get("minor"), f"{where}.minor", 0) or 0,
                             _int(d.get("fileMode"), f"{where}.fileMode"),
                             _int(d.get("uid"), f"{where}.uid"), _int(d.get("gid"), f"{where}.gid")))
    return result


def parse_spec(data: Any, bundle: str) -> Spec:
    """Validate and convert a parsed config.json; `bundle` is the absolute bundle path."""
    d = _obj(data, "config.json")
    version = _str(d.get("ociVersion"), "ociVersion")
    if not version:
        raise SpecError("ociVersion is missing")
    if not version.startswith("1."):
        raise SpecError(f"unsupported ociVersion {version!r} (1.x)")
    if d.get("process") is None:
        raise SpecError("process is missing")
    root = _obj(d.get("root"), "root")
    root_path = _str(root.get("path"), "root.path")
    if not root_path:
        raise SpecError("root.path is missing")
    root_path = os.path.normpath(os.path.join(bundle, root_path))
    mounts = []
    for i, raw in enumerate(d.get("mounts") or []):
        m = _obj(raw, f"mounts[{i}]")
        dest = _str(m.get("destination"), f"mounts[{i}].destination")
        if not dest:
            raise SpecError(f"mounts[{i}].destination is missing")
        if not os.path.isabs(dest):  # runc accepts a relative destination as relative to /
            dest = "/" + dest
        options = _strings(m.get("options"), f"mounts[{i}].options")
        mount_type = _str(m.get("type"), f"mounts[{i}].type")
        source = _str(m.get("source"), f"mounts[{i}].source")
        is_bind = mount_type == "bind" or "bind" in options or "rbind" in options
        if is_bind and source and not os.path.isabs(source):
            source = os.path.normpath(os.path.join(bundle, source))
        mounts.append(Mount(dest, mount_type, source, options))
    lx = _obj(d.get("linux"), "linux")
    sysctl = _obj(lx.get("sysctl"), "linux.sysctl")
    if not all(isinstance(v, str) for v in sysctl.values()):
        raise SpecError("linux.sysctl values must be strings")
    propagation = _str(lx.get("rootfsPropagation"), "linux.rootfsPropagation")
    if propagation not in ("", "shared", "slave", "private", "unbindable", "rshared", "rslave", "rprivate",
                           "runbindable"):
        raise SpecError(f"linux.rootfsPropagation: unknown propagation {propagation!r}")
    linux = Linux(
        namespaces=_namespaces(lx.get("namespaces")),
        devices=_devices(lx.get("devices")),
        cgroups_path=_str(lx.get("cgroupsPath"), "linux.cgroupsPath"),
        resources=_obj(lx.get("resources"), "linux.resources"),
        rootfs_propagation=propagation,
        masked_paths=_strings(lx.get("maskedPaths"), "linux.maskedPaths"),
        readonly_paths=_strings(lx.get("readonlyPaths"), "linux.readonlyPaths"),
        sysctl=dict(sysctl),
        seccomp=_obj(lx.get("seccomp"), "linux.seccomp") if lx.get("seccomp") is not None else None,
        uid_mappings=_id_mappings(lx.get("uidMappings"), "linux.uidMappings"),
        gid_mappings=_id_mappings(lx.get("gidMappings"), "linux.gidMappings"),
    )
    if linux.namespace("user") is None:
        if linux.uid_mappings or linux.gid_mappings:
            raise SpecError("linux.uidMappings and gidMappings need a user namespace")
    elif linux.creates("user") and not (linux.uid_mappings and linux.gid_mappings):
        raise SpecError("a new user namespace needs linux.uidMappings and linux.gidMappings")
    if not linux.creates("mount"):
        raise SpecError('a new mount namespace is required (linux.namespaces needs {"type": "mount"} without a path)')
    hostname = _str(d.get("hostname"), "hostname")
    if hostname and not linux.creates("uts"):
        raise SpecError("unable to set hostname without a private UTS namespace")
    annotations = _obj(d.get("annotations"), "annotations")
    return Spec(
        bundle=bundle,
        oci_version=version,
        process=Process.from_dict(d.get("process")),
        root_path=root_path,
        root_readonly=bool(root.get("readonly", False)),
        hostname=hostname,
        domainname=_str(d.get("domainname"), "domainname"),
        mounts=mounts,
        linux=linux,
        annotations={str(k): str(v) for k, v in annotations.items()},
        raw=d,
    )


def load_spec(bundle: str) -> Spec:
    bundle = os.path.abspath(bundle)
    path = os.path.join(bundle, "config.json")
    try:
        with open(path) as f:
            data = jsonlite.loads(f.read())
    except FileNotFoundError:
        raise SpecError(f"JSON specification file {path} not found") from None
    except ValueError as e:
        raise SpecError(f"{path}: invalid JSON: {e}") from None
    spec = parse_spec(data, bundle)
    if not os.path.isdir(spec.root_path):
        raise SpecError(f"rootfs ({spec.root_path}) does not exist")
    return spec
