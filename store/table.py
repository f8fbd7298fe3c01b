"""A table of dataclass records: one column per field, JSON for the fields named as such.

A JSON field is kept as plain JSON (`json_fields`) or, for a typed field, through a `Codec`
that turns its value into JSON values and back (`codecs`). A `bool` field is an INTEGER column
read back as a bool.

The table keeps every record decoded in memory as well (read once when it is made, then
written through: `insert`, `update` and `delete` change the in-memory copy once their
transaction commits), so `get` and `all` run no SQL and decode no JSON. The database stays the
source of truth, and every write must go through the table (a schema step's own SQL runs
before the table is made). Callers get copies: changing a record they got changes nothing
until they write it. A record's nested values (lists, dicts) are shared with the copy kept,
so callers replace them rather than change them in place.
"""
from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Generic, TypeVar, get_type_hints

from pycri.store.db import Database, Transaction

T = TypeVar("T")
V = TypeVar("V")


@dataclass(frozen=True)
class Codec(Generic[V]):
    """How a typed field is kept in a JSON column: `encode` gives JSON values, `decode` takes them."""

    encode: Callable[[V], Any]
    decode: Callable[[Any], V]


class RecordTable(Generic[T]):
    def __init__(self, db: Database, table: str, record_type: type[T], json_fields: tuple[str, ...],
                 codecs: Mapping[str, Codec[Any]] | None = None) -> None:
        self.db = db
        self.table = table
        self.record_type = record_type
        self.json_fields = json_fields
        self.codecs = dict(codecs or {})
        self.columns = [f.name for f in fields(record_type)]  # type: ignore[arg-type]
        hints = get_type_hints(record_type)
        self.bools = [c for c in self.columns if hints.get(c) is bool]
        self._lock = threading.Lock()  # the in-memory copies; writers hold the database's lock too
        self._kept: dict[str, T] = {getattr(r, "id"): r for r in self.where()}
        self._ordered: list[T] | None = list(self._kept.values())  # by created_at; None: sort again

    def _values(self, record: T) -> list[Any]:
        values = {c: getattr(record, c) for c in self.columns}
        for name in self.json_fields:
            values[name] = json.dumps(values[name])
        for name, codec in self.codecs.items():
            values[name] = json.dumps(codec.encode(values[name]))
        return [values[c] for c in self.columns]

    def _record(self, row: Any) -> T:
        values = {c: row[c] for c in self.columns}
        for name in self.json_fields:
            values[name] = json.loads(values[name])
        for name, codec in self.codecs.items():
            values[name] = codec.decode(json.loads(values[name]))
        for name in self.bools:
            values[name] = bool(values[name])
        return self.record_type(**values)

    def insert(self, tx: Transaction, record: T) -> None:
        tx.execute(f"INSERT INTO {self.table}({', '.join(self.columns)}) VALUES({', '.join('?' * len(self.columns))})",
                   self._values(record))
        tx.after_commit(self._keeper(_copy(record)))

    def update(self, tx: Transaction, record: T) -> None:
        """Write every field of the record with this id."""
        values = dict(zip(self.columns, self._values(record)))
        others = [c for c in self.columns if c != "id"]
        cursor = tx.execute(f"UPDATE {self.table} SET {', '.join(f'{c}=?' for c in others)} WHERE id=?",
                            [values[c] for c in others] + [values["id"]])
        if cursor.rowcount:  # (an update of a row that is gone changes nothing, here too)
            tx.after_commit(self._keeper(_copy(record)))

    def delete(self, tx: Transaction, record_id: str) -> None:
        tx.execute(f"DELETE FROM {self.table} WHERE id=?", (record_id,))
        tx.after_commit(lambda: self._forget(record_id))

    def _keeper(self, record: T) -> Callable[[], None]:
        def keep() -> None:
            with self._lock:
                self._kept[getattr(record, "id")] = record
                self._ordered = None
        return keep

    def _forget(self, record_id: str) -> None:
        with self._lock:
            if self._kept.pop(record_id, None) is not None:
                self._ordered = None

    def get(self, record_id: str) -> T | None:
        """The record with this id (from memory)."""
        with self._lock:
            record = self._kept.get(record_id)
        return None if record is None else _copy(record)

    def records(self) -> list[T]:
        """Every record, oldest first (as ORDER BY created_at), from memory."""
        with self._lock:
            if self._ordered is None:
                self._ordered = sorted(self._kept.values(), key=lambda r: getattr(r, "created_at"))
            ordered = self._ordered
        return [_copy(r) for r in ordered]

    def with_prefix(self, prefix: str) -> list[T]:
        """Records whose id starts with `prefix` (people and crictl use short ids)."""
        return self.where("id >= ? AND id < ?", (prefix, prefix + "\uffff"))

    def where(self, condition: str = "1", params: tuple[Any, ...] = ()) -> list[T]:
        """The records that match an SQL condition, read and decoded from the database."""
        rows = self.db.query(f"SELECT * FROM {self.table} WHERE {condition} ORDER BY created_at", params)
        return [self._record(r) for r in rows]

    def one(self, condition: str, params: tuple[Any, ...]) -> T | None:
        found = self.where(condition, params)
        return found[0] if found else None


def _copy(record: T) -> T:
    """A shallow copy of a dataclass record (copy.copy's cost without its protocol)."""
    if not hasattr(record, "__dict__"):  # a slotted record
        return copy.copy(record)
    new = object.__new__(type(record))
    new.__dict__ = record.__dict__.copy()
    return new


def json_member(column: str, key: str, default: str) -> str:
    """SQL for the value of `key` in a JSON object column, `default` (SQL) when it is missing or
    null: schema steps that move a JSON column's members into columns of their own use it."""
    return f"COALESCE(json_extract({column}, '$.{key}'), {default})"
