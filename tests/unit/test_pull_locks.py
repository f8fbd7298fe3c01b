"""KeyedLocks: one lock per key; holding several keys takes each once, in one order."""
from __future__ import annotations

import threading

from images.pull import KeyedLocks


def test_hold_all_takes_a_repeated_key_once() -> None:
    """An uncompressed layer's blob digest is its diff_id: the pull held the same key twice and
    hung forever (PullImage ran into its deadline, and every later pull of the image too)."""
    locks = KeyedLocks()
    done = threading.Event()

    def pull() -> None:
        with locks.hold_all("sha256:a", "sha256:a"):
            done.set()

    worker = threading.Thread(target=pull, daemon=True)
    worker.start()
    worker.join(60)
    assert done.is_set()
    assert locks._locks == {}


def test_hold_all_orders_keys_so_two_holders_never_wait_for_each_other() -> None:
    locks = KeyedLocks()
    with locks.hold_all("b", "a"):
        assert set(locks._locks) == {"a", "b"}
        assert list(locks._locks) == ["a", "b"]  # taken in sorted order
    assert locks._locks == {}
