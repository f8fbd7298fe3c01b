"""Record: equality and repr from __slots__, the light half of a dataclass (no dataclasses
import, which pycri-runtime cannot afford on every create)."""
from __future__ import annotations


class Record:
    """Equality and repr from __slots__ (the light half of a dataclass)."""

    __slots__: tuple[str, ...] = ()

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self.__slots__)

    __hash__ = None  # type: ignore[assignment]  # mutable, like a dataclass with eq

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__ if name != "raw")
        return f"{type(self).__name__}({fields})"
