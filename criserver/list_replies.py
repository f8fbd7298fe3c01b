"""ListContainers and ListPodSandbox replies built from each item's encoding, kept between calls.

An item of those lists (a `Container`, a `PodSandbox`) changes only with its state: everything
else in it is fixed at create. So each item's encoding (as an entry of the reply's repeated
field 1) is kept under (id, state), and a reply is the entries of the items listed, joined,
instead of a message built in Python per item per call. An entry whose state has
changed is built again; an item's entry is dropped when it is deleted (`forget`, on its deleted
event), and, should one be missed, entries of items not listed are dropped once there are many
more of them than items listed.

A reply is an `Encoded`: its bytes, which gRPC sends as they are (criserver.errors passes them
through the method's serializer), so a reply of 110 kubelet containers (~100 KB) is neither
parsed nor serialized again on each call; whoever reads it in the process (the Stream* calls,
tests) gets the message, parsed once on first use.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

R = TypeVar("R", bound=Message)
_UNPARSED: Any = object()
REPEATED_FIELD_1 = b"\x0a"  # field 1, length-delimited: `containers` and `items` of the two replies
SLACK = 4096  # entries kept beyond twice the listed ones before the unlisted are dropped


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def entry(item: Message) -> bytes:
    """`item` as an entry of a reply's repeated field 1."""
    data = item.SerializeToString()
    return REPEATED_FIELD_1 + varint(len(data)) + data


class Encoded(Generic[R]):
    """A reply message kept as its encoding (`data`); read as the message itself (attributes,
    ==), which is parsed once, on first use."""

    __slots__ = ("data", "reply_type", "_message")

    def __init__(self, reply_type: type[R], data: bytes) -> None:
        self.data = data
        self.reply_type = reply_type
        self._message: R = _UNPARSED

    @property
    def message(self) -> R:
        if self._message is _UNPARSED:
            self._message = self.reply_type.FromString(self.data)
        return self._message

    def SerializeToString(self) -> bytes:
        return self.data

    def __getattr__(self, name: str) -> Any:  # (only for what the slots above do not hold)
        return getattr(self.message, name)

    def __eq__(self, other: object) -> bool:
        return self.message == (other.message if isinstance(other, Encoded) else other)

    __hash__ = None  # type: ignore[assignment]  # (as a message's)

    def __repr__(self) -> str:
        return f"Encoded({self.reply_type.__name__}, {len(self.data)} bytes)"


def passing_encoded(serializer: Callable[[Any], bytes] | None) -> Callable[[Any], bytes] | None:
    """A method's response serializer that sends an `Encoded` reply's bytes as they are."""
    if serializer is None:
        return None

    def serialize(response: Any) -> bytes:
        return response.data if type(response) is Encoded else serializer(response)
    return serialize


class ListReplies(Generic[R]):
    """The replies of one List call, from entries kept per (id, state)."""

    def __init__(self, reply_type: type[R]) -> None:
        self.reply_type = reply_type
        self._entries: dict[str, tuple[str, bytes]] = {}  # id -> (state, entry)
        self._lock = threading.Lock()

    def reply(self, items: Iterable[tuple[str, str, Callable[[], Message]]]) -> Encoded[R]:
        """The reply listing `items`, in order: (id, state, a builder of the item's message)."""
        parts = [self.entry_of(item_id, state, build) for item_id, state, build in items]
        if len(self._entries) > 2 * len(parts) + SLACK:
            self._drop_unlisted(set(parts))
        return Encoded(self.reply_type, b"".join(parts))

    def entry_of(self, item_id: str, state: str, build: Callable[[], Message]) -> bytes:
        """The kept entry of one item in `state` (built and kept if there is none for it)."""
        kept = self._entries.get(item_id)
        if kept is None or kept[0] != state:
            kept = (state, entry(build()))
            with self._lock:
                self._entries[item_id] = kept
        return kept[1]

    def forget(self, item_id: str) -> None:
        """Drop the entry of an item that is gone."""
        with self._lock:
            self._entries.pop(item_id, None)

    def _drop_unlisted(self, listed: set[bytes]) -> None:
        with self._lock:
            self._entries = {k: v for k, v in self._entries.items() if v[1] in listed}


class KeptReplies(Generic[R]):
    """Replies of a per-item call (ContainerStatus) kept as their encoding while what they show
    stays the same: `reply(item_id, version, build)` gives the kept one if `version` equals the
    one it was built for, else builds it again. A version holds the objects it came from (a
    tuple of values, and objects compared by identity with `is`), so no object a kept reply was
    built from can be freed and another take its place. `forget` drops an item's on its
    deleted event."""

    def __init__(self, reply_type: type[R]) -> None:
        self.reply_type = reply_type
        self._kept: dict[str, tuple[tuple[Any, ...], tuple[Any, ...], Encoded[R]]] = {}
        self._lock = threading.Lock()

    def reply(self, item_id: str, values: tuple[Any, ...], objects: tuple[Any, ...],
              build: Callable[[], R]) -> Encoded[R]:
        """The reply for `item_id` whose content depends on `values` (compared with ==) and
        `objects` (compared with `is`)."""
        kept = self._kept.get(item_id)
        if kept is not None and kept[0] == values and all(a is b for a, b in zip(kept[1], objects)):
            return kept[2]
        encoded = Encoded(self.reply_type, build().SerializeToString())
        with self._lock:
            self._kept[item_id] = (values, objects, encoded)
        return encoded

    def forget(self, item_id: str) -> None:
        with self._lock:
            self._kept.pop(item_id, None)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._kept
