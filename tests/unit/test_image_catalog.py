"""The image catalog (images/records.py): ListImages and ImageStatus read decoded records kept
in memory, loaded in a fixed number of queries and dropped by every write; the database stays
the source of truth, and a config that does not decode breaks no List."""
from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from pycri.api.cri import api_pb2 as cri
from pycri.criserver.image_servicer import ImageServicer
from pycri.images.config import RegistryConfig
from pycri.images.records import ImageRecord, ImageTable
from pycri.images.service import ImageService
from pycri.store.db import Database


class CountingDatabase(Database):
    """The real database, counting the reads (query, query_one) it answers."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.reads = 0

    def query(self, sql: str, params: Sequence[Any] = ()) -> Any:
        self.reads += 1
        return super().query(sql, params)

    def query_one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        self.reads += 1
        return super().query_one(sql, params)


def image_id(n: int) -> str:
    return "sha256:" + f"{n:064x}"


def record(n: int, *tags: str) -> ImageRecord:
    return ImageRecord(id=image_id(n), manifest_digest="sha256:" + "e" * 64, size=100 + n,
                       config={"config": {"User": "1000", "Cmd": ["sh"]}}, pulled_at=n,
                       repo_tags=list(tags) or [f"docker.io/library/img{n}:latest"],
                       repo_digests=[f"docker.io/library/img{n}@sha256:" + f"{n:064x}"],
                       diff_ids=["sha256:" + "a" * 64, "sha256:" + f"{n:064x}"])


def add(table: ImageTable, *records: ImageRecord) -> None:
    with table.transaction() as tx:
        for r in records:
            table.add(tx, r, {d: (1, 1) for d in r.diff_ids}, [r.id])


@pytest.fixture
def db(tmp_path: Path) -> CountingDatabase:
    return CountingDatabase(tmp_path / "db.sqlite")


@pytest.fixture
def service(db: CountingDatabase, tmp_path: Path) -> ImageService:
    return ImageService(db, tmp_path / "images", RegistryConfig())


def test_list_and_status_run_no_query_once_loaded(db: CountingDatabase, service: ImageService) -> None:
    before = db.reads
    add(service.table, *(record(n) for n in range(50)))  # loaded again as the transaction ends
    assert db.reads - before == 5  # whatever the number of images: 4, and 1 for the new configs
    before = db.reads
    service.tag("img3", "docker.io/library/img3:v2")
    assert db.reads - before == 4  # no new image: no config fetched, none decoded
    servicer = ImageServicer(service)
    before = db.reads
    for _ in range(3):
        assert len(servicer.ListImages(cri.ListImagesRequest(), None).images) == 50
        for name in ("img7", "docker.io/library/img7:latest", image_id(7), image_id(7)[7:],
                     "docker.io/library/img7@sha256:" + f"{7:064x}"):
            status = servicer.ImageStatus(cri.ImageStatusRequest(image=cri.ImageSpec(image=name)), None)
            assert status.image.id == image_id(7), name
        assert not servicer.ImageStatus(cri.ImageStatusRequest(image=cri.ImageSpec(image="absent:1")), None) \
            .HasField("image")
    assert db.reads == before


def test_every_write_is_seen(service: ImageService) -> None:
    add(service.table, record(1), record(2))
    assert [r.repo_tags for r in service.list()] == [["docker.io/library/img1:latest"],
                                                      ["docker.io/library/img2:latest"]]
    service.tag("img1", "docker.io/library/img2:latest")  # the tag moves from image 2 to image 1
    assert [r.repo_tags for r in service.list()] == [
        ["docker.io/library/img1:latest", "docker.io/library/img2:latest"], []]
    assert service.resolve("img2").id == image_id(1)
    add(service.table, record(3, "docker.io/library/img1:latest"))  # and on to image 3
    assert service.resolve("img1").id == image_id(3)
    assert service.get(image_id(1)).repo_tags == ["docker.io/library/img2:latest"]
    service.remove("img2")
    assert [r.id for r in service.list()] == [image_id(2), image_id(3)]
    assert service.resolve(image_id(1)) is None and service.resolve("img2") is None


def test_a_rolled_back_write_leaves_what_the_database_holds(service: ImageService) -> None:
    table = service.table
    add(table, record(1))
    with pytest.raises(RuntimeError), table.transaction() as tx:
        table.add_tag(tx, "docker.io/library/other:1", image_id(1))
        table.delete(tx, image_id(1))
        assert table.all() == []  # the transaction's own view, not kept
        raise RuntimeError("rolled back")
    assert [r.repo_tags for r in table.all()] == [["docker.io/library/img1:latest"]]
    assert table.id_by_tag("docker.io/library/other:1") is None


def test_a_write_outside_the_tables_transaction_is_seen_too(db: CountingDatabase, service: ImageService) -> None:
    assert service.list() == []
    with db.transaction() as tx:
        service.table.add(tx, record(1), {d: (1, 1) for d in record(1).diff_ids}, [])
    assert [r.id for r in service.list()] == [image_id(1)]


def test_callers_get_records_of_their_own(service: ImageService) -> None:
    add(service.table, record(1))
    listed = service.list()
    listed[0].repo_tags.append("docker.io/library/mangled:1")
    listed[0].diff_ids.clear()
    again = service.get("img1")
    assert again.repo_tags == ["docker.io/library/img1:latest"] and len(again.diff_ids) == 2


@pytest.mark.parametrize("stored", ["{not json", "[" * 100_000 + "]" * 100_000, ""])
def test_a_config_that_does_not_decode_breaks_no_list(db: CountingDatabase, service: ImageService, stored: str) -> None:
    add(service.table, record(1), record(3))
    with service.table.transaction() as tx:
        tx.execute("INSERT INTO images(id, manifest_digest, size, config, pulled_at) VALUES(?,?,?,?,?)",
                   (image_id(2), "sha256:" + "e" * 64, 5, stored, 2))
        tx.execute("INSERT INTO image_tags(name, image_id) VALUES(?,?)", ("docker.io/library/bad:1", image_id(2)))
    servicer = ImageServicer(service)
    listed = servicer.ListImages(cri.ListImagesRequest(), None).images
    assert [i.id for i in listed] == [image_id(1), image_id(2), image_id(3)]
    assert listed[1].repo_tags == ["docker.io/library/bad:1"] and not listed[1].HasField("uid")
    assert listed[0].uid.value == 1000
    status = servicer.ImageStatus(cri.ImageStatusRequest(image=cri.ImageSpec(image="bad:1"), verbose=True), None)
    assert status.image.id == image_id(2)
    service.remove("bad:1")  # and it can go
    assert [r.id for r in service.list()] == [image_id(1), image_id(3)]


def test_readers_racing_writers_end_with_what_the_database_holds(db: CountingDatabase, service: ImageService) -> None:
    table = service.table
    done = threading.Event()
    errors: list[BaseException] = []

    def read() -> None:
        try:
            while not done.is_set():
                for r in table.all():
                    assert r.id.startswith("sha256:")
                table.id_by_tag("docker.io/library/img5:latest")
                time.sleep(0.0005)  # (a reader spinning flat out starves the writer of the database lock)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(2)]
    for t in readers:
        t.start()
    try:
        for n in range(30):
            add(table, record(n))
            if n % 3 == 0:
                service.tag(image_id(n), f"docker.io/library/moving:{n % 2}")
            if n % 4 == 0:
                service.remove(image_id(n))
    finally:
        done.set()
        for t in readers:
            t.join()
    assert errors == []
    fresh = ImageTable(db)  # what the database holds, loaded anew
    assert table.all() == fresh.all()
    assert table.id_by_tag("docker.io/library/moving:0") == fresh.id_by_tag("docker.io/library/moving:0")


def test_list_images_answers_its_reply_again_until_a_write(service: ImageService) -> None:
    add(service.table, record(1), record(2))
    servicer = ImageServicer(service)
    listed = servicer.ListImages(cri.ListImagesRequest(), None)
    assert servicer.ListImages(cri.ListImagesRequest(filter=cri.ImageFilter()), None) is listed
    by_name = cri.ImageFilter(image=cri.ImageSpec(image="img2"))
    filtered = servicer.ListImages(cri.ListImagesRequest(filter=by_name), None)
    assert [i.id for i in filtered.images] == [image_id(2)]
    service.tag("img2", "docker.io/library/img2:v2")
    again = servicer.ListImages(cri.ListImagesRequest(), None)
    assert again is not listed and list(again.images[1].repo_tags) == [
        "docker.io/library/img2:latest", "docker.io/library/img2:v2"]
    assert list(listed.images[1].repo_tags) == ["docker.io/library/img2:latest"]  # the old reply is untouched
    service.remove("img1")
    assert [i.id for i in servicer.ListImages(cri.ListImagesRequest(), None).images] == [image_id(2)]
