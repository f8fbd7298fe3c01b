"""The containers table."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pycri.store.db import Database
from pycri.store.records import Labelled, RecordTable

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
]

CREATING, CREATED, RUNNING, EXITED = "creating", "created", "running", "exited"


@dataclass
class ContainerRecord(Labelled):
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
    extra: dict[str, Any] = field(default_factory=dict)


class ContainerTable(RecordTable[ContainerRecord]):
    def __init__(self, db: Database) -> None:
        db.migrate("containers", SCHEMA)
        super().__init__(db, "containers", ContainerRecord, ("extra",))

    def by_name(self, pod_id: str, name: str, attempt: int) -> ContainerRecord | None:
        return self.one("pod_id=? AND name=? AND attempt=?", (pod_id, name, attempt))

    def all(self, pod_id: str | None = None) -> list[ContainerRecord]:
        return self.where() if pod_id is None else self.where("pod_id=?", (pod_id,))
