"""KeyedLocks: one lock per key; holding several keys takes each once, in one order."""
from __future__ import annotations

import threading
from pathlib import Path

from pycri.images.pull import KeyedLocks


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


class _EndlessZeros:
    """A blob download that never ends (until the pull aborts it)."""

    def __init__(self) -> None:
        self.reads = 0

    def read(self, n: int = -1) -> bytes:
        self.reads += 1
        return b"\0" * (n if 0 < n <= 65536 else 65536)

    def close(self) -> None:
        pass

    def __enter__(self) -> "_EndlessZeros":
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class _Repository:
    def __init__(self, blobs: dict[str, object]) -> None:
        self.blobs = blobs

    def open_blob(self, digest: str, size: int | None = None) -> object:
        return self.blobs[digest]


def test_a_failed_layer_stops_the_others_of_its_pull(tmp_path: Path) -> None:
    """Before, a pull whose first layer failed waited for every other layer to download."""
    import io

    from pycri.common.errors import DataLoss
    from pycri.images import manifest as mf
    from pycri.images.config import RegistryConfig
    from pycri.images.content import ContentStore
    from pycri.images.layers import LayerStore
    from pycri.images.pull import Puller

    puller = Puller(RegistryConfig(), ContentStore(tmp_path / "content"), LayerStore(tmp_path / "layers"))
    bad, endless = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    gzip_type = "application/vnd.oci.image.layer.v1.tar+gzip"
    plain_type = "application/vnd.oci.image.layer.v1.tar"
    stream = _EndlessZeros()
    repository = _Repository({bad: io.BytesIO(b"not gzip at all"), endless: stream})
    descs = [mf.Descriptor(plain_type, endless, 1 << 40), mf.Descriptor(gzip_type, bad, 15)]
    outcome: list[BaseException] = []

    def pull() -> None:
        try:
            puller._fetch_layers(repository, descs, ["sha256:" + "3" * 64, "sha256:" + "4" * 64])  # type: ignore[arg-type]
        except BaseException as exc:  # noqa: BLE001
            outcome.append(exc)

    worker = threading.Thread(target=pull, daemon=True)
    worker.start()
    worker.join(60)
    assert outcome and isinstance(outcome[0], DataLoss), outcome
    assert list((tmp_path / "content/ingest").iterdir()) == []
    assert list((tmp_path / "layers/.tmp").iterdir()) == []
