"""The containers table: typed records, and rows of the old `extra` schema read after the migration."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pycri.containers.oci_config import User
from pycri.containers.records import CREATED, EXITED, RUNNING, ContainerMount, ContainerRecord, ContainerTable
from pycri.store.db import Database

# step 1 of the containers schema, as pycri wrote it before the typed columns
OLD_SCHEMA = """
    CREATE TABLE containers (
        id TEXT PRIMARY KEY,
        pod_id TEXT NOT NULL,
        name TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        state TEXT NOT NULL,               -- creating, created, running, exited
        handler TEXT NOT NULL,
        image TEXT NOT NULL,               -- the image as the client named it
        image_id TEXT NOT NULL,
        image_ref TEXT NOT NULL,           -- the image's repo digest, or its id
        log_path TEXT NOT NULL,
        pid INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL,
        started_at INTEGER NOT NULL DEFAULT 0,
        finished_at INTEGER NOT NULL DEFAULT 0,
        exit_code INTEGER NOT NULL DEFAULT 0,
        reason TEXT NOT NULL DEFAULT '',
        message TEXT NOT NULL DEFAULT '',
        extra TEXT NOT NULL DEFAULT '{}',  -- JSON: labels, annotations, mounts, tty, stdin, diff_ids...
        UNIQUE (pod_id, name, attempt)
    );
    CREATE INDEX containers_pod ON containers(pod_id)
    """

IMAGE_ID = "sha256:" + "b" * 64
VOLUME_ID = "sha256:" + "c" * 64

# the extra of a running container with a host path and an image volume, as PodCalls and
# ContainerService.create wrote it (with the keys in their order)
OLD_EXTRA = {
    "labels": {"io.kubernetes.container.name": "web"}, "annotations": {"note": "a;b"},
    "mounts": [
        {"container_path": "/data", "host_path": "/srv/data", "readonly": False, "recursive_read_only": False,
         "propagation": 1},
        {"container_path": "/models", "host_path": "", "readonly": True, "recursive_read_only": True,
         "propagation": 0, "image": {"image": VOLUME_ID, "user_specified_image": "models:v1"},
         "image_sub_path": "weights"},
    ],
    "stdin": True, "stdin_once": True, "tty": True, "stop_signal": "SIGQUIT",
    "user": {"uid": 1000, "gid": 1000, "additionalGids": [1000, 1234]},
    "image_volumes": [VOLUME_ID],
}

# columns before extra, in the old DDL's order
_OLD_COLUMNS = ("id, pod_id, name, attempt, state, handler, image, image_id, image_ref, log_path, pid, created_at, "
                "started_at, finished_at, exit_code, reason, message, extra")


def old_row(cid: str, name: str, state: str, created_at: int, extra: dict, **values: object) -> tuple:
    row = dict(id=cid, pod_id="p1", name=name, attempt=0, state=state, handler="runc", image="busybox",
               image_id=IMAGE_ID, image_ref="docker.io/library/busybox@sha256:" + "d" * 64,
               log_path=f"/var/log/pods/p1/{name}/0.log", pid=0, created_at=created_at, started_at=0,
               finished_at=0, exit_code=0, reason="", message="", extra=json.dumps(extra))
    row.update(values)
    return tuple(row.values())


def old_database(path: Path) -> Database:
    """A database as pycri left it before the typed columns: step 1 applied, rows with extra."""
    db = Database(path)
    db.migrate("containers", [OLD_SCHEMA])
    rows = [
        old_row("c1", "web", RUNNING, 100, OLD_EXTRA, pid=4242, started_at=110),
        # an older pycri's row: no recursive_read_only in mounts, no user, no image_volumes;
        # the image's StopSignal was a number
        old_row("c2", "old", EXITED, 200, {
            "labels": {"a": "b"}, "annotations": {},
            "mounts": [{"container_path": "/etc/x", "host_path": "/x", "readonly": True, "propagation": 2}],
            "stdin": False, "stdin_once": False, "tty": False, "stop_signal": 15,
        }, started_at=210, finished_at=220, exit_code=137, reason="OOMKilled", message="out of memory"),
        # a crash left it half-made, from a create without an image StopSignal
        old_row("c3", "half", "creating", 300, {
            "labels": {}, "annotations": {}, "mounts": [], "stdin": False, "stdin_once": False, "tty": False,
            "stop_signal": "", "user": {"uid": 0, "gid": 0, "additionalGids": []}, "image_volumes": [],
        }),
        # the least an old row could hold
        old_row("c4", "bare", CREATED, 400, {}),
    ]
    with db.transaction() as tx:
        for row in rows:
            tx.execute(f"INSERT INTO containers({_OLD_COLUMNS}) VALUES({', '.join('?' * len(row))})", row)
    return db


def test_old_rows_are_read_as_typed_records(tmp_path: Path) -> None:
    old_database(tmp_path / "db.sqlite").close()
    table = ContainerTable(Database(tmp_path / "db.sqlite"))
    web = table.get("c1")
    assert web == ContainerRecord(
        id="c1", pod_id="p1", name="web", attempt=0, state=RUNNING, handler="runc", image="busybox",
        image_id=IMAGE_ID, image_ref="docker.io/library/busybox@sha256:" + "d" * 64,
        log_path="/var/log/pods/p1/web/0.log", created_at=100, pid=4242, started_at=110,
        labels={"io.kubernetes.container.name": "web"}, annotations={"note": "a;b"},
        mounts=[ContainerMount("/data", "/srv/data", False, 1),
                ContainerMount("/models", "", True, 0, recursive_read_only=True, image_id=VOLUME_ID,
                               user_specified_image="models:v1", image_sub_path="weights")],
        stdin=True, stdin_once=True, tty=True, stop_signal="SIGQUIT", user=User(1000, 1000, [1000, 1234]),
        image_volumes=[VOLUME_ID],
    )
    # what the old reads of extra gave, the typed fields give back in the same shapes
    assert web is not None and [m.to_dict() for m in web.mounts] == OLD_EXTRA["mounts"]
    assert web.user is not None and web.user.to_dict() == OLD_EXTRA["user"]
    assert (web.stdin, web.stdin_once, web.tty) == (True, True, True)

    old = table.get("c2")
    assert old is not None
    assert (old.state, old.finished_at, old.exit_code, old.reason, old.message) == \
        (EXITED, 220, 137, "OOMKilled", "out of memory")
    assert old.mounts == [ContainerMount("/etc/x", "/x", True, 2)] and old.labels == {"a": "b"}
    assert old.user is None and old.image_volumes == [] and old.stop_signal == "15"
    assert (old.stdin, old.stdin_once, old.tty) == (False, False, False)

    half = table.get("c3")
    assert half is not None and half.state == "creating" and half.stop_signal == ""
    assert half.user == User(0, 0, []) and half.mounts == [] and half.image_volumes == []

    bare = table.get("c4")
    assert bare == ContainerRecord(
        id="c4", pod_id="p1", name="bare", attempt=0, state=CREATED, handler="runc", image="busybox",
        image_id=IMAGE_ID, image_ref="docker.io/library/busybox@sha256:" + "d" * 64,
        log_path="/var/log/pods/p1/bare/0.log", created_at=400)
    assert [r.id for r in table.all()] == ["c1", "c2", "c3", "c4"]
    assert [r.id for r in table.all("p1")] == ["c1", "c2", "c3", "c4"] and table.all("p2") == []


@pytest.mark.parametrize("value,expected", [
    ("SIGTERM", "SIGTERM"), ("", ""), (None, ""), (False, ""), (0, ""), (15, "15"), ("0", "0"), (True, "True"),
    ({}, ""), ([], ""),
])
def test_an_old_stop_signal_becomes_the_text_the_old_read_gave(tmp_path: Path, value: object, expected: str) -> None:
    db = Database(tmp_path / "db.sqlite")
    db.migrate("containers", [OLD_SCHEMA])
    with db.transaction() as tx:
        row = old_row("c1", "web", RUNNING, 100, {"stop_signal": value})
        tx.execute(f"INSERT INTO containers({_OLD_COLUMNS}) VALUES({', '.join('?' * len(row))})", row)
    record = ContainerTable(db).get("c1")
    assert record is not None and record.stop_signal == expected == str(value or "")


def test_migration_keeps_the_unique_key_and_the_pod_index_and_drops_extra(tmp_path: Path) -> None:
    old_database(tmp_path / "db.sqlite").close()
    db = Database(tmp_path / "db.sqlite")
    table = ContainerTable(db)
    columns = [r["name"] for r in db.query("PRAGMA table_info(containers)")]
    assert "extra" not in columns and columns == list(table.columns)
    assert [r["name"] for r in db.query("PRAGMA index_list(containers)") if r["origin"] == "c"] == ["containers_pod"]
    assert table.by_name("p1", "web", 0) is not None
    duplicate = ContainerRecord(id="c9", pod_id="p1", name="web", attempt=0, state=CREATED, handler="runc",
                                image="busybox", image_id=IMAGE_ID, image_ref=IMAGE_ID, log_path="", created_at=900)
    with pytest.raises(Exception, match="UNIQUE"):  # sqlite3.IntegrityError
        with db.transaction() as tx:
            table.insert(tx, duplicate)
    before = table.all()
    db.close()
    again = ContainerTable(Database(tmp_path / "db.sqlite"))  # the migration is applied once
    assert again.all() == before


def test_typed_record_round_trip(tmp_path: Path) -> None:
    db = Database(tmp_path / "db.sqlite")
    table = ContainerTable(db)
    record = ContainerRecord(id="abc", pod_id="p", name="c", attempt=1, state="creating", handler="crun",
                             image="img", image_id=IMAGE_ID, image_ref=IMAGE_ID, log_path="/l", created_at=5,
                             labels={"l": "1"}, tty=True, stop_signal="SIGRTMIN+3", image_volumes=[VOLUME_ID],
                             mounts=[ContainerMount("/v", "", True, 0, image_id=VOLUME_ID, image_sub_path="s")])
    with db.transaction() as tx:
        table.insert(tx, record)
    assert table.get("abc") == record
    record.state, record.pid = RUNNING, 77
    record.user = User(5, 6, [7])
    record.annotations = {"a": "b"}
    with db.transaction() as tx:
        table.update(tx, record)
    again = table.get("abc")
    assert again == record
    assert again is not None and again.tty is True and again.stdin is False
    assert table.with_prefix("ab") == [record]
