"""The sandboxes table: typed records, and rows of the old `extra` schema read after the migration."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from pycri.sandbox.infra import Infra
from pycri.sandbox.namespaces import IdMapping, IdMaps
from pycri.sandbox.records import READY, PodNamespaces, PortMapping, SandboxRecord, SandboxTable
from pycri.store.db import Database

# step 1 of the sandboxes schema, as pycri wrote it before the typed columns
OLD_SCHEMA = """
    CREATE TABLE sandboxes (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        namespace TEXT NOT NULL,
        uid TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        state TEXT NOT NULL,                -- creating, ready, notready
        handler TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        ips TEXT NOT NULL DEFAULT '[]',     -- JSON list, first is the primary IP
        extra TEXT NOT NULL DEFAULT '{}',   -- JSON: labels, annotations, hostname, namespaces, ...
        UNIQUE (name, namespace, uid, attempt)
    )
    """

# the extra of a ready pod with its own user namespace and a shared PID namespace, as
# SandboxService.run wrote it (with the keys in its order)
OLD_EXTRA = {
    "labels": {"app": "web"}, "annotations": {"note": "a;b"}, "hostname": "web-0",
    "log_directory": "/var/log/pods/default_web-0_u1", "cgroup_parent": "/pycri/p1", "own_cgroup": True,
    "host_network": False, "host_ipc": False, "host_pid": False, "sysctls": {"net.ipv4.ip_forward": "1"},
    "namespaces": {"user": "/run/pycri/ns/p1/user", "network": "/run/pycri/ns/p1/net",
                   "ipc": "/run/pycri/ns/p1/ipc", "uts": "/run/pycri/ns/p1/uts"},
    "userns": {"uids": [{"container_id": 0, "host_id": 65536, "length": 65536}],
               "gids": [{"container_id": 0, "host_id": 131072, "length": 65536}]},
    "port_mappings": [{"protocol": "tcp", "container_port": 80, "host_port": 8080, "host_ip": ""}],
    "infra": {"pid": 4242, "start_time": 99, "holder": 0, "holder_start_time": 0},
    "files": {"/etc/hostname": "/var/lib/pycri/sandboxes/p1/hostname",
              "/etc/hosts": "/var/lib/pycri/sandboxes/p1/hosts"},
}


def old_database(path: Path) -> Database:
    """A database as pycri left it before the typed columns: step 1 applied, rows with extra."""
    db = Database(path)
    db.migrate("sandboxes", [OLD_SCHEMA])
    rows = [
        ("p1", "web-0", "default", "u1", 0, "ready", "runc", 100, json.dumps(["10.88.0.5", "fd00::5"]),
         json.dumps(OLD_EXTRA)),
        # a host-network pod
        ("p2", "host-0", "kube-system", "u2", 1, "notready", "runc", 200, "[]", json.dumps({
            "labels": {}, "annotations": {}, "hostname": "node", "log_directory": "", "cgroup_parent": "kubepods/p2",
            "own_cgroup": False, "host_network": True, "host_ipc": True, "host_pid": True, "sysctls": {},
            "namespaces": {}, "userns": None, "port_mappings": [], "files": {"/etc/hosts": "/x/p2/hosts"}})),
        # a crash left it half-made: no namespaces, infra or files yet, and from an older pycri
        # that wrote neither userns nor port_mappings
        ("p3", "half", "default", "u3", 0, "creating", "runc", 300, "[]", json.dumps({
            "labels": {"a": "b"}, "annotations": {}, "hostname": "half", "log_directory": "/logs",
            "cgroup_parent": "/pycri/p3", "own_cgroup": True, "host_network": False, "host_ipc": False,
            "host_pid": False, "sysctls": {}, "namespaces": {}})),
    ]
    with db.transaction() as tx:
        for row in rows:
            tx.execute("INSERT INTO sandboxes(id, name, namespace, uid, attempt, state, handler, created_at, ips, "
                       "extra) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
    return db


def test_old_rows_are_read_as_typed_records(tmp_path: Path) -> None:
    old_database(tmp_path / "db.sqlite").close()
    table = SandboxTable(Database(tmp_path / "db.sqlite"))
    ready = table.get("p1")
    assert ready == SandboxRecord(
        id="p1", name="web-0", namespace="default", uid="u1", attempt=0, state=READY, handler="runc",
        created_at=100, ips=["10.88.0.5", "fd00::5"], labels={"app": "web"}, annotations={"note": "a;b"},
        hostname="web-0", log_directory="/var/log/pods/default_web-0_u1", cgroup_parent="/pycri/p1",
        own_cgroup=True, host_network=False, host_ipc=False, host_pid=False,
        sysctls={"net.ipv4.ip_forward": "1"},
        port_mappings=[PortMapping("tcp", 80, 8080, "")],
        userns=IdMaps(uids=(IdMapping(0, 65536, 65536),), gids=(IdMapping(0, 131072, 65536),)),
        namespaces=PodNamespaces(user="/run/pycri/ns/p1/user", network="/run/pycri/ns/p1/net",
                                 ipc="/run/pycri/ns/p1/ipc", uts="/run/pycri/ns/p1/uts"),
        infra=Infra(pid=4242, start_time=99),
        files={"/etc/hostname": "/var/lib/pycri/sandboxes/p1/hostname",
               "/etc/hosts": "/var/lib/pycri/sandboxes/p1/hosts"},
    )
    # what the old reads of extra gave, the typed fields give back in the same shapes
    assert ready.namespaces.paths() == OLD_EXTRA["namespaces"]
    assert list(ready.namespaces.paths()) == list(OLD_EXTRA["namespaces"])
    assert ready.userns is not None and ready.userns.to_dict() == OLD_EXTRA["userns"]
    assert ready.infra is not None and ready.infra.to_dict() == OLD_EXTRA["infra"]
    assert [vars(p) for p in ready.port_mappings] == OLD_EXTRA["port_mappings"]

    host = table.get("p2")
    assert host is not None
    assert (host.host_network, host.host_ipc, host.host_pid, host.own_cgroup) == (True, True, True, False)
    assert host.userns is None and host.infra is None and host.namespaces == PodNamespaces()
    assert host.cgroup_parent == "kubepods/p2" and host.files == {"/etc/hosts": "/x/p2/hosts"}

    half = table.get("p3")
    assert half is not None and half.state == "creating"
    assert half.port_mappings == [] and half.userns is None and half.infra is None and half.files == {}
    assert half.namespaces.network == "" and half.own_cgroup is True and half.labels == {"a": "b"}
    assert [r.id for r in table.where()] == ["p1", "p2", "p3"]


def test_migration_keeps_the_unique_pod_key_and_drops_extra(tmp_path: Path) -> None:
    old_database(tmp_path / "db.sqlite").close()
    db = Database(tmp_path / "db.sqlite")
    table = SandboxTable(db)
    columns = [r["name"] for r in db.query("PRAGMA table_info(sandboxes)")]
    assert "extra" not in columns and columns == table.columns
    assert table.by_name("web-0", "default", "u1", 0) is not None
    duplicate = SandboxRecord(id="p9", name="web-0", namespace="default", uid="u1", attempt=0, state=READY,
                              handler="runc", created_at=900)
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        with db.transaction() as tx:
            table.insert(tx, duplicate)
    db.close()
    SandboxTable(Database(tmp_path / "db.sqlite"))  # the migration is applied once


def test_typed_record_round_trip(tmp_path: Path) -> None:
    db = Database(tmp_path / "db.sqlite")
    table = SandboxTable(db)
    record = SandboxRecord(id="abc", name="p", namespace="ns", uid="u", attempt=2, state="creating",
                           handler="crun", created_at=5, labels={"l": "1"}, own_cgroup=True,
                           port_mappings=[PortMapping("udp", 53, 5353, "127.0.0.1")])
    with db.transaction() as tx:
        table.insert(tx, record)
    assert table.get("abc") == record
    record.state = READY
    record.namespaces = PodNamespaces.from_paths({"network": Path("/n/net"), "uts": Path("/n/uts")})
    record.infra = Infra(pid=7, start_time=8)
    record.userns = IdMaps(uids=(IdMapping(0, 1000, 1),), gids=(IdMapping(0, 1000, 1),))
    record.files = {"/etc/resolv.conf": "/r/resolv.conf"}
    record.ips = ["10.0.0.2"]
    with db.transaction() as tx:
        table.update(tx, record)
    again = table.get("abc")
    assert again == record
    assert again is not None and again.own_cgroup is True and again.host_pid is False
    assert again.namespaces.paths() == {"network": "/n/net", "uts": "/n/uts"}
    assert table.with_prefix("ab") == [record]
