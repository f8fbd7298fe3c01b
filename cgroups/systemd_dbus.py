"""systemd's manager over D-Bus, for the systemd cgroup driver: start a transient unit and wait
for its job, stop one, set properties. The interface is SystemdBus; DBusSystemd is the real one
(jeepney, a pure-Python D-Bus client, imported only when the systemd driver is used: the
cgroupfs path of pycri-runtime never loads it); cgroups.systemd_fake records calls for tests.

The connection is the system bus (a match rule and Subscribe for JobRemoved), as go-systemd's
dbus.New that runc uses; without a bus daemon, systemd's own socket /run/systemd/private (no
Hello; systemd sends its signals to every such connection). Seen in a kind node: a call on the
private socket straight after the handshake sometimes got no reply, so the bus comes first.

pycri-runtime runs its interpreter isolated and without site (-I -S), so jeepney's folder is
put on sys.path here, lazily: the folder that holds the pycri package (a wheel install: the
venv's site-packages), or this interpreter's purelib (a venv's python).
"""
from __future__ import annotations

import os
import sys
import time

PRIVATE_SOCKET = "/run/systemd/private"
SYSTEM_BUS_SOCKET = "/run/dbus/system_bus_socket"
SYSTEMD = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER = "org.freedesktop.systemd1.Manager"
JOB_TIMEOUT = 30.0  # runc's
NO_SUCH_UNIT = "org.freedesktop.systemd1.NoSuchUnit"
UNIT_EXISTS = "org.freedesktop.systemd1.UnitExists"

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class SystemdError(Exception):
    """A systemd call failed: `name` is the D-Bus error name when systemd answered with one."""

    def __init__(self, message: str, name: str = "") -> None:
        super().__init__(message)
        self.name = name


class SystemdBus:
    """What the systemd driver asks of systemd. Properties are (name, D-Bus signature, value)."""

    def start_transient_unit(self, name: str, properties: list[tuple[str, str, object]], *,
                             mode: str = "replace", timeout: float = JOB_TIMEOUT) -> None:
        """Start the transient unit `name` and wait until its start job has finished ("done");
        a leftover unit of that name (a failed one) is reset and the start tried once more."""
        raise NotImplementedError

    def stop_unit(self, name: str, *, timeout: float = JOB_TIMEOUT) -> None:
        """Stop `name` and wait for the job; a unit that does not exist is not an error."""
        raise NotImplementedError

    def set_unit_properties(self, name: str, properties: list[tuple[str, str, object]]) -> None:
        """Set runtime properties of a running unit (`update`)."""
        raise NotImplementedError

    def unit_property(self, name: str, interface: str, prop: str) -> object:
        raise NotImplementedError

    def version(self) -> str:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "SystemdBus":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _import_jeepney() -> None:
    try:
        import jeepney  # noqa: F401
        return
    except ImportError:
        pass
    candidates = []
    pycri = sys.modules.get("pycri")
    for folder in getattr(pycri, "__path__", None) or []:
        candidates.append(os.path.dirname(os.path.abspath(folder)))  # site-packages/pycri -> site-packages
        candidates.append(os.path.join(os.path.abspath(folder), ".venv"))  # a checkout's venv
    import sysconfig

    candidates.append(sysconfig.get_paths().get("purelib", ""))
    for candidate in candidates:
        if candidate.endswith(".venv"):
            lib = os.path.join(candidate, "lib")
            try:
                found = [os.path.join(lib, d, "site-packages") for d in sorted(os.listdir(lib))]
            except OSError:
                continue
        else:
            found = [candidate]
        for folder in found:
            if folder and os.path.isdir(os.path.join(folder, "jeepney")) and folder not in sys.path:
                sys.path.append(folder)
                try:
                    import jeepney  # noqa: F401,F811
                    return
                except ImportError:
                    sys.path.remove(folder)
    raise SystemdError("the systemd cgroup driver needs the jeepney package (pip install jeepney)")


