"""The image tables: images, their names (RepoTags), digests (RepoDigests), layers and blobs.

The database is the source of truth; `ImageTable` also keeps the decoded image records in
memory (a `Catalog`), so that ListImages and ImageStatus, which kubelet calls every few
seconds, run no query and decode no JSON. The catalog is write-through: every write of an
image, a tag or a digest through the table drops it, and the end (commit or rollback) of a
`transaction()` of the table drops it and loads it again from the database, in four queries
whatever the number of images (and one more for the configs of new images: a config, whose
digest is the image id, is decoded once). A config that does not decode is read as {} (and
logged): one bad row never breaks a List for the node.
"""
from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import structlog

from pycri.store.db import Database, Transaction

log = structlog.get_logger("images")

SCHEMA = [
    """
    CREATE TABLE images (
        id TEXT PRIMARY KEY,                -- the config digest
        manifest_digest TEXT NOT NULL,
        size INTEGER NOT NULL,
        config TEXT NOT NULL,               -- the image config, JSON
        pulled_at INTEGER NOT NULL
    );
    CREATE TABLE image_tags (
        name TEXT PRIMARY KEY,              -- domain/path:tag
        image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE
    );
    CREATE INDEX image_tags_image ON image_tags(image_id);
    CREATE TABLE image_digests (
        name TEXT PRIMARY KEY,              -- domain/path@digest
        image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE
    );
    CREATE INDEX image_digests_image ON image_digests(image_id);
    CREATE TABLE layers (
        diff_id TEXT PRIMARY KEY,
        size INTEGER NOT NULL,              -- bytes on disk, unpacked
        inodes INTEGER NOT NULL
    );
    CREATE TABLE image_layers (
        image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        diff_id TEXT NOT NULL REFERENCES layers(diff_id),
        PRIMARY KEY (image_id, position)
    );
    CREATE INDEX image_layers_layer ON image_layers(diff_id);
    CREATE TABLE image_blobs (
        image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        digest TEXT NOT NULL,
        PRIMARY KEY (image_id, digest)
    );
    CREATE INDEX image_blobs_digest ON image_blobs(digest)
    """,
]


@dataclass
class ImageRecord:
    id: str
    manifest_digest: str
    size: int
    config: dict[str, Any]
    pulled_at: int
    repo_tags: list[str] = field(default_factory=list)
    repo_digests: list[str] = field(default_factory=list)
    diff_ids: list[str] = field(default_factory=list)


def _copy(record: ImageRecord) -> ImageRecord:
    """A record of the catalog for a caller: lists of its own; the config is shared (read-only)."""
    return ImageRecord(id=record.id, manifest_digest=record.manifest_digest, size=record.size,
                       config=record.config, pulled_at=record.pulled_at, repo_tags=list(record.repo_tags),
                       repo_digests=list(record.repo_digests), diff_ids=list(record.diff_ids))


@dataclass(frozen=True)
class Catalog:
    """Every image record, decoded, as the database held them at one moment."""

    records: tuple[ImageRecord, ...]  # oldest pull first
    by_id: dict[str, ImageRecord]
    by_tag: dict[str, str]  # domain/path:tag -> image id
    by_digest: dict[str, str]  # domain/path@digest -> image id


