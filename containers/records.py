"""The containers table: one typed column per field of a container's record (JSON for the nested ones).

Schema step 2 turned the `extra` JSON column of step 1 into these columns; rows written
before it are moved over on start-up, with the defaults the old reads had for missing keys.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pycri.containers.oci_config import User
from pycri.store.db import Database
from pycri.store.table import Codec, RecordTable, json_member

# the columns of step 2, in the order of ContainerRecord's fields
_COLUMNS = """
        id TEXT PRIMARY KEY,
        pod_id TEXT NOT NULL,
        name TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        state TEXT NOT NULL,                        -- creating, created, running, exited
        handler TEXT NOT NULL,
        image TEXT NOT NULL,                        -- the image as the client named it
        image_id TEXT NOT NULL,
        image_ref TEXT NOT NULL,                    -- the image's repo digest, or its id
        log_path TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        pid INTEGER NOT NULL DEFAULT 0,
        started_at INTEGER NOT NULL DEFAULT 0,
        finished_at INTEGER NOT NULL DEFAULT 0,
        exit_code INTEGER NOT NULL DEFAULT 0,
        reason TEXT NOT NULL DEFAULT '',
        message TEXT NOT NULL DEFAULT '',
        labels TEXT NOT NULL DEFAULT '{}',          -- JSON object
        annotations TEXT NOT NULL DEFAULT '{}',     -- JSON object
        mounts TEXT NOT NULL DEFAULT '[]',          -- JSON list of ContainerMount
        stdin INTEGER NOT NULL DEFAULT 0,
        stdin_once INTEGER NOT NULL DEFAULT 0,
        tty INTEGER NOT NULL DEFAULT 0,
        stop_signal TEXT NOT NULL DEFAULT '',       -- the image's StopSignal, as text
        user TEXT NOT NULL DEFAULT 'null',          -- JSON process.user of its spec, null if not kept
        image_volumes TEXT NOT NULL DEFAULT '[]',   -- JSON list of the image ids it mounts as volumes
        UNIQUE (pod_id, name, attempt)
