"""A table of dataclass records: one column per field, JSON for the fields named as such.

A JSON field is kept as plain JSON (`json_fields`) or, for a typed field, through a `Codec`
that turns its value into JSON values and back (`codecs`). A `bool` field is an INTEGER column
read back as a bool.
"""
from __future__ import annotations

import json
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

    def update(self, tx: Transaction, record: T) -> None:
        """Write every field of the record with this id."""
        values = dict(zip(self.columns, self._values(record)))
        others = [c for c in self.columns if c != "id"]
        tx.execute(f"UPDATE {self.table} SET {', '.join(f'{c}=?' for c in others)} WHERE id=?",
                   [values[c] for c in others] + [values["id"]])

    def delete(self, tx: Transaction, record_id: str) -> None:
        tx.execute(f"DELETE FROM {self.table} WHERE id=?", (record_id,))

    def get(self, record_id: str) -> T | None:
        row = self.db.query_one(f"SELECT * FROM {self.table} WHERE id=?", (record_id,))
        return self._record(row) if row else None

    def with_prefix(self, prefix: str) -> list[T]:
        """Records whose id starts with `prefix` (people and crictl use short ids)."""
        return self.where("id >= ? AND id < ?", (prefix, prefix + "\uffff"))

    def where(self, condition: str = "1", params: tuple[Any, ...] = ()) -> list[T]:
        rows = self.db.query(f"SELECT * FROM {self.table} WHERE {condition} ORDER BY created_at", params)
        return [self._record(r) for r in rows]

    def one(self, condition: str, params: tuple[Any, ...]) -> T | None:
        found = self.where(condition, params)
        return found[0] if found else None


def json_member(column: str, key: str, default: str) -> str:
    """SQL for the value of `key` in a JSON object column, `default` (SQL) when it is missing or
    null: schema steps that move a JSON column's members into columns of their own use it."""
    return f"COALESCE(json_extract({column}, '$.{key}'), {default})"
