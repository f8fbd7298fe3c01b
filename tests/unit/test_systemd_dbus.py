"""cgroups.systemd_dbus's client (jeepney) against a small D-Bus peer in a thread that answers as
systemd's manager does: the bus handshake (Hello, AddMatch, Subscribe), StartTransientUnit and
StopUnit answered with a job path and then its JobRemoved signal, the UnitExists and NoSuchUnit
errors, SetUnitProperties, ResetFailedUnit and the Version property."""
from __future__ import annotations

import itertools
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pycri.cgroups import systemd_dbus
from pycri.cgroups.systemd_dbus import DBusSystemd, SystemdError

jeepney = pytest.importorskip("jeepney")
from jeepney import DBusAddress, HeaderFields, Parser, new_error, new_method_return, new_signal  # noqa: E402


class FakeManager:
    """Answers one client connection; `units` name -> properties; `results` unit -> job result."""

    def __init__(self, path: Path) -> None:
        self.server = socket.socket(socket.AF_UNIX)
        self.server.bind(str(path))
        self.server.listen(1)
        self.units: dict[str, dict[str, Any]] = {}
        self.results: dict[str, str] = {}
        self.calls: list[str] = []
        self.reset_drops = True  # ResetFailedUnit drops the unit (a failed one)
        self.jobs = itertools.count(1)
        self.serials = itertools.count(1)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.server.accept()
        with conn:
            data = b""
            while b"BEGIN\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
                if b"AUTH" in chunk:
                    conn.sendall(b"OK 0123456789abcdef0123456789abcdef\r\n")
            parser = Parser()
            parser.add_data(data.split(b"BEGIN\r\n", 1)[1])
            while True:
                for message in iter(parser.get_next_message, None):
                    for reply in self._answer(message):
                        conn.sendall(reply.serialise(serial=next(self.serials)))
                chunk = conn.recv(65536)
                if not chunk:
                    return
                parser.add_data(chunk)

    def _answer(self, message: Any) -> list[Any]:
        member = message.header.fields.get(HeaderFields.member)
        self.calls.append(member)
        body = message.body
        if member == "Hello":
            return [new_method_return(message, "s", (":1.42",))]
        if member in ("AddMatch", "Subscribe", "ResetFailedUnit"):
            if member == "ResetFailedUnit" and self.reset_drops:
                self.units.pop(body[0], None)
            return [new_method_return(message)]
        if member == "Get":
            return [new_method_return(message, "v", (("s", "257.13"),))]
        if member == "SetUnitProperties":
            self.units[body[0]].update({key: value[1] for key, value in body[2]})
            return [new_method_return(message)]
        if member in ("StartTransientUnit", "StopUnit"):
            name = body[0]
            if member == "StartTransientUnit" and name in self.units:
                return [new_error(message, systemd_dbus.UNIT_EXISTS, "s", (f"Unit {name} already exists.",))]
            if member == "StopUnit" and name not in self.units:
                return [new_error(message, systemd_dbus.NO_SUCH_UNIT, "s", (f"Unit {name} not loaded.",))]
            if member == "StartTransientUnit":
                self.units[name] = {key: value[1] for key, value in body[2]}
            else:
                del self.units[name]
            job = f"/org/freedesktop/systemd1/job/{next(self.jobs)}"
            manager = DBusAddress(systemd_dbus.MANAGER_PATH, interface=systemd_dbus.MANAGER)
            other = new_signal(manager, "JobRemoved", "uoss", (0, "/org/freedesktop/systemd1/job/999", "x", "done"))
            done = new_signal(manager, "JobRemoved", "uoss", (int(job.rsplit("/", 1)[1]), job, name,
                                                             self.results.get(name, "done")))
            return [new_method_return(message, "o", (job,)), other, done]
        return [new_error(message, "org.freedesktop.DBus.Error.UnknownMethod", "s", (member,))]


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[FakeManager]:
    fake = FakeManager(tmp_path / "bus")
    yield fake
    fake.server.close()


def test_start_and_stop_a_scope(manager: FakeManager, tmp_path: Path) -> None:
    bus = DBusSystemd(str(tmp_path / "bus"))
    try:
        assert bus.version() == "257.13"
        bus.start_transient_unit("pycri-c1.scope", [("Slice", "s", "kubepods.slice"), ("Delegate", "b", True),
                                                    ("PIDs", "au", [42]), ("MemoryMax", "t", 1 << 20)])
        assert manager.units["pycri-c1.scope"] == {"Slice": "kubepods.slice", "Delegate": True, "PIDs": [42],
                                                   "MemoryMax": 1 << 20}
        bus.set_unit_properties("pycri-c1.scope", [("MemoryMax", "t", 2 << 20)])
        assert manager.units["pycri-c1.scope"]["MemoryMax"] == 2 << 20
        bus.stop_unit("pycri-c1.scope")
        assert manager.units == {}
        bus.stop_unit("pycri-c1.scope")  # gone already: not an error
    finally:
        bus.close()
    assert manager.calls[:3] == ["Hello", "AddMatch", "Subscribe"]


def test_a_leftover_unit_is_reset_once(manager: FakeManager, tmp_path: Path) -> None:
    manager.units["pycri-c2.scope"] = {"Slice": "old.slice"}
    bus = DBusSystemd(str(tmp_path / "bus"))
    try:
        bus.start_transient_unit("pycri-c2.scope", [("Slice", "s", "new.slice")])
        assert manager.units["pycri-c2.scope"] == {"Slice": "new.slice"}
        assert manager.calls.count("StartTransientUnit") == 2 and "ResetFailedUnit" in manager.calls
        manager.units["pycri-c3.scope"] = {}
        manager.reset_drops = False  # an active unit of that name: the second UnitExists stands
        with pytest.raises(SystemdError) as failure:
            bus.start_transient_unit("pycri-c3.scope", [])
        assert failure.value.name == systemd_dbus.UNIT_EXISTS
    finally:
        bus.close()


def test_a_failed_job_is_an_error(manager: FakeManager, tmp_path: Path) -> None:
    manager.results["pycri-c4.scope"] = "failed"
    bus = DBusSystemd(str(tmp_path / "bus"))
    try:
        with pytest.raises(SystemdError, match="error creating systemd unit pycri-c4.scope: got 'failed'"):
            bus.start_transient_unit("pycri-c4.scope", [])
        assert manager.calls[-1] == "ResetFailedUnit"
    finally:
        bus.close()


def test_no_bus_is_a_systemd_error(tmp_path: Path) -> None:
    with pytest.raises(SystemdError, match="connect to systemd"):
        DBusSystemd(str(tmp_path / "nothing-here"))
