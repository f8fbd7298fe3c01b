"""`create`: set up a container and leave its init waiting for `start`.

The parent side: validate the bundle, make the state dir and exec fifo, the cgroups, fork
the init stages (runtime.init), put the first stage in the cgroups, wait for the init's
pid and "ready", apply the resource limits, write state.json and --pid-file, and exit,
leaving the init to the subreaper (conmon). On any failure nothing is left behind: the
init is killed, its cgroups removed and the state dir deleted (its mounts were only ever
in its own mount namespace).

Start-up: the first stage is forked as soon as the spec is read and checked, before the
parent imports the cgroups package. On two cores the two then get ready side by side: the
child imports the init's modules (rootfs, process, namespaces: runtime.init's) and ctypes,
makes itself not dumpable and loads libseccomp, while the parent makes the cgroups and moves
the child into them (the first write to a cgroup.procs waits for an RCU grace period, see
runtime.cgroup_lock). The parent imports no ctypes and stays dumpable: it never enters the
container's namespaces. The child does nothing else before the parent's "go": it enters no
namespace, makes no process and no kernel object, so everything it leaves behind is made
inside the container's cgroups, as before; on any failure before "go" the parent kills and
reaps it (stages.Started.abort).
"""
from __future__ import annotations

import os
import time

from pycri.kernel.syscall import PR_SET_DUMPABLE, Syscall
from pycri.runtime import log, sysctl
from pycri.runtime.errors import RuntimeFailure
from pycri.runtime.spec import IdMapping, Spec, id_map_text, load_spec
from pycri.runtime.stages import Started, fork_stage, follow, kill_and_wait
from pycri.runtime.state import ContainerState, StateStore, read_proc_stat, rfc3339_nano, write_pid_file

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pycri import cgroups
    from pycri.cgroups.resources import Resources
    from pycri.kernel.syscall import SeccompProgram
    from pycri.runtime.sync import Channel

INIT_TIMEOUT = 120.0


class InitOptions:
    """What `create` hands its children besides the spec."""

    def __init__(self, *, fifo_path: str, console_fd: int = -1, no_pivot: bool = False, preserve_fds: int = 0,
                 seccomp: SeccompProgram | None = None) -> None:
        self.fifo_path = fifo_path
        self.console_fd = console_fd
        self.no_pivot = no_pivot
        self.preserve_fds = preserve_fds
        self.seccomp = seccomp


class CreateOptions:
    def __init__(self, *, bundle: str = ".", pid_file: str = "", console_socket: str = "", no_pivot: bool = False,
                 no_new_keyring: bool = False, preserve_fds: int = 0, systemd_cgroup: bool = False) -> None:
        self.bundle = bundle
        self.pid_file = pid_file
        self.console_socket = console_socket
        self.no_pivot = no_pivot
        self.no_new_keyring = no_new_keyring
        self.preserve_fds = preserve_fds
        self.systemd_cgroup = systemd_cgroup  # --systemd-cgroup: cgroupsPath is slice:prefix:name


def container_resources(spec: Spec) -> Resources:
    from pycri.cgroups.resources import DEFAULT_ALLOWED_DEVICES, Resources

    resources = Resources.from_spec(spec.linux.resources)
    resources.devices = resources.devices + list(DEFAULT_ALLOWED_DEVICES)
    return resources


def validate(spec: Spec, options: CreateOptions) -> None:
    if spec.process.terminal and not options.console_socket:
        raise RuntimeFailure("cannot allocate tty if runc will detach without setting console socket")
    if options.console_socket and not spec.process.terminal:
        raise RuntimeFailure("cannot use console socket if runc will not detach or allocate tty")
    if options.preserve_fds < 0:
        raise RuntimeFailure("--preserve-fds must not be negative")
    sysctl.validate(spec.linux.sysctl, spec.linux)


def _id_maps(spec: Spec) -> tuple[str, str] | None:
    """uid_map and gid_map of the user namespace the container's init makes, if it makes one."""
    if not spec.linux.creates("user"):
        return None
    return id_map_text(spec.linux.uid_mappings), id_map_text(spec.linux.gid_mappings)


def _host_id(mappings: list[IdMapping]) -> int:
    """The host id of the container's id 0 (0 when not mapped: root on the host)."""
    return next((m.host_id for m in mappings if m.container_id == 0), 0)


