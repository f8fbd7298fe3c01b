"""RecordTable's in-memory records (store/table.py): written through on commit only, handed out
as copies, in created_at order, the same as the database's rows under concurrent writers."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pycri.store.db import Database
from pycri.store.table import RecordTable


@dataclass
class Item:
    id: str
    created_at: int
    state: str = "new"
    tags: dict[str, str] = field(default_factory=dict)
    flag: bool = False


def table(db: Database) -> RecordTable[Item]:
    db.migrate("items", ["CREATE TABLE items (id TEXT PRIMARY KEY, created_at INTEGER, state TEXT, tags TEXT, "
                         "flag INTEGER)"])
    return RecordTable(db, "items", Item, ("tags",))


def test_records_are_read_once_and_written_through(tmp_path: Path) -> None:
    db = Database(tmp_path / "db.sqlite")
    items = table(db)
    with db.transaction() as tx:
        items.insert(tx, Item("b", 2, tags={"k": "v"}))
        items.insert(tx, Item("a", 1))
        items.insert(tx, Item("c", 2))
    assert [i.id for i in items.records()] == ["a", "b", "c"]  # by created_at, ties in insert order
    record = items.get("b")
    assert record == Item("b", 2, tags={"k": "v"})
    record.state = "done"
    assert items.get("b").state == "new"  # type: ignore[union-attr]  # a copy: nothing changes until written
    with db.transaction() as tx:
        items.update(tx, record)
        items.delete(tx, "a")
    assert [(i.id, i.state) for i in items.records()] == [("b", "done"), ("c", "new")]
    again = table(Database(tmp_path / "db.sqlite"))  # what the database holds is what was kept
    assert again.records() == items.records() == items.where()


def test_a_rolled_back_write_changes_nothing(tmp_path: Path) -> None:
    db = Database(tmp_path / "db.sqlite")
    items = table(db)
    with db.transaction() as tx:
        items.insert(tx, Item("a", 1))
    with pytest.raises(RuntimeError):
        with db.transaction() as tx:
            items.update(tx, Item("a", 1, state="changed"))
            items.insert(tx, Item("b", 2))
            items.delete(tx, "a")
            raise RuntimeError("half-way")
    assert items.records() == [Item("a", 1)] == items.where()


def test_an_update_of_a_deleted_row_does_not_bring_it_back(tmp_path: Path) -> None:
    db = Database(tmp_path / "db.sqlite")
    items = table(db)
    with db.transaction() as tx:
        items.insert(tx, Item("a", 1))
    stale = items.get("a")
    with db.transaction() as tx:
        items.delete(tx, "a")
    with db.transaction() as tx:
        items.update(tx, stale)  # type: ignore[arg-type]
    assert items.get("a") is None and items.records() == [] == items.where()


def test_concurrent_writers_leave_memory_as_the_database(tmp_path: Path) -> None:
    db = Database(tmp_path / "db.sqlite")
    items = table(db)
    with db.transaction() as tx:
        for i in range(20):
            items.insert(tx, Item(f"i{i:02}", i))
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for round_no in range(30):
                record = items.get(f"i{(n + round_no) % 20:02}")
                assert record is not None
                record.state = f"w{n}-{round_no}"
                with db.transaction() as tx:
                    items.update(tx, record)
                assert len(items.records()) == 20
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert items.records() == items.where()
