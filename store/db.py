"""One SQLite database for all of pycri's metadata.

Each domain (images, sandboxes, containers) owns its tables and hands its schema to
`Database.migrate` as a list of steps; applied steps are counted per domain in
`schema_versions`, so domains evolve independently. WAL journaling with
synchronous=FULL makes every committed transaction durable, and a crash at any
point leaves the last committed state: callers put everything that must change
together into one `transaction()`.
"""
from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any


class Database:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # root-only before SQLite opens it: the WAL and shm files take the database's mode
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600))
        os.chmod(path, 0o600)
        self._conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=30
        )
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_versions (domain TEXT PRIMARY KEY, version INTEGER NOT NULL)"
        )

    def migrate(self, domain: str, steps: Sequence[str]) -> None:
        """Apply the steps of `domain` that have not been applied yet, each in its own transaction."""
        with self._lock:
            row = self._conn.execute(
                "SELECT version FROM schema_versions WHERE domain=?", (domain,)
            ).fetchone()
            done = row["version"] if row else 0
            for version, step in enumerate(steps[done:], start=done + 1):
                with self.transaction() as tx:
                    tx.executescript_in_tx(step)
                    tx.execute(
                        "INSERT INTO schema_versions(domain, version) VALUES(?, ?) "
                        "ON CONFLICT(domain) DO UPDATE SET version=excluded.version",
                        (domain, version),
                    )

    @contextlib.contextmanager
    def transaction(self) -> Iterator["Transaction"]:
        """A write transaction: all of it is committed, or none of it. What was asked to
        happen `after_commit` happens once the commit is done, in order, before another
        transaction can begin (so in-memory copies change in the order the rows did)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            tx = Transaction(self._conn)
            try:
                yield tx
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
            for action in tx.committed:
                action()

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def query_one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        with self._lock:
            return self._conn.execute(sql, params).fetchone()

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class Transaction:
    """The statements of one open transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self.committed: list[Callable[[], None]] = []  # run once the transaction has committed

    def after_commit(self, action: Callable[[], None]) -> None:
        """Run `action` once this transaction has committed (never if it rolls back)."""
        self.committed.append(action)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self._conn.execute(sql, params)

    def executescript_in_tx(self, script: str) -> None:
        # executescript() would COMMIT first; run the statements one by one instead.
        for statement in script.split(";"):
            if statement.strip():
                self._conn.execute(statement)