def _systemd_cgroup(spec: Spec, container_id: str, resources: Resources):
    """--systemd-cgroup: the manager of the unit's cgroup and the join of create's first stage,
    which starts the scope with that pid in it (cgroups.systemd.start_scope). The bus is
    connected here, before the first stage is let go, so an unreachable systemd fails early."""
    from pycri import cgroups
    from pycri.cgroups import systemd, systemd_dbus

    try:
        path = systemd.parse_path(spec.linux.cgroups_path, container_id, "pycri-runtime")
        manager = systemd.new_manager(path)
        bus = systemd_dbus.connect()
    except (cgroups.CgroupError, systemd_dbus.SystemdError) as e:
        raise RuntimeFailure(str(e)) from None

    def join(pid: int) -> None:
        try:
            systemd.start_scope(bus, manager, [pid], resources, f"pycri-runtime container {container_id}")
        finally:
            bus.close()

    return manager, join


def _first_stage(to_parent: Channel, from_parent: Channel, kernel: Syscall | None, spec: Spec,
                 options: InitOptions) -> None:
    """The first stage's entry, in the child, forked before the parent's heavier imports: it
    imports the init's modules, makes itself not dumpable and loads libseccomp while the
    parent makes the cgroups and moves it into them; runtime.init.stage_namespaces waits for
    the parent's "go" before it does anything else."""
    from pycri.runtime.init import stage_namespaces

    if kernel is None:
        from pycri.kernel.linux import LinuxSyscall, preload_seccomp

        kernel = LinuxSyscall()
        if options.seccomp is not None:
            preload_seccomp()  # before pivot_root takes the library out of reach
    # the init stages pass through the container's namespaces as this (host) program: none of
    # its /proc/<pid> (exe, environ, fd, mem) is for the container (CVE-2019-5736)
    kernel.prctl(PR_SET_DUMPABLE, 0)
    stage_namespaces(to_parent, from_parent, kernel, spec, options)


def create(store: StateStore, container_id: str, options: CreateOptions, kernel: Syscall | None = None) -> int:
    spec = load_spec(options.bundle)
    validate(spec, options)
    program: SeccompProgram | None = None
    if spec.linux.seccomp:
        from pycri.runtime.seccomp import translate

        program = translate(spec.linux.seccomp, spec.process.no_new_privileges)
    store.make_dir(container_id)
    manager: cgroups.CgroupManager | None = None
    started: Started | None = None
    init_pid = 0
    console_fd = -1
    try:
        fifo = store.make_fifo(container_id)
        if spec.linux.namespace("user") is not None:  # the container's root opens it (as runc)
            os.chown(fifo, _host_id(spec.linux.uid_mappings), _host_id(spec.linux.gid_mappings))
        if options.console_socket:
            from pycri.runtime.process import console

            console_fd = console.connect(options.console_socket)
        init_options = InitOptions(fifo_path=fifo, console_fd=console_fd, no_pivot=options.no_pivot,
                                   preserve_fds=options.preserve_fds, seccomp=program)
        started = fork_stage(_first_stage, (kernel, spec, init_options))

        # no ctypes in this process (cgroupfs needs none): the stages load it, and they alone
        # enter the container's namespaces, so they alone are made not dumpable
        from pycri import cgroups

        resources = container_resources(spec)
        if options.systemd_cgroup:
            manager, join_cgroups = _systemd_cgroup(spec, container_id, resources)
        else:
            try:
                manager = cgroups.new_manager(spec.linux.cgroups_path, container_id, driver="cgroupfs")
            except ValueError as e:  # linux.cgroupsPath: a bad path (runc: "invalid cgroup path")
                raise RuntimeFailure(str(e)) from None
            manager.create()
            join_cgroups = manager.add
        init_pid = follow(started, join_cgroups=join_cgroups, timeout=INIT_TIMEOUT, id_maps=_id_maps(spec))
        for warning in manager.apply(resources):
            log.current.warning(warning)
        stat = read_proc_stat(init_pid)
        if stat is None:
            raise RuntimeFailure("container init exited before it was started")
        store.save(ContainerState(
            id=container_id, pid=init_pid, pid_start=stat.start_time, bundle=spec.bundle, rootfs=spec.root_path,
            created=rfc3339_nano(time.time_ns()), annotations=spec.annotations,
            namespaces=[ns.type for ns in spec.linux.namespaces], cgroup=manager.to_state(),
            process=spec.raw.get("process") or {}, seccomp=spec.linux.seccomp, hostname=spec.hostname,
        ))
        if options.pid_file:
            write_pid_file(options.pid_file, init_pid)
        return init_pid
    except BaseException:
        if started is not None:
            started.abort()  # killed and reaped unless `follow` took it (it cleans up itself)
        if init_pid:
            kill_and_wait(init_pid)
        if manager is not None:
            for pid in manager.pids():
                kill_and_wait(pid)
            try:
                if manager.systemd:
                    from pycri.runtime.commands import _stop_unit

                    _stop_unit(manager)
                manager.destroy()
            except cgroups.CgroupError as e:
                log.current.warning(f"cleaning up after the failed create: {e}")
        store.remove(container_id)
        raise
    finally:
        if console_fd >= 0:
            os.close(console_fd)
