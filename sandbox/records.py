"""The sandboxes table: one typed column per field of a pod's record (JSON for the nested ones).

Schema step 2 turned the `extra` JSON column of step 1 into these columns; rows written
before it are moved over on start-up, with the defaults the old reads had for missing keys.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pycri.sandbox.infra import Infra
from pycri.sandbox.namespaces import IdMaps
from pycri.store.db import Database
from pycri.store.table import Codec, RecordTable, json_member

# the columns of step 2, in the order of SandboxRecord's fields
_COLUMNS = """
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        namespace TEXT NOT NULL,
        uid TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        state TEXT NOT NULL,                        -- creating, ready, notready
        handler TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        ips TEXT NOT NULL DEFAULT '[]',             -- JSON list, first is the primary IP
        labels TEXT NOT NULL DEFAULT '{}',          -- JSON object
        annotations TEXT NOT NULL DEFAULT '{}',     -- JSON object
        hostname TEXT NOT NULL DEFAULT '',
        log_directory TEXT NOT NULL DEFAULT '',
        cgroup_parent TEXT NOT NULL DEFAULT '',
        own_cgroup INTEGER NOT NULL DEFAULT 0,
        host_network INTEGER NOT NULL DEFAULT 0,
        host_ipc INTEGER NOT NULL DEFAULT 0,
        host_pid INTEGER NOT NULL DEFAULT 0,
        sysctls TEXT NOT NULL DEFAULT '{}',         -- JSON object
        port_mappings TEXT NOT NULL DEFAULT '[]',   -- JSON list of PortMapping
        userns TEXT NOT NULL DEFAULT 'null',        -- JSON IdMaps, null for the host's
        namespaces TEXT NOT NULL DEFAULT '{}',      -- JSON object: kind -> pinned path
        infra TEXT NOT NULL DEFAULT 'null',         -- JSON Infra, null without one
        files TEXT NOT NULL DEFAULT '{}',           -- JSON object: container path -> host file
        UNIQUE (name, namespace, uid, attempt)
"""


_MOVED = {  # column -> its value in a step-1 row (json_extract gives objects and lists as JSON text)
    "labels": "'{}'", "annotations": "'{}'", "hostname": "''", "log_directory": "''", "cgroup_parent": "''",
    "own_cgroup": "0", "host_network": "0", "host_ipc": "0", "host_pid": "0", "sysctls": "'{}'",
    "port_mappings": "'[]'", "userns": "'null'", "namespaces": "'{}'", "infra": "'null'", "files": "'{}'",
}
_KEPT = ["id", "name", "namespace", "uid", "attempt", "state", "handler", "created_at", "ips"]

SCHEMA = [
    """
    CREATE TABLE sandboxes (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        namespace TEXT NOT NULL,
        uid TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        state TEXT NOT NULL,                -- creating, ready, notready
        handler TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        ips TEXT NOT NULL DEFAULT '[]',     -- JSON list, first is the primary IP
        extra TEXT NOT NULL DEFAULT '{}',   -- JSON: labels, annotations, hostname, namespaces, ...
        UNIQUE (name, namespace, uid, attempt)
    )
    """,
    # typed columns instead of extra: a new table, the rows copied over, the old one dropped
    f"""
    CREATE TABLE sandboxes_typed ({_COLUMNS});
    INSERT INTO sandboxes_typed({', '.join([*_KEPT, *_MOVED])})
        SELECT {', '.join([*_KEPT, *(json_member("extra", c, d) for c, d in _MOVED.items())])} FROM sandboxes;
    DROP TABLE sandboxes;
    ALTER TABLE sandboxes_typed RENAME TO sandboxes
    """,
]

CREATING, READY, NOTREADY = "creating", "ready", "notready"


@dataclass(frozen=True)
class PortMapping:
    protocol: str  # tcp, udp, sctp
    container_port: int
    host_port: int
    host_ip: str = ""


@dataclass(frozen=True)
class PodNamespaces:
    """The files pinning a pod's own namespaces; "" for a kind the pod shares with the host."""

    user: str = ""
    network: str = ""
    ipc: str = ""
    uts: str = ""

    @classmethod
    def from_paths(cls, paths: Mapping[str, str | Path]) -> PodNamespaces:
        """From kind -> file, as namespaces.pin() returns them."""
        return cls(**{kind: str(path) for kind, path in paths.items()})

    def paths(self) -> dict[str, str]:
        """Kind -> file of each pinned namespace (user, network, ipc, uts, in that order)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name)}


@dataclass
class SandboxRecord:
    id: str
    name: str
    namespace: str
    uid: str
    attempt: int
    state: str
    handler: str
    created_at: int
    ips: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    hostname: str = ""
    log_directory: str = ""  # kubelet's directory of the pod's container logs
    cgroup_parent: str = ""
    own_cgroup: bool = False  # no parent came from kubelet: pycri made the pod cgroup and removes it
    host_network: bool = False
    host_ipc: bool = False
    host_pid: bool = False
    sysctls: dict[str, str] = field(default_factory=dict)
    port_mappings: list[PortMapping] = field(default_factory=list)
    userns: IdMaps | None = None  # the pod's user namespace mappings; None: the host's
    namespaces: PodNamespaces = field(default_factory=PodNamespaces)
    infra: Infra | None = None  # the process holding the pod's shared PID namespace
    files: dict[str, str] = field(default_factory=dict)  # container path -> host file (hostname, hosts, resolv.conf)


def _optional(codec: Codec[Any]) -> Codec[Any]:
    return Codec(lambda v: None if v is None else codec.encode(v), lambda d: None if d is None else codec.decode(d))


CODECS: dict[str, Codec[Any]] = {
    "port_mappings": Codec(lambda ports: [vars(p) for p in ports], lambda data: [PortMapping(**p) for p in data]),
    "userns": _optional(Codec(IdMaps.to_dict, IdMaps.from_dict)),
    "namespaces": Codec(PodNamespaces.paths, PodNamespaces.from_paths),
    "infra": _optional(Codec(Infra.to_dict, Infra.from_dict)),
}


class SandboxTable(RecordTable[SandboxRecord]):
    def __init__(self, db: Database) -> None:
        db.migrate("sandboxes", SCHEMA)
        super().__init__(db, "sandboxes", SandboxRecord, ("ips", "labels", "annotations", "sysctls", "files"), CODECS)

    def by_name(self, name: str, namespace: str, uid: str, attempt: int) -> SandboxRecord | None:
        return self.one("name=? AND namespace=? AND uid=? AND attempt=?", (name, namespace, uid, attempt))
