"""The KEP-5825 Stream* list calls (StreamPodSandboxes, StreamContainers, ...): the reply of
their List counterpart, cut into messages of at least one item each, none larger than
MAX_BYTES nor holding more than MAX_ITEMS, sent in order and then EOF. An empty result sends
no message: the proto asks for lists of at least one item, and the client collects until EOF.
A domain error ends the stream with the status code the List call would have answered (the
call interceptor maps it, as for unary calls)."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from google.protobuf.message import Message


MAX_ITEMS = 1000  # items per message
MAX_BYTES = 4 * 1024 * 1024  # per message, well under gRPC's 16 MiB default
_FRAMING = 6  # a repeated field's tag and length prefix, at most, per item

R = TypeVar("R", bound=Message)


def chunks(items: Iterable[Message], max_items: int = MAX_ITEMS, max_bytes: int = MAX_BYTES) -> Iterator[list[Message]]:
    """`items` in order, in lists of 1..max_items whose encoded size stays under max_bytes
    (an item larger than that alone goes in a list of its own)."""
    batch: list[Message] = []
    size = 0
    for item in items:
        item_size = item.ByteSize() + _FRAMING
        if batch and (len(batch) >= max_items or size + item_size > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += item_size
    if batch:
        yield batch


def stream(context: Any, listed: Callable[[], Sequence[Message]], reply: Callable[[list[Message]], R],
           max_items: int = MAX_ITEMS, max_bytes: int = MAX_BYTES) -> Iterator[R]:
    """The messages of a Stream* call whose items `listed` returns (the List call's)."""
    for batch in chunks(listed(), max_items, max_bytes):
        yield reply(batch)
