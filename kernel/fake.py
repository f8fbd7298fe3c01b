"""A recording fake of the Syscall protocol for unit tests: it records calls and changes nothing."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RecordingSyscall:
    calls: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    # name of a call -> the OSError it should raise
    failures: dict[str, OSError] = field(default_factory=dict)

    def _record(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))
        if name in self.failures:
            raise self.failures[name]

    def unshare(self, flags: int) -> None:
        self._record("unshare", flags)

    def setns(self, fd: int, nstype: int) -> None:
        self._record("setns", fd, nstype)

    def mount(self, source: str, target: str, fstype: str, flags: int, data: str = "") -> None:
        self._record("mount", source, target, fstype, flags, data)

    def umount(self, target: str, flags: int = 0) -> None:
        self._record("umount", target, flags)

    def pivot_root(self, new_root: str, put_old: str) -> None:
        self._record("pivot_root", new_root, put_old)

    def sethostname(self, name: str) -> None:
        self._record("sethostname", name)

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]
