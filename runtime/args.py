"""runc-style command-line parsing: `-flag`, `--flag`, `--flag=value`, `--flag value`.

Flags come before positional arguments; the first positional (or `--`) ends them, so
`exec ID sh -c x` passes `-c` to the command. Parsing with our own small table, not
argparse, keeps the CLI's start-up short.
"""
from __future__ import annotations

from pycri.runtime.errors import RuntimeFailure

# flag kinds
BOOL, STRING, INT, LIST = "bool", "string", "int", "list"


class UsageError(RuntimeFailure):
    pass


class FlagSpec:
    """The flags of one command: canonical name -> kind, and alias -> canonical name."""

    def __init__(self, *flags: tuple[str, str]) -> None:
        self.kinds: dict[str, str] = {}
        self.aliases: dict[str, str] = {}
        for names, kind in flags:
            parts = names.split("|")
            for alias in parts:
                self.aliases[alias] = parts[0]
            self.kinds[parts[0]] = kind

    def defaults(self) -> dict[str, object]:
        values: dict[str, object] = {}
        for name, kind in self.kinds.items():
            values[name] = False if kind == BOOL else ([] if kind == LIST else None)
        return values


class Flags:
    """Parsed flag values with typed accessors (unset: "", False, 0, [])."""

    def __init__(self, values: dict[str, object]) -> None:
        self.values = values

    def __eq__(self, other: object) -> bool:
        return self.values == (other.values if isinstance(other, Flags) else other)

    def __repr__(self) -> str:
        return f"Flags({self.values!r})"

    def string(self, name: str, default: str = "") -> str:
        value = self.values.get(name)
        return default if value is None or value == "" else str(value)

    def flag(self, name: str) -> bool:
        return bool(self.values.get(name))

    def integer(self, name: str, default: int = 0) -> int:
        value = self.values.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) else default

    def strings(self, name: str) -> list[str]:
        value = self.values.get(name)
        return [str(v) for v in value] if isinstance(value, list) else []

    def is_set(self, name: str) -> bool:
        return self.values.get(name) not in (None, False, [], "")


def parse(spec: FlagSpec, argv: list[str], *, stop_at_positional: bool = True) -> tuple[Flags, list[str]]:
    """Returns the flag values and the remaining positional arguments."""
    values = spec.defaults()
    positional: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "--":
            positional.extend(argv[i + 1:])
            break
        if not token.startswith("-") or token == "-":
            if stop_at_positional:
                positional.extend(argv[i:])
                break
            positional.append(token)
            i += 1
            continue
        name, has_value, inline = token.lstrip("-").partition("=")
        canonical = spec.aliases.get(name)
        if canonical is None:
            raise UsageError(f"flag provided but not defined: -{name}")
        kind = spec.kinds[canonical]
        if kind == BOOL:
            if has_value:
                if inline.lower() not in ("true", "false", "1", "0"):
                    raise UsageError(f"invalid boolean value {inline!r} for -{name}")
                values[canonical] = inline.lower() in ("true", "1")
            else:
                values[canonical] = True
            i += 1
            continue
        if has_value:
            raw = inline
            i += 1
        else:
            if i + 1 >= len(argv):
                raise UsageError(f"flag needs an argument: -{name}")
            raw = argv[i + 1]
            i += 2
        if kind == INT:
            try:
                values[canonical] = int(raw)
            except ValueError:
                raise UsageError(f"invalid value {raw!r} for flag -{name}: not an integer") from None
        elif kind == LIST:
            current = values[canonical]
            values[canonical] = (current if isinstance(current, list) else []) + [raw]
        else:
            values[canonical] = raw
    return Flags(values), positional
