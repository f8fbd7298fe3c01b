"""The SQLite store, the content store and the layer store: what a crash or a bad blob leaves."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from pycri.common.errors import DataLoss
from pycri.images.content import ContentStore
from pycri.images.layers import LayerStore
from pycri.images.registry import parse_challenge
from pycri.store.db import Database


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_migrations_apply_once_per_domain(tmp_path: Path) -> None:
    db = Database(tmp_path / "db.sqlite")
    db.migrate("a", ["CREATE TABLE t (x INTEGER)"])
    db.migrate("a", ["CREATE TABLE t (x INTEGER)", "ALTER TABLE t ADD COLUMN y TEXT"])
    db.migrate("b", ["CREATE TABLE u (x INTEGER)"])
    with db.transaction() as tx:
        tx.execute("INSERT INTO t(x, y) VALUES(1, 'one')")
    db.close()
    again = Database(tmp_path / "db.sqlite")
    again.migrate("a", ["CREATE TABLE t (x INTEGER)", "ALTER TABLE t ADD COLUMN y TEXT"])
    assert [tuple(r) for r in again.query("SELECT x, y FROM t")] == [(1, "one")]


def test_transaction_rolls_back(tmp_path: Path) -> None:
    db = Database(tmp_path / "db.sqlite")
    db.migrate("a", ["CREATE TABLE t (x INTEGER PRIMARY KEY)"])
    with pytest.raises(RuntimeError):
        with db.transaction() as tx:
            tx.execute("INSERT INTO t(x) VALUES(1)")
            raise RuntimeError("crash half-way")
    assert db.query("SELECT * FROM t") == []


def test_content_store_verifies(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    store.write(digest(b"hello"), b"hello")
    assert store.read(digest(b"hello")) == b"hello"
    with pytest.raises(DataLoss, match="digest mismatch"):
        store.write(digest(b"hello!"), b"HELLO!")
    with pytest.raises(DataLoss, match="larger"):
        with store.ingest(digest(b"hi"), 2) as ingest:
            ingest.write(b"hi there")
    with pytest.raises(DataLoss, match="got 2 bytes"):
        with store.ingest(digest(b"hi!"), 3) as ingest:
            ingest.write(b"hi")
            ingest.commit()
    assert list(store.digests()) == [digest(b"hello")]
    assert list(store.ingest_dir.iterdir()) == []  # failed ingests leave nothing


def test_layer_store_publishes_only_on_success(tmp_path: Path) -> None:
    layers = LayerStore(tmp_path)
    diff_id = "sha256:" + "a" * 64
    with pytest.raises(RuntimeError):
        with layers.create(diff_id) as target:
            (target / "file").write_text("x")
            target.chmod(0o500)  # read-only dirs are removed too
            raise RuntimeError("bad layer")
    assert not layers.has(diff_id) and list(layers.tmp.iterdir()) == []
    with layers.create(diff_id) as target:
        (target / "file").write_text("x")
    assert layers.has(diff_id) and (layers.diff(diff_id) / "file").read_text() == "x"
    assert list(layers.diff_ids()) == [diff_id]
    layers.delete(diff_id)
    assert list(layers.diff_ids()) == []


def test_parse_challenge() -> None:
    scheme, params = parse_challenge(
        'Bearer realm="http://127.0.0.1:5003/token",service="reg",scope="repository:a/b:pull"')
    assert scheme == "bearer"
    assert params == {"realm": "http://127.0.0.1:5003/token", "service": "reg", "scope": "repository:a/b:pull"}
    assert parse_challenge('Basic realm="x"') == ("basic", {"realm": "x"})


def test_layer_delete_renames_at_once_and_removes_in_the_background(tmp_path: Path) -> None:
    import time

    layers = LayerStore(tmp_path)
    diff_id = "sha256:" + "b" * 64
    with layers.create(diff_id) as target:
        (target / "sub").mkdir()
        (target / "sub" / "file").write_text("x")
        (target / "sub").chmod(0o500)
    assert layers.usage(diff_id).inodes == 3  # diff/, sub/, file, measured at unpack
    assert (layers.dir(diff_id) / "usage.json").exists()
    layers.delete(diff_id)
    assert not layers.has(diff_id) and list(layers.diff_ids()) == []
    layers.delete(diff_id)  # deleting an absent layer is fine
    deadline = time.monotonic() + 60
    while list(layers.trash.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(layers.trash.iterdir()) == []
    # a stop before the background removal: the next start clears the trash
    (layers.trash / "left").mkdir()
    assert list(LayerStore(tmp_path).trash.iterdir()) == []
