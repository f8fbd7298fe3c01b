"""The image tables: images, their names (RepoTags), digests (RepoDigests), layers and blobs."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pycri.store.db import Database, Transaction

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


class ImageTable:
    def __init__(self, db: Database) -> None:
        self.db = db
        db.migrate("images", SCHEMA)

    def add(self, tx: Transaction, record: ImageRecord, layer_usage: dict[str, tuple[int, int]],
            blobs: list[str]) -> None:
        """Record a pulled image; a tag already on another image moves to this one."""
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
        tx.execute("INSERT OR REPLACE INTO image_tags(name, image_id) VALUES(?,?)", (name, image_id))

    def get(self, image_id: str) -> ImageRecord | None:
        row = self.db.query_one("SELECT * FROM images WHERE id=?", (image_id,))
        return self._record(row) if row else None

    def id_by_tag(self, name: str) -> str | None:
        row = self.db.query_one("SELECT image_id FROM image_tags WHERE name=?", (name,))
        return row["image_id"] if row else None

    def id_by_digest(self, name: str) -> str | None:
        row = self.db.query_one("SELECT image_id FROM image_digests WHERE name=?", (name,))
        return row["image_id"] if row else None

    def all(self) -> list[ImageRecord]:
        """Every image, oldest pull first: four queries whatever their number (ListImages)."""
        rows = self.db.query("SELECT * FROM images ORDER BY pulled_at")
        tags = self._grouped("SELECT image_id, name FROM image_tags ORDER BY name")
        digests = self._grouped("SELECT image_id, name FROM image_digests ORDER BY name")
        layers = self._grouped("SELECT image_id, diff_id FROM image_layers ORDER BY image_id, position")
        return [self._from_row(row, tags.get(row["id"], []), digests.get(row["id"], []), layers.get(row["id"], []))
                for row in rows]

    def _grouped(self, sql: str) -> dict[str, list[str]]:
        """image id -> the second column of its rows, in the query's order."""
        grouped: dict[str, list[str]] = {}
        for image_id, value in self.db.query(sql):
            grouped.setdefault(image_id, []).append(value)
        return grouped

    def delete(self, tx: Transaction, image_id: str) -> None:
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

    def _record(self, row: Any) -> ImageRecord:
        image_id = row["id"]
        tags = [r["name"] for r in self.db.query("SELECT name FROM image_tags WHERE image_id=? ORDER BY name", (image_id,))]
        digests = [r["name"] for r in self.db.query("SELECT name FROM image_digests WHERE image_id=? ORDER BY name", (image_id,))]
        diff_ids = [r["diff_id"] for r in self.db.query(
            "SELECT diff_id FROM image_layers WHERE image_id=? ORDER BY position", (image_id,))]
        return self._from_row(row, tags, digests, diff_ids)

    @staticmethod
    def _from_row(row: Any, tags: list[str], digests: list[str], diff_ids: list[str]) -> ImageRecord:
        return ImageRecord(
            id=row["id"], manifest_digest=row["manifest_digest"], size=row["size"],
            config=json.loads(row["config"]), pulled_at=row["pulled_at"],
            repo_tags=tags, repo_digests=digests, diff_ids=diff_ids,
        )
