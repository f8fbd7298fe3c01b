"""The sandboxes table."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pycri.store.db import Database
from pycri.store.records import Labelled, RecordTable

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
]

CREATING, READY, NOTREADY = "creating", "ready", "notready"


@dataclass
class SandboxRecord(Labelled):
    id: str
    name: str
    namespace: str
    uid: str
    attempt: int
    state: str
    handler: str
    created_at: int
    ips: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


class SandboxTable(RecordTable[SandboxRecord]):
    def __init__(self, db: Database) -> None:
        db.migrate("sandboxes", SCHEMA)
        super().__init__(db, "sandboxes", SandboxRecord, ("ips", "extra"))

    def by_name(self, name: str, namespace: str, uid: str, attempt: int) -> SandboxRecord | None:
        return self.one("name=? AND namespace=? AND uid=? AND attempt=?", (name, namespace, uid, attempt))