"""


# what the old read, `str(extra.get("stop_signal") or "")`, gave: "" for a missing, null,
# false, zero or empty value, else the value as text (objects and lists as JSON)
_SIGNAL = "json_extract(extra, '$.stop_signal')"
_STOP_SIGNAL = f"""CASE json_type(extra, '$.stop_signal')
        WHEN 'text' THEN {_SIGNAL}
        WHEN 'true' THEN 'True'
        WHEN 'integer' THEN CASE WHEN {_SIGNAL} = 0 THEN '' ELSE CAST({_SIGNAL} AS TEXT) END
        WHEN 'real' THEN CASE WHEN {_SIGNAL} = 0 THEN '' ELSE CAST({_SIGNAL} AS TEXT) END
        WHEN 'object' THEN CASE WHEN {_SIGNAL} = '{{}}' THEN '' ELSE {_SIGNAL} END
        WHEN 'array' THEN CASE WHEN {_SIGNAL} = '[]' THEN '' ELSE {_SIGNAL} END
        ELSE '' END"""

_MOVED = {  # column -> its value in a step-1 row (json_extract gives objects and lists as JSON text)
    **{column: json_member("extra", column, default) for column, default in (
        ("labels", "'{}'"), ("annotations", "'{}'"), ("mounts", "'[]'"), ("stdin", "0"), ("stdin_once", "0"),
        ("tty", "0"), ("user", "'null'"), ("image_volumes", "'[]'"))},
    "stop_signal": _STOP_SIGNAL,
}
_KEPT = ["id", "pod_id", "name", "attempt", "state", "handler", "image", "image_id", "image_ref", "log_path",
         "created_at", "pid", "started_at", "finished_at", "exit_code", "reason", "message"]

SCHEMA = [
    """
    CREATE TABLE containers (
        id TEXT PRIMARY KEY,
        pod_id TEXT NOT NULL,
        name TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        state TEXT NOT NULL,               -- creating, created, running, exited
        handler TEXT NOT NULL,
        image TEXT NOT NULL,               -- the image as the client named it
        image_id TEXT NOT NULL,
        image_ref TEXT NOT NULL,           -- the image's repo digest, or its id
        log_path TEXT NOT NULL,
        pid INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL,
        started_at INTEGER NOT NULL DEFAULT 0,
        finished_at INTEGER NOT NULL DEFAULT 0,
        exit_code INTEGER NOT NULL DEFAULT 0,
        reason TEXT NOT NULL DEFAULT '',
        message TEXT NOT NULL DEFAULT '',
        extra TEXT NOT NULL DEFAULT '{}',  -- JSON: labels, annotations, mounts, tty, stdin, diff_ids...
        UNIQUE (pod_id, name, attempt)
    );
    CREATE INDEX containers_pod ON containers(pod_id)
    """,
    # typed columns instead of extra: a new table, the rows copied over, the old one (and its
    # index) dropped
    f"""
    CREATE TABLE containers_typed ({_COLUMNS});
    INSERT INTO containers_typed({', '.join([*_KEPT, *_MOVED])})
        SELECT {', '.join([*_KEPT, *_MOVED.values()])} FROM containers;
    DROP TABLE containers;
    ALTER TABLE containers_typed RENAME TO containers;
    CREATE INDEX containers_pod ON containers(pod_id)
    """,
]

CREATING, CREATED, RUNNING, EXITED = "creating", "created", "running", "exited"


@dataclass(frozen=True)
class ContainerMount:
    """A mount of the CreateContainer request, as ContainerStatus reports it."""

    container_path: str
    host_path: str
    readonly: bool
    propagation: int  # cri.MountPropagation
    recursive_read_only: bool = False
    image_id: str = ""  # an image volume's image ("" for any other mount)
    user_specified_image: str = ""
    image_sub_path: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The JSON the record keeps (step 1's shape: the image as an object, only for an image volume)."""
        data: dict[str, Any] = {"container_path": self.container_path, "host_path": self.host_path,
                                "readonly": self.readonly, "recursive_read_only": self.recursive_read_only,
                                "propagation": self.propagation}
        if self.image_id:
            data.update(image={"image": self.image_id, "user_specified_image": self.user_specified_image},
                        image_sub_path=self.image_sub_path)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ContainerMount:
        """From to_dict's JSON, or an older pycri's (no recursive_read_only, no image)."""
        image = data.get("image") or {}
        return cls(container_path=data["container_path"], host_path=data["host_path"], readonly=data["readonly"],
                   propagation=data["propagation"], recursive_read_only=data.get("recursive_read_only", False),
                   image_id=image.get("image", ""), user_specified_image=image.get("user_specified_image", ""),
                   image_sub_path=data.get("image_sub_path", ""))


@dataclass
class ContainerRecord:
    id: str
    pod_id: str
    name: str
    attempt: int
    state: str
    handler: str
    image: str
    image_id: str
    image_ref: str
    log_path: str
    created_at: int
    pid: int = 0
    started_at: int = 0
    finished_at: int = 0
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    mounts: list[ContainerMount] = field(default_factory=list)
    stdin: bool = False
    stdin_once: bool = False
    tty: bool = False
    stop_signal: str = ""  # the image's StopSignal ("" for SIGTERM)
    user: User | None = None  # process.user of its spec; None: read it from config.json
    image_volumes: list[str] = field(default_factory=list)  # the images it mounts as volumes, by id


def _user(data: Any) -> User | None:
    """process.user as the record keeps it (None or an empty object: not kept)."""
    if not data:
        return None
    return User(uid=int(data.get("uid", 0)), gid=int(data.get("gid", 0)),
                additional_gids=[int(g) for g in data.get("additionalGids") or []])


CODECS: dict[str, Codec[Any]] = {
    "mounts": Codec(lambda mounts: [m.to_dict() for m in mounts],
                    lambda data: [ContainerMount.from_dict(m) for m in data]),
    "user": Codec(lambda user: None if user is None else user.to_dict(), _user),
}


class ContainerTable(RecordTable[ContainerRecord]):
    def __init__(self, db: Database) -> None:
        db.migrate("containers", SCHEMA)
        super().__init__(db, "containers", ContainerRecord, ("labels", "annotations", "image_volumes"), CODECS)

    def by_name(self, pod_id: str, name: str, attempt: int) -> ContainerRecord | None:
        return self.one("pod_id=? AND name=? AND attempt=?", (pod_id, name, attempt))

    def all(self, pod_id: str | None = None) -> list[ContainerRecord]:
        """Every container (of one pod), oldest first, from memory."""
        records = self.records()
        return records if pod_id is None else [r for r in records if r.pod_id == pod_id]
