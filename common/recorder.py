"""Recorder: the part every fake of an outside-world interface shares (containers/fake.py,
sandbox/fake.py): the calls it was given, in order, and the failures a test asks of it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Recorder:
    calls: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    # name of a call -> the exception it raises (before it changes anything)
    failures: dict[str, BaseException] = field(default_factory=dict)

    def _record(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))
        if name in self.failures:
            raise self.failures[name]

    def called(self, name: str) -> list[tuple[Any, ...]]:
        """The arguments of each call to `name`, in order."""
        return [args for call, args in self.calls if call == name]
