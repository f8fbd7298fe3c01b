"""A recording SystemdBus for tests: units as a dict name -> properties, calls in order."""
from __future__ import annotations

from dataclasses import dataclass, field

from pycri.cgroups.systemd_dbus import NO_SUCH_UNIT, UNIT_EXISTS, SystemdBus, SystemdError
from pycri.common.recorder import Recorder


@dataclass
class FakeSystemd(Recorder, SystemdBus):
    units: dict[str, dict[str, object]] = field(default_factory=dict)
    systemd_version: str = "257"

    def start_transient_unit(self, name: str, properties: list[tuple[str, str, object]], *,
                             mode: str = "replace", timeout: float = 30.0) -> None:
        self._record("start_transient_unit", name, list(properties), mode)
        if name in self.units:
            raise SystemdError(f"Unit {name} was already loaded or has a fragment file.", UNIT_EXISTS)
        self.units[name] = {key: value for key, _, value in properties}

    def stop_unit(self, name: str, *, timeout: float = 30.0) -> None:
        self._record("stop_unit", name)
        self.units.pop(name, None)

    def set_unit_properties(self, name: str, properties: list[tuple[str, str, object]]) -> None:
        self._record("set_unit_properties", name, list(properties))
        if name not in self.units:
            raise SystemdError(f"Unit {name} not loaded.", NO_SUCH_UNIT)
        self.units[name].update({key: value for key, _, value in properties})

    def unit_property(self, name: str, interface: str, prop: str) -> object:
        self._record("unit_property", name, interface, prop)
        if name not in self.units:
            raise SystemdError(f"Unit {name} not loaded.", NO_SUCH_UNIT)
        return self.units[name].get(prop)

    def version(self) -> str:
        self._record("version")
        return self.systemd_version
