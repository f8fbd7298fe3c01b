"""The OCI runtime config (config.json) that pycri writes for a container, as dataclasses.

The build side: `criserver/oci_spec.py` translates a CRI ContainerConfig into a `Spec`, the
container service fills in `root.path` and the image volumes' sources and writes
`Spec.to_dict()` as the bundle's config.json; UpdateContainerResources reads it back
(`Spec.from_dict`) and merges new limits into `linux.resources` (`Resources.merged`).

The parse side is `runtime/spec.py`: what pycri-runtime reads of any config.json, in light
classes without dataclasses (its start-up budget), validated and made absolute against the
bundle. The two are separate on purpose; this module models only what pycri sets.

Field names are the runtime-spec's in snake_case; JSON keys are its camelCase ones. A
field without a default is always written; an optional one (`None` by default) is left out
of the JSON while it is None, as the runtime-spec's omitempty fields are. `seccomp` stays
the raw JSON object: profiles (the default one, or a node's file) are passed through.
"""
from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

OCI_VERSION = "1.1.0"

T = TypeVar("T", bound="JsonObject")


class JsonObject:
    """to_dict and from_dict for the dataclasses below, driven by their fields: in field
    order, a field's JSON key is its name in camelCase (or its metadata "json"), None is
    left out. from_dict refuses unknown keys, missing required ones and wrong types."""

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is not None:
                out[_key(f)] = _plain(value)
        return out

    @classmethod
    def from_dict(cls: type[T], data: Any, where: str = "") -> T:
        where = where or cls.__name__
        if not isinstance(data, dict):
            raise ValueError(f"{where} must be an object")
        fields, required = _plan(cls)
        if not data.keys() <= fields.keys():
            unknown = sorted(set(data) - set(fields))
            raise ValueError(f"{where}: unknown key {unknown[0]!r}")
        values = {}
        for key, value in data.items():
            name, decode = fields[key]
            values[name] = decode(value, f"{where}.{key}")
        if not required <= data.keys():
            missing = [key for key in fields if key in required and key not in data]
            raise ValueError(f"{where}: {missing[0]!r} is missing")
        return cls(**values)


def _key(f: dataclasses.Field[Any]) -> str:
    first, *rest = f.name.split("_")
    return f.metadata.get("json") or first + "".join(word.capitalize() for word in rest)


def _plain(value: Any) -> Any:
    """A fresh JSON value: nested objects as dicts, lists and dicts copied."""
    if isinstance(value, JsonObject):
        return value.to_dict()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


@functools.cache
def _schema(cls: type) -> tuple[dict[str, Any], dict[str, str]]:
    """The class's field types and its JSON keys (key -> field name)."""
    return typing.get_type_hints(cls), {_key(f): f.name for f in dataclasses.fields(cls)}


def _required(cls: type, name: str) -> bool:
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


Decoder = typing.Callable[[Any, str], Any]  # (JSON value, where it is) -> the field's value


@functools.cache
def _plan(cls: type) -> tuple[dict[str, tuple[str, Decoder]], frozenset[str]]:
    """The class's JSON keys (key -> its field's name and decoder, in field order) and the
    keys that must be there (from_dict decodes by it: the type hints are read once)."""
    hints, keys = _schema(cls)
    return ({key: (name, _decoder(hints[name])) for key, name in keys.items()},
            frozenset(key for key, name in keys.items() if _required(cls, name)))


def _decode(hint: Any, data: Any, where: str) -> Any:
    return _decoder(hint)(data, where)


