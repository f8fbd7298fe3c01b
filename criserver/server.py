"""The pycri daemon: opens the store, recovers, serves CRI on the unix socket until SIGTERM."""
from __future__ import annotations

import contextlib
import os
import signal
import stat
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import grpc
import structlog

from pycri.api.cri import api_pb2_grpc
from pycri.containers.conmon import ConmonHandler
from pycri.containers.exit_watcher import ExitWatcher
from pycri.containers.service import ContainerService
from pycri.criserver import admin_servicer
from pycri.criserver.call_executor import QUICK_METHODS, CallExecutor
from pycri.criserver.config import Config, to_toml
from pycri.criserver.errors import CallInterceptor
from pycri.criserver.image_servicer import ImageServicer
from pycri.criserver.runtime_servicer import Condition, RuntimeServicer
from pycri.criserver.streaming_adapter import RuntimeStreams
from pycri.streaming import Server as StreamingServer
from pycri.images.service import ImageService
from pycri.kernel.linux import LinuxSyscall
from pycri.criserver.reaper import OrphanReaper
from pycri.kernel.syscall import PR_SET_CHILD_SUBREAPER
from pycri.sandbox.cni_network import CniNetwork
from pycri.sandbox.service import SandboxService
from pycri.store.db import Database

log = structlog.get_logger("pycri")
SOCKET_MODE = 0o660
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
WORKERS = 32
CALLS_DONE_SECONDS = 30.0  # at stop, how long cancelled calls' handlers get to finish (a pull ends at its next read)


class Daemon:
    def __init__(self, config: Config) -> None:
        self.config = config
        check_cgroup_driver(config.cgroup_driver)
        harden_store(config.root, config.state)
        self.db = Database(config.root / "pycri.db")
        self.images = ImageService(self.db, config.root / "images", config.registry)
        self.handlers = runtime_handlers(config)
        for handler in self.handlers.values():  # the runtimes' state: a user-namespaced root opens its fifo there
            os.chmod(handler.runtime_root, SEARCH_ONLY)
        self.containers = ContainerService(self.db, config.root / "containers", config.state / "exits",
                                           dict(self.handlers), config.runtime.default_handler, LinuxSyscall())
        self.network = CniNetwork(config.network.cni_conf_dir, list(config.network.cni_bin_dirs),
                                  config.root / "cni", write_default=config.network.write_default)
        self.sandboxes = SandboxService(self.db, config.root / "sandboxes", config.state, self.network,
                                        cgroup_driver=config.cgroup_driver)
        streaming = config.streaming
        self.streams = StreamingServer(RuntimeStreams(self.containers, self.sandboxes), streaming.address,
                                       streaming.port, token_ttl=streaming.token_ttl_seconds,
                                       idle_timeout=streaming.idle_timeout_seconds)
        self._stopped = threading.Event()
        self.calls = CallInterceptor()  # logs and maps every call, and counts those under way
        self.reaper = OrphanReaper()
        self.exit_watcher = ExitWatcher(self.containers)  # stopped events for containers that exit on their own
        self.runtime: RuntimeServicer | None = None
        self.server: grpc.Server | None = None

    def conditions(self) -> list[Condition]:
        missing = [name for name, runtime in self.handlers.items() if not os.access(runtime.runtime_path, os.X_OK)]
        default = self.config.runtime.default_handler
        runtime_ready = Condition("RuntimeReady", True)
        if not os.access(self.config.runtime.conmon, os.X_OK):
            runtime_ready = Condition("RuntimeReady", False, "MonitorMissing", f"{self.config.runtime.conmon} is not executable")
        elif default in missing:
            runtime_ready = Condition("RuntimeReady", False, "RuntimeMissing",
                                      f"the default handler {default!r} has no executable runtime")
        ready, reason, message = self.network.status()
        return [runtime_ready, Condition("NetworkReady", ready, reason, message)]

    def start(self) -> None:
        # orphaned monitors and exec'd processes come to pycri, which reaps the ones it knows
        LinuxSyscall().prctl(PR_SET_CHILD_SUBREAPER, 1)
        self.reaper.start()  # and the orphans that escaped containers, once nobody else waits for them
        self.images.recover()
        self.containers.recover()
        self.sandboxes.recover()
        self.streams.start()
        socket_path = self.config.socket_path
        socket_path.parent.mkdir(parents=True, exist_ok=True)
        socket_path.unlink(missing_ok=True)
        server = grpc.server(
            # the quick calls run in gRPC's polling thread, the others in a pool (call_executor)
            CallExecutor(QUICK_METHODS, max_workers=WORKERS, thread_name_prefix="cri"),
            interceptors=[self.calls],
            options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                     ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)],
        )
        self.runtime = RuntimeServicer(self.config.cgroup_driver, to_toml(self.config), self.conditions,
                                       self.sandboxes, self.containers, self.images, self.streams)
        api_pb2_grpc.add_RuntimeServiceServicer_to_server(self.runtime, server)
        api_pb2_grpc.add_ImageServiceServicer_to_server(
            ImageServicer(self.images, self.containers.image_users), server)
        server.add_generic_rpc_handlers((admin_servicer.handler(self.images),))  # pycri images import|tag
        server.add_insecure_port(f"unix:{socket_path}")
        server.start()
        self.exit_watcher.start()
        os.chown(socket_path, 0, 0)
        os.chmod(socket_path, SOCKET_MODE)
        self.server = server
        log.info("pycri serving", socket=str(socket_path), root=str(self.config.root), pid=os.getpid())

    def stop(self, grace: float = 5.0) -> None:
        if self.runtime is not None:
            self.runtime.container_events.close()  # event streams end at once, not after the grace period
        if self.server is not None:
            self.server.stop(grace).wait()  # calls still running now are cancelled; their handlers may not be done
        idle = self.calls.wait_idle(CALLS_DONE_SECONDS)
        self.exit_watcher.stop()
        self.streams.stop()
        self.reaper.stop()
        self.config.socket_path.unlink(missing_ok=True)
        if idle:
            self.db.close()
        else:  # a handler still writes: leave the database to the process's exit (SQLite's WAL keeps it whole)
            log.warning("calls still running at stop; the database is left open", seconds=CALLS_DONE_SECONDS)
        log.info("pycri stopped")
        self._stopped.set()

    def run_until_signalled(self) -> None:
        stop_requested = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop_requested.set())
        self.start()
        stop_requested.wait()
        self.stop()