class DBusSystemd(SystemdBus):
    """systemd's manager through jeepney's blocking connection."""

    def __init__(self, address: str | None = None) -> None:
        _import_jeepney()
        from jeepney import DBusAddress, MatchRule
        from jeepney.io.blocking import DBusConnection, DBusConnectionBase, prep_socket
        from jeepney.io.common import MessageFilters

        self._manager = DBusAddress(MANAGER_PATH, bus_name=SYSTEMD, interface=MANAGER)
        self._private = False
        try:
            if address is None:
                address = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS", "").partition("unix:path=")[2] \
                    or SYSTEM_BUS_SOCKET
                if not os.path.exists(address) and os.path.exists(PRIVATE_SOCKET):
                    address = PRIVATE_SOCKET
            self._private = address == PRIVATE_SOCKET
            sock = prep_socket(address, timeout=5.0)
        except (OSError, ValueError, TimeoutError) as e:
            raise SystemdError(f"connect to systemd at {address}: {e}") from None
        if self._private:
            # a peer-to-peer connection to systemd itself: no bus, no Hello
            class Direct(DBusConnection):
                def __init__(self, sock: Any) -> None:
                    DBusConnectionBase.__init__(self, sock, False)
                    self._filters = MessageFilters()
                    self.unique_name = ""

            self._conn = Direct(sock)
        else:
            self._conn = DBusConnection(sock)
        self._job_rule = MatchRule(type="signal", interface=MANAGER, member="JobRemoved", path=MANAGER_PATH)
        if not self._private:
            from jeepney.bus_messages import message_bus

            self._call(message_bus.AddMatch(self._job_rule))
            self._manager_call("Subscribe", "", ())

    def close(self) -> None:
        self._conn.close()

    # calls

    def _call(self, message: Any, timeout: float = JOB_TIMEOUT) -> tuple[Any, ...]:
        from jeepney import HeaderFields, MessageType

        try:
            reply = self._conn.send_and_get_reply(message, timeout=timeout)
        except (OSError, TimeoutError) as e:
            raise SystemdError(f"systemd D-Bus call {message.header.fields.get(HeaderFields.member)}: {e}") from None
        if reply.header.message_type == MessageType.error:
            name = str(reply.header.fields.get(HeaderFields.error_name, ""))
            detail = reply.body[0] if reply.body else name
            raise SystemdError(f"{detail} ({name})", name)
        return tuple(reply.body)

    def _manager_call(self, method: str, signature: str, body: tuple[Any, ...], timeout: float = JOB_TIMEOUT):
        from jeepney import new_method_call

        return self._call(new_method_call(self._manager, method, signature or None, body), timeout)

    def start_transient_unit(self, name: str, properties: list[tuple[str, str, object]], *,
                             mode: str = "replace", timeout: float = JOB_TIMEOUT) -> None:
        props = [(key, (signature, value)) for key, signature, value in properties]
        for attempt in (1, 2):
            try:
                result = self._job_wait("StartTransientUnit", "ssa(sv)a(sa(sv))", (name, mode, props, []),
                                        name, timeout)
            except SystemdError as e:
                if e.name == UNIT_EXISTS and attempt == 1:
                    self._reset_failed(name)  # a leftover failed unit: let systemd drop it, once
                    continue
                raise
            if result != "done":
                self._reset_failed(name)
                raise SystemdError(f"error creating systemd unit {name}: got {result!r}")
            return

    def _job_wait(self, method: str, signature: str, body: tuple[Any, ...], unit: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        with self._conn.filter(self._job_rule, bufsize=1000) as queue:
            (job,) = self._manager_call(method, signature, body, timeout)
            while True:
                while queue:
                    signal = queue.popleft()
                    if len(signal.body) == 4 and signal.body[1] == job:
                        return str(signal.body[3])
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise SystemdError(f"timeout waiting for systemd: {method} {unit}")
                try:
                    self._conn.recv_messages(timeout=remaining)
                except TimeoutError:
                    raise SystemdError(f"timeout waiting for systemd: {method} {unit}") from None
                except OSError as e:
                    raise SystemdError(f"waiting for systemd: {method} {unit}: {e}") from None

    def _reset_failed(self, name: str) -> None:
        try:
            self._manager_call("ResetFailedUnit", "s", (name,))
        except SystemdError:
            pass

    def stop_unit(self, name: str, *, timeout: float = JOB_TIMEOUT) -> None:
        try:
            self._job_wait("StopUnit", "ss", (name, "replace"), name, timeout)
        except SystemdError as e:
            if e.name != NO_SUCH_UNIT:
                raise
        self._reset_failed(name)

    def set_unit_properties(self, name: str, properties: list[tuple[str, str, object]]) -> None:
        props = [(key, (signature, value)) for key, signature, value in properties]
        self._manager_call("SetUnitProperties", "sba(sv)", (name, True, props))

    def unit_property(self, name: str, interface: str, prop: str) -> object:
        from jeepney import DBusAddress, Properties

        (path,) = self._manager_call("GetUnit", "s", (name,))
        (value,) = self._call(Properties(DBusAddress(path, bus_name=SYSTEMD, interface=interface)).get(prop))
        return value[1]

    def version(self) -> str:
        from jeepney import Properties

        (value,) = self._call(Properties(self._manager).get("Version"), timeout=5.0)
        return str(value[1])


def connect() -> SystemdBus:
    return DBusSystemd()


def check_reachable(run_systemd: str = "/run/systemd/system") -> str:
    """systemd's version, or SystemdError saying why the systemd driver cannot work here: systemd
    is not the init (no /run/systemd/system, as sd_booted checks) or its bus does not answer."""
    if not os.path.isdir(run_systemd):
        raise SystemdError(f"systemd is not running as init ({run_systemd} is missing)")
    bus = DBusSystemd()
    try:
        return bus.version()
    finally:
        bus.close()
