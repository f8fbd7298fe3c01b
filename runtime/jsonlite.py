"""JSON for the CLI's fast paths, without the `json` package.

`json` imports `re` (and through it `enum`), which costs more than the rest of `state`
together. The C accelerator behind `json` (`_json`: the scanner and the string encoder)
needs neither; this module drives it directly, and falls back to `json` where the
accelerator is missing. Output matches json.dumps (ensure_ascii, same separators).
"""
from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_make_scanner: Any
try:
    from _json import encode_basestring_ascii as _encode_string
    from _json import make_scanner as _c_make_scanner

    _make_scanner = _c_make_scanner
except ImportError:  # pragma: no cover - CPython always has it
    _make_scanner = None


class _ScannerContext:
    """The attributes _json.make_scanner reads from a JSONDecoder."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo: dict[str, str] = {}

    @staticmethod
    def parse_constant(name: str) -> float:
        return {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}[name]


_WHITESPACE = " \t\n\r"


def loads(text: str | bytes) -> object:
    if isinstance(text, bytes):
        text = text.decode()
    if _make_scanner is None:  # pragma: no cover
        import json

        return json.loads(text)
    scan = _make_scanner(_ScannerContext())
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        value, end = scan(text, start)
    except StopIteration as e:
        raise ValueError(f"invalid JSON at offset {e.value}") from None
    if text[end:].strip(_WHITESPACE):
        raise ValueError(f"extra data after JSON at offset {end}")
    return value


def dumps(value: object, indent: int | None = None) -> str:
    parts: list[str] = []
    _encode(value, parts, indent, 0)
    return "".join(parts)


def _encode(value: object, out: list[str], indent: int | None, level: int) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(_encode_string(value))
    elif isinstance(value, int):
        out.append(int.__repr__(value))
    elif isinstance(value, float):
        out.append(float.__repr__(value))
    elif isinstance(value, dict):
        if not value:
            out.append("{}")
            return
        items = list(value.items())
        out.append("{")
        for i, (key, item) in enumerate(items):
            out.append(_separator(i, indent, level + 1))
            out.append(_encode_string(str(key)))
            out.append(": ")
            _encode(item, out, indent, level + 1)
        out.append(_closing(indent, level) + "}")
    elif isinstance(value, (list, tuple)):
        if not value:
            out.append("[]")
            return
        out.append("[")
        for i, item in enumerate(value):
            out.append(_separator(i, indent, level + 1))
            _encode(item, out, indent, level + 1)
        out.append(_closing(indent, level) + "]")
    else:
        raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _separator(index: int, indent: int | None, level: int) -> str:
    if indent is None:
        return ", " if index else ""
    return ("," if index else "") + "\n" + " " * (indent * level)


def _closing(indent: int | None, level: int) -> str:
    return "" if indent is None else "\n" + " " * (indent * level)
