"""The OCI runtime spec (config.json, runtime-spec 1.0-1.2) as dataclasses, with validation.

Only what pycri-runtime acts on is modelled; `linux.resources` and `linux.seccomp` stay as
the raw JSON objects and are parsed by `cgroups.resources` and `runtime.seccomp`. Relative
paths (root.path, bind-mount sources) are made absolute against the bundle here.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from runtime import jsonlite
from runtime.errors import RuntimeFailure

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


@dataclass
class User:
    uid: int = 0
    gid: int = 0
    umask: int | None = None
    additional_gids: list[int] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: Any, where: str = "process.user") -> User:
        d = _obj(data, where)
        gids = d.get("additionalGids") or []
        if not isinstance(gids, list) or not all(isinstance(g, int) and not isinstance(g, bool) for g in gids):
            raise SpecError(f"{where}.additionalGids must be a list of integers")
        return cls(uid=_int(d.get("uid"), f"{where}.uid", 0) or 0, gid=_int(d.get("gid"), f"{where}.gid", 0) or 0,
                   umask=_int(d.get("umask"), f"{where}.umask"), additional_gids=list(gids))


@dataclass
class Capabilities:
    bounding: list[str] = field(default_factory=list)
    effective: list[str] = field(default_factory=list)
    permitted: list[str] = field(default_factory=list)
    inheritable: list[str] = field(default_factory=list)
    ambient: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: Any, where: str = "process.capabilities") -> Capabilities:
        d = _obj(data, where)
        return cls(**{name: _strings(d.get(name), f"{where}.{name}")
                      for name in ("bounding", "effective", "permitted", "inheritable", "ambient")})


@dataclass
class Rlimit:
    type: str
    soft: int
    hard: int


@dataclass
class Process:
    args: list[str]
    env: list[str] = field(default_factory=list)
    cwd: str = "/"
    user: User = field(default_factory=User)
    terminal: bool = False
    capabilities: Capabilities | None = None
    rlimits: list[Rlimit] = field(default_factory=list)
    no_new_privileges: bool = False
    oom_score_adj: int | None = None

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


@dataclass
class Mount:
    destination: str
    type: str = ""
    source: str = ""
    options: list[str] = field(default_factory=list)


@dataclass
class Namespace:
    type: str
    path: str = ""


@dataclass
class Device:
    type: str  # c, b, u, p
    path: str
    major: int = 0
    minor: int = 0
    file_mode: int | None = None
    uid: int | None = None
    gid: int | None = None


@dataclass
class Linux:
    namespaces: list[Namespace] = field(default_factory=list)
    devices: list[Device] = field(default_factory=list)
    cgroups_path: str = ""
    resources: dict[str, Any] = field(default_factory=dict)
    rootfs_propagation: str = ""
    masked_paths: list[str] = field(default_factory=list)
    readonly_paths: list[str] = field(default_factory=list)
    sysctl: dict[str, str] = field(default_factory=dict)
    seccomp: dict[str, Any] | None = None

    def namespace(self, ns_type: str) -> Namespace | None:
        for ns in self.namespaces:
            if ns.type == ns_type:
                return ns
        return None

    def creates(self, ns_type: str) -> bool:
        """The container gets a new namespace of this type (listed without a path)."""
        ns = self.namespace(ns_type)
        return ns is not None and not ns.path


@dataclass
class Spec:
    bundle: str
    oci_version: str
    process: Process
    root_path: str  # absolute
    root_readonly: bool = False
    hostname: str = ""
    domainname: str = ""
    mounts: list[Mount] = field(default_factory=list)
    linux: Linux = field(default_factory=Linux)
    annotations: dict[str, str] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


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
    for unsupported in ("uidMappings", "gidMappings"):
        if lx.get(unsupported):
            raise SpecError(f"linux.{unsupported}: user namespaces are not supported by pycri-runtime")
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
    )
    if linux.namespace("user") is not None:
        raise SpecError("user namespaces are not supported by pycri-runtime")
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