# Modes of what pycri keeps on disk (CVE-2021-41103, CVE-2024-25621): nothing below the root or
# the state directory is for other host users. The root and the state directory themselves,
# and the directories of containers and sandboxes, stay searchable (x, not r) because the root
# of a pod with a user namespace (a mapped, unprivileged host id) must reach its rootfs, its
# pod files and the runtime's fifo before pivot_root; below them, each container's rootfs and
# each pod's files are 0700, or 0710 for the group of that pod's root (containers/rootfs.py,
# sandbox/), and bundles 0700.
ROOT_ONLY = 0o700
SEARCH_ONLY = 0o711
STORE_MODES = {  # relative to the root
    ".": SEARCH_ONLY, "images": ROOT_ONLY, "images/content": ROOT_ONLY, "images/layers": ROOT_ONLY,
    "containers": SEARCH_ONLY, "sandboxes": SEARCH_ONLY, "cni": ROOT_ONLY,
}
STATE_MODES = {".": SEARCH_ONLY, "exits": ROOT_ONLY, "runtime": SEARCH_ONLY}
PRIVATE_FILES = ("pycri.db", "pycri.db-wal", "pycri.db-shm")


def harden_store(root: Path, state: Path) -> None:
    """Create the root and state directories with their modes, and tighten what an older
    pycri (or an administrator) left looser: modes are set on every start."""
    for base, modes in ((root, STORE_MODES), (state, STATE_MODES)):
        base.mkdir(parents=True, exist_ok=True, mode=SEARCH_ONLY)
        for relative, mode in modes.items():
            path = base / relative
            path.mkdir(parents=True, exist_ok=True, mode=mode)
            os.chmod(path, stat.S_IMODE(os.stat(path).st_mode) & mode)  # tightened, never loosened
    for name in PRIVATE_FILES:
        with contextlib.suppress(FileNotFoundError):
            os.chmod(root / name, 0o600)
    # what an older pycri made for each container and pod: the bundle root-only; the rootfs and
    # the pod files root-only too, or searchable by the group of the pod's root when it is a
    # mapped id (a pod with a user namespace: its rootfs's upper dir and its files are its root's)
    for entry in _directories(root / "containers"):
        if (entry / "bundle").is_dir():
            os.chmod(entry / "bundle", ROOT_ONLY)
        if (entry / "rootfs").is_dir():
            _private_to(entry / "rootfs", entry / "rootfs" / "upper")
    for entry in _directories(root / "sandboxes"):
        _private_to(entry, entry / "hosts")


def _directories(path: Path) -> list[Path]:
    return [Path(e.path) for e in os.scandir(path) if e.is_dir(follow_symlinks=False)]


def _private_to(directory: Path, owned: Path) -> None:
    """0700, or 0710 for the group of `owned` when that is not root's."""
    try:
        gid = os.lstat(owned).st_gid
    except FileNotFoundError:
        gid = 0
    if gid:
        os.chown(directory, 0, gid)
    os.chmod(directory, 0o710 if gid else ROOT_ONLY)


def check_cgroup_driver(driver: str, reachable: Callable[[], str] | None = None) -> None:
    """With the systemd driver, systemd must be the init and answer on D-Bus: otherwise pycri does
    not start (SystemExit with the reason), rather than fail the first pod."""
    if driver != "systemd":
        return
    from pycri.cgroups import systemd_dbus

    try:
        version = (reachable or systemd_dbus.check_reachable)()
    except systemd_dbus.SystemdError as e:
        log.error("the systemd cgroup driver needs systemd", error=str(e))
        raise SystemExit(f'pycri: [cgroup] driver = "systemd" but systemd cannot be used: {e}. '
                         'Use driver = "cgroupfs" on a host without systemd.') from None
    log.info("cgroup driver systemd", systemd=version)


def runtime_handlers(config: Config) -> dict[str, ConmonHandler]:
    """One conmon-monitored handler per configured runtime (path "" is pycri's own runtime, whose
    start runs in pycri's process)."""
    launcher = str(Path(sys.executable).parent / "pycri-runtime")
    return {
        name: ConmonHandler(name, path or launcher, config.state / "runtime" / name, config.runtime.conmon,
                            systemd_cgroup=config.cgroup_driver == "systemd", own_runtime=not path)
        for name, path in config.runtime.handlers.items()
    }


def write_pid_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{os.getpid()}\n")
