"""The small commands: start, state, kill, delete, list, features, update, events --stats.

These stay off ctypes, dataclasses and typing (cgroups.resources is imported by `update`
only, select by `start` only), because conmon and pycri run them often and their start-up
is what they cost.
"""
from __future__ import annotations

import os
import sys
import time

from pycri.runtime import jsonlite
from pycri.runtime.args import Flags
from pycri.runtime.errors import RuntimeFailure
from pycri.runtime.state import CREATED, OCI_VERSION, RUNNING, STOPPED, ContainerState, StateStore, oci_state, process_alive


def state(store: StateStore, container_id: str) -> None:
    current = store.load(container_id)
    sys.stdout.write(jsonlite.dumps(oci_state(current, store.status(current)), indent=2) + "\n")


def start(store: StateStore, container_id: str) -> None:
    current = store.load(container_id)
    status = store.status(current)
    if status == STOPPED:
        raise RuntimeFailure("cannot start a container that has stopped")
    if status == RUNNING:
        raise RuntimeFailure("cannot start an already running container")
    import select

    fifo = store.fifo(container_id)
    try:
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise RuntimeFailure("cannot start an already running container") from None
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while True:
            events = poller.poll(100)
            if events:
                try:
                    data = os.read(fd, 1)
                except BlockingIOError:
                    continue
                if data:
                    break
                raise RuntimeFailure("cannot start container: its init process exited")
            if not process_alive(current.pid, current.pid_start):
                raise RuntimeFailure("cannot start container: its init process exited")
    finally:
        os.close(fd)
    try:
        os.unlink(fifo)
    except FileNotFoundError:
        pass


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _manager(current: ContainerState):  # -> cgroups.CgroupManager | None
    if not current.cgroup:
        return None
    from pycri import cgroups

    return cgroups.manager_from_state(current.cgroup)


def kill(store: StateStore, container_id: str, sig: int, all_processes: bool = False) -> None:
    current = store.load(container_id)
    status = store.status(current)
    if status == STOPPED and not all_processes:
        raise RuntimeFailure("container not running")
    if all_processes:
        manager = _manager(current)
        for pid in manager.pids() if manager else []:
            _signal(pid, sig)
        if status == STOPPED:
            return
    try:
        os.kill(current.pid, sig)
    except ProcessLookupError:
        raise RuntimeFailure("container not running") from None


def _wait_gone(pids: list[tuple[int, int | None]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    from pycri.runtime.state import read_proc_stat

    while pids and time.monotonic() < deadline:
        remaining = []
        for pid, start in pids:
            stat = read_proc_stat(pid)
            if stat is not None and stat.state not in ("Z", "X") and (start is None or stat.start_time == start):
                remaining.append((pid, start))
        pids = remaining
        if pids:
            time.sleep(0.01)


def delete(store: StateStore, container_id: str, force: bool = False) -> None:
    try:
        current = store.load(container_id)
    except RuntimeFailure:  # missing or corrupt state.json
        if force:
            store.remove(container_id)  # a create that was interrupted may leave a bare dir
            return
        raise
    status = store.status(current)
    if status == RUNNING and not force:
        raise RuntimeFailure(f"cannot delete container {container_id} that is not stopped: {status}")
    manager = _manager(current)
    victims: list[tuple[int, int | None]] = []
    if status in (CREATED, RUNNING):
        _signal(current.pid, 9)
        victims.append((current.pid, current.pid_start))
    if manager is not None:
        for pid in manager.pids():
            _signal(pid, 9)
            victims.append((pid, None))
    _wait_gone(victims, 10.0)
    if manager is not None:
        from pycri import cgroups

        try:
            if manager.systemd:
                _stop_unit(manager)
            manager.destroy()
        except cgroups.CgroupError as e:
            raise RuntimeFailure(f"delete container {container_id}: {e}") from None
    store.remove(container_id)


def _stop_unit(manager) -> None:  # manager: cgroups.CgroupManager
    """Stop the container's systemd unit (--systemd-cgroup at create). Its processes are gone, so
    systemd has usually dropped the scope already; a bus that does not answer is logged, and the
    directories are removed all the same (as runc's Destroy does)."""
    from pycri.cgroups import systemd_dbus
    from pycri.runtime import log

    unit = (manager.systemd or {}).get("unit", "")
    try:
        with systemd_dbus.connect() as bus:
            bus.stop_unit(unit)
    except systemd_dbus.SystemdError as e:
        log.current.warning(f"stop systemd unit {unit}: {e}")


def list_containers(store: StateStore, fmt: str = "table", quiet: bool = False) -> None:
    rows = []
    for container_id in store.ids():
        try:
            current = store.load(container_id)
        except RuntimeFailure:
            continue
        rows.append(oci_state(current, store.status(current)))
    if quiet:
        for row in rows:
            print(row["id"])
    elif fmt == "json":
        print(jsonlite.dumps(rows))
    elif fmt == "table":
        print(f"{'ID':<20} {'PID':<10} {'STATUS':<10} {'BUNDLE':<40} {'CREATED':<32} OWNER")
        for row in rows:
            print(f"{row['id']!s:<20} {row['pid']!s:<10} {row['status']!s:<10} {row['bundle']!s:<40} "
                  f"{row['created']!s:<32} {row['owner']}")
    else:
        raise RuntimeFailure(f"invalid format option {fmt!r}")


def features() -> None:
    from pycri.runtime.process.capabilities import NAMES
    from pycri.runtime.rootfs.mountopts import EXTENSIONS, FLAGS, PROPAGATION, RECURSIVE

    print(jsonlite.dumps({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": OCI_VERSION,
        "hooks": [],
        "mountOptions": sorted(list(FLAGS) + list(PROPAGATION) + list(RECURSIVE) + list(EXTENSIONS)),
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"],
            "capabilities": list(NAMES),
            "cgroup": {"v1": True, "v2": True, "systemd": True, "systemdUser": False, "rdma": False},
            "seccomp": {
                "enabled": True,
                "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
                            "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"],
                "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
                              "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"],
                "archs": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM", "SCMP_ARCH_X32", "SCMP_ARCH_X86", "SCMP_ARCH_X86_64"],
            },
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
        },
        "annotations": {"io.github.pycri.runtime.version": "0.1.0"},
    }, indent=2))