@functools.cache
def _decoder(hint: Any) -> Decoder:
    """What turns a JSON value into a value of type `hint` (refusing a wrong type), made once
    per type."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):  # X | None
        (inner,) = [a for a in args if a is not type(None)]
        decode_inner = _decoder(inner)
        return lambda data, where: None if data is None else decode_inner(data, where)
    if origin is list:
        decode_item = _decoder(args[0])
        plain = _plain_check(args[0])

        def decode_list(data: Any, where: str) -> Any:
            if not isinstance(data, list):
                raise ValueError(f"{where} must be a list")
            if plain is not None and all(map(plain, data)):  # (a bad item is found, and named, below)
                return list(data)
            return [decode_item(v, f"{where}[{i}]") for i, v in enumerate(data)]
        return decode_list
    if origin is dict:
        decode_value = _decoder(args[1])
        plain = _plain_check(args[1])

        def decode_dict(data: Any, where: str) -> Any:
            if not isinstance(data, dict):
                raise ValueError(f"{where} must be an object")
            if plain is not None and all(map(plain, data.values())):
                return dict(data)
            return {k: decode_value(v, f"{where}.{k}") for k, v in data.items()}
        return decode_dict
    if hint is Any:
        return lambda data, where: _plain(data)
    if isinstance(hint, type) and issubclass(hint, JsonObject):
        return hint.from_dict
    plain = _plain_check(hint)
    assert plain is not None, hint

    def decode_plain(data: Any, where: str) -> Any:
        if not plain(data):
            raise ValueError(f"{where} must be of type {hint.__name__}")
        return data
    return decode_plain


def _plain_check(hint: Any) -> typing.Callable[[Any], bool] | None:
    """Whether a JSON value is of the plain type `hint` (an int is no bool); None when
    `hint` is not a plain type."""
    if hint is Any or not isinstance(hint, type) or issubclass(hint, JsonObject):
        return None
    if hint is int:
        return lambda v: isinstance(v, int) and not isinstance(v, bool)
    return lambda v: isinstance(v, hint)


# -- process ----------------------------------------------------------------


@dataclass
class User(JsonObject):
    uid: int
    gid: int
    additional_gids: list[int]


@dataclass
class Capabilities(JsonObject):
    bounding: list[str]
    effective: list[str]
    permitted: list[str]
    ambient: list[str] | None = None
    inheritable: list[str] | None = None


@dataclass(kw_only=True)
class Process(JsonObject):
    terminal: bool
    user: User
    args: list[str]
    env: list[str]
    cwd: str
    capabilities: Capabilities
    no_new_privileges: bool
    oom_score_adj: int | None = None


# -- root and mounts ----------------------------------------------------------


@dataclass
class Root(JsonObject):
    path: str
    readonly: bool


@dataclass
class Mount(JsonObject):
    destination: str
    type: str
    source: str  # "" for an image volume until the container service mounts it
    options: list[str]


# -- linux --------------------------------------------------------------------


@dataclass
class Namespace(JsonObject):
    type: str
    path: str | None = None  # None: a new namespace of that type


@dataclass
class IdMapping(JsonObject):
    container_id: int = field(metadata={"json": "containerID"})
    host_id: int = field(metadata={"json": "hostID"})
    size: int


@dataclass(kw_only=True)
class Device(JsonObject):
    """A device node the runtime creates in the container's /dev."""

    path: str
    type: str  # "c" or "b"
    major: int
    minor: int
    file_mode: int
    uid: int
    gid: int


@dataclass
class DeviceRule(JsonObject):
    """A devices cgroup rule; None for type, major or minor matches all."""

    allow: bool
    type: str | None = None
    major: int | None = None
    minor: int | None = None
    access: str | None = None


@dataclass
class Cpu(JsonObject):
    shares: int | None = None
    quota: int | None = None
    period: int | None = None
    cpus: str | None = None
    mems: str | None = None


@dataclass
class Memory(JsonObject):
    limit: int | None = None
    swap: int | None = None


@dataclass
class HugepageLimit(JsonObject):
    page_size: str
    limit: int


@dataclass
class Resources(JsonObject):
    devices: list[DeviceRule] | None = None
    cpu: Cpu | None = None
    memory: Memory | None = None
    hugepage_limits: list[HugepageLimit] | None = None
    unified: dict[str, str] | None = None

    def merged(self, update: Resources) -> Resources:
        """These resources with `update`'s applied (UpdateContainerResources): cpu, memory and
        unified take each value the update sets; the update's lists replace these."""
        return Resources(
            devices=self.devices if update.devices is None else update.devices,
            cpu=_overlay(self.cpu, update.cpu),
            memory=_overlay(self.memory, update.memory),
            hugepage_limits=self.hugepage_limits if update.hugepage_limits is None else update.hugepage_limits,
            unified=self.unified if update.unified is None else {**(self.unified or {}), **update.unified},
        )


O = TypeVar("O", Cpu, Memory)


def _overlay(current: O | None, update: O | None) -> O | None:
    if current is None or update is None:
        return update if current is None else current
    return dataclasses.replace(current, **{k: v for k, v in dataclasses.asdict(update).items() if v is not None})


@dataclass(kw_only=True)
class Linux(JsonObject):
    namespaces: list[Namespace]
    resources: Resources
    cgroups_path: str
    masked_paths: list[str]
    readonly_paths: list[str]
    sysctl: dict[str, str]
    devices: list[Device]
    rootfs_propagation: str | None = None
    uid_mappings: list[IdMapping] | None = None
    gid_mappings: list[IdMapping] | None = None
    seccomp: dict[str, Any] | None = None  # the profile's JSON object, passed through


# -- the whole config -----------------------------------------------------------


@dataclass(kw_only=True)
class Spec(JsonObject):
    oci_version: str = OCI_VERSION
    process: Process
    root: Root
    mounts: list[Mount]
    annotations: dict[str, str]
    linux: Linux