class ImageTable:
    def __init__(self, db: Database) -> None:
        self.db = db
        db.migrate("images", SCHEMA)
        self._lock = threading.Lock()  # guards the three below
        self._catalog: Catalog | None = None  # None: load it from the database at the next read
        self._generation = 0  # counts the writes (and ends of transactions): a load that saw one is not kept
        self._open = 0  # transactions of this table under way: nothing loaded meanwhile is kept
        # image id -> its decoded config, kept across loads: an id is its config's digest, so a
        # load decodes (and fetches) only the configs of images it has not seen
        self._configs: dict[str, Any] = {}

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """A write transaction of the database that drops the catalog when it ends (committed
        or rolled back). Write the image tables through this one."""
        with self._lock:
            self._open += 1
        try:
            with self.db.transaction() as tx:
                yield tx
        finally:
            with self._lock:
                self._open -= 1
                self._invalidate_locked()
                reload = self._open == 0
            if reload:  # write-through: the next ListImages or ImageStatus (kubelet's, after a pull) finds it loaded
                self._reload()

    def _reload(self) -> None:
        try:
            self.catalog()
        except Exception as exc:  # noqa: BLE001 - the write is done; the next read loads it again
            log.warning("loading the image catalog after a write failed", error=str(exc))

    def _invalidate(self) -> None:
        """Drop the catalog: called before every write (a load under way is then not kept; one
        that starts later waits for the writer's transaction, as every query does)."""
        with self._lock:
            self._invalidate_locked()

    def _invalidate_locked(self) -> None:
        self._catalog = None
        self._generation += 1

    def add(self, tx: Transaction, record: ImageRecord, layer_usage: dict[str, tuple[int, int]],
            blobs: list[str]) -> None:
        """Record a pulled image; a tag already on another image moves to this one."""
        self._invalidate()
        tx.execute(
            "INSERT INTO images(id, manifest_digest, size, config, pulled_at) VALUES(?,?,?,?,?) "
            "ON CONFLICT(id) DO UPDATE SET pulled_at=excluded.pulled_at",
            (record.id, record.manifest_digest, record.size, json.dumps(record.config), record.pulled_at),
        )
        for diff_id, (size, inodes) in layer_usage.items():
            tx.execute("INSERT OR IGNORE INTO layers(diff_id, size, inodes) VALUES(?,?,?)", (diff_id, size, inodes))
        for position, diff_id in enumerate(record.diff_ids):
            tx.execute("INSERT OR IGNORE INTO image_layers(image_id, position, diff_id) VALUES(?,?,?)",
                       (record.id, position, diff_id))
        for digest in blobs:
            tx.execute("INSERT OR IGNORE INTO image_blobs(image_id, digest) VALUES(?,?)", (record.id, digest))
        for name in record.repo_tags:
            tx.execute("INSERT OR REPLACE INTO image_tags(name, image_id) VALUES(?,?)", (name, record.id))
        for name in record.repo_digests:
            tx.execute("INSERT OR REPLACE INTO image_digests(name, image_id) VALUES(?,?)", (name, record.id))

    def add_tag(self, tx: Transaction, name: str, image_id: str) -> None:
        """Name the image `name` (domain/path:tag); a name on another image moves to this one."""
        self._invalidate()
        tx.execute("INSERT OR REPLACE INTO image_tags(name, image_id) VALUES(?,?)", (name, image_id))

    def get(self, image_id: str) -> ImageRecord | None:
        record = self.catalog().by_id.get(image_id)
        return _copy(record) if record else None

    def id_by_tag(self, name: str) -> str | None:
        return self.catalog().by_tag.get(name)

    def id_by_digest(self, name: str) -> str | None:
        return self.catalog().by_digest.get(name)

    def all(self) -> list[ImageRecord]:
        """Every image, oldest pull first (ListImages): no query while the catalog holds."""
        return [_copy(r) for r in self.catalog().records]

    def catalog(self) -> Catalog:
        """The decoded records: the one in memory, or one loaded now (and kept, unless a write
        came in the meantime or a transaction of this table is open)."""
        with self._lock:
            catalog, generation = self._catalog, self._generation
        if catalog is not None:
            return catalog
        catalog = self._load()
        with self._lock:
            if self._generation == generation and not self._open:
                self._catalog = catalog
        return catalog

    def _load(self) -> Catalog:
        """Four queries whatever the number of images, and a fifth for the configs of images
        not seen before (decoded once per image for the daemon's life)."""
        rows = self.db.query("SELECT id, manifest_digest, size, pulled_at FROM images ORDER BY pulled_at")
        tags = self._grouped("SELECT image_id, name FROM image_tags ORDER BY name")
        digests = self._grouped("SELECT image_id, name FROM image_digests ORDER BY name")
        layers = self._grouped("SELECT image_id, diff_id FROM image_layers ORDER BY image_id, position")
        with self._lock:
            known = self._configs
        configs = {row["id"]: known[row["id"]] for row in rows if row["id"] in known}
        if len(configs) < len(rows):
            for image_id, text in self.db.query("SELECT id, config FROM images"):
                if image_id not in configs:
                    configs[image_id] = _config(image_id, text)
        with self._lock:
            self._configs = configs  # (the images of this load: those removed are forgotten)
        records = tuple(
            ImageRecord(id=row["id"], manifest_digest=row["manifest_digest"], size=row["size"],
                        config=configs.get(row["id"], {}), pulled_at=row["pulled_at"],
                        repo_tags=tags.get(row["id"], []), repo_digests=digests.get(row["id"], []),
                        diff_ids=layers.get(row["id"], []))
            for row in rows)
        by_id = {r.id: r for r in records}
        return Catalog(records, by_id,
                       {name: r.id for r in records for name in r.repo_tags},
                       {name: r.id for r in records for name in r.repo_digests})

    def _grouped(self, sql: str) -> dict[str, list[str]]:
        """image id -> the second column of its rows, in the query's order."""
        grouped: dict[str, list[str]] = {}
        for image_id, value in self.db.query(sql):
            grouped.setdefault(image_id, []).append(value)
        return grouped

    def delete(self, tx: Transaction, image_id: str) -> None:
        self._invalidate()
        tx.execute("DELETE FROM images WHERE id=?", (image_id,))

    def delete_unused_layers(self, tx: Transaction) -> None:
        tx.execute("DELETE FROM layers WHERE diff_id NOT IN (SELECT diff_id FROM image_layers)")

    def used_blobs(self) -> set[str]:
        return {row["digest"] for row in self.db.query("SELECT DISTINCT digest FROM image_blobs")}

    def used_layers(self) -> set[str]:
        return {row["diff_id"] for row in self.db.query("SELECT diff_id FROM layers")}

    def layer_usage(self) -> tuple[int, int]:
        row = self.db.query_one("SELECT COALESCE(SUM(size),0) AS size, COALESCE(SUM(inodes),0) AS inodes FROM layers")
        assert row is not None
        return int(row["size"]), int(row["inodes"])


def _config(image_id: str, text: str) -> Any:
    """The stored config, or {} (logged) where it does not decode: one bad row never breaks a
    List; such an image still lists, and can be removed."""
    try:
        config = json.loads(text)
    except (ValueError, TypeError, RecursionError) as exc:
        log.error("an image config in the database does not decode; read as {}", image_id=image_id,
                  error=str(exc)[:200])
        return {}
    return config