UPDATE_FLAGS = {
    # flag -> (resources section, key)
    "memory": ("memory", "limit"), "memory-reservation": ("memory", "reservation"),
    "memory-swap": ("memory", "swap"), "cpu-shares": ("cpu", "shares"), "cpu-quota": ("cpu", "quota"),
    "cpu-period": ("cpu", "period"), "cpu-rt-period": ("cpu", "realtimePeriod"),
    "cpu-rt-runtime": ("cpu", "realtimeRuntime"), "cpuset-cpus": ("cpu", "cpus"), "cpuset-mems": ("cpu", "mems"),
    "pids-limit": ("pids", "limit"), "blkio-weight": ("blockIO", "weight"),
}


def update(store: StateStore, container_id: str, resources_file: str, flags: Flags) -> None:
    from pycri.cgroups import CgroupError
    from pycri.cgroups.resources import Resources

    current = store.load(container_id)
    if store.status(current) == STOPPED:
        raise RuntimeFailure(f"container {container_id} is stopped: nothing to update")
    raw: dict[str, object] = {}
    if resources_file:
        try:
            if resources_file == "-":
                text = sys.stdin.read()
            else:
                with open(resources_file) as f:
                    text = f.read()
            loaded = jsonlite.loads(text)
        except (OSError, ValueError) as e:
            raise RuntimeFailure(f"read resources {resources_file}: {e}") from None
        if not isinstance(loaded, dict):
            raise RuntimeFailure("the resources must be a JSON object (linux.resources)")
        raw = loaded
    for flag, (section, key) in UPDATE_FLAGS.items():
        if not flags.is_set(flag):
            continue
        value: object = flags.string(flag)
        if key not in ("cpus", "mems"):
            try:
                value = _size(str(value)) if section == "memory" else int(str(value))
            except ValueError:
                raise RuntimeFailure(f"invalid value {value!r} for --{flag}") from None
        group = raw.setdefault(section, {})
        if isinstance(group, dict):
            group[key] = value
    manager = _manager(current)
    if manager is None:
        raise RuntimeFailure(f"container {container_id} has no cgroup")
    try:
        resources = Resources.from_spec(raw)
        if manager.systemd:
            _set_unit_properties(manager, resources)
        warnings = manager.apply(resources)
    except CgroupError as e:
        raise RuntimeFailure(f"update container {container_id}: {e}") from None
    from pycri.runtime import log

    for warning in warnings:
        log.current.warning(warning)


def _set_unit_properties(manager, resources) -> None:  # cgroups.CgroupManager, cgroups.resources.Resources
    """The new limits as the unit's properties too (as runc's Set), so that systemd keeps them."""
    from pycri.cgroups import systemd, systemd_dbus

    props = systemd.resource_properties(resources, manager.version)
    unit = (manager.systemd or {}).get("unit", "")
    if not props or not unit:
        return
    try:
        with systemd_dbus.connect() as bus:
            bus.set_unit_properties(unit, props)
    except systemd_dbus.SystemdError as e:
        raise RuntimeFailure(f"set the properties of systemd unit {unit}: {e}") from None


def _size(text: str) -> int:
    """`-1`, `1048576`, `512k`, `64m`, `2g` (binary units, like runc's --memory)."""
    text = text.strip().lower().rstrip("b")
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def events_stats(store: StateStore, container_id: str) -> None:
    current = store.load(container_id)
    manager = _manager(current)
    if manager is None:
        raise RuntimeFailure(f"container {container_id} has no cgroup")
    stats = manager.stats()
    print(jsonlite.dumps({"type": "stats", "id": container_id, "data": {
        "cpu": {"usage": {"total": stats.cpu_usage_ns}},
        "memory": {"usage": {"usage": stats.memory_usage, "limit": stats.memory_limit},
                   "workingSet": stats.memory_working_set},
        "pids": {"current": stats.pids_current, "limit": stats.pids_limit},
    }}))
