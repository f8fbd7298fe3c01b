"""The container service: what criserver calls for containers.

A container's files live in <root>/<id>/: rootfs/ (overlay upper, work, merged),
bundle/ (config.json, the handler's pid files and sockets), persist/ (what the handler's
monitor keeps: the exit code, an oom mark); its exit file is <exits>/<id>. Its row is
written as `creating` before anything is made, so a crash half-way is found and undone by
`recover()`; a failure half-way is undone at once.

Never lose, never leak a container: removing one (RemoveContainer, or undoing a failed
create) does every step even when one before failed (each failure logged), so the rootfs and
image volumes are unmounted even when the runtime's delete fails. The row goes only when every
step succeeded: while the runtime may still have the container, or something stays mounted,
its row and its directory stay (never rm -rf through a mount), and the first failure is
raised. A failed create's `creating` row that stays (a leftover: no create of this process is
under way for it, `_creating`) is tried again by RemovePodSandbox of its pod
(`remove_pod_containers`, which fails while one stays), by the exit watcher's periodic
`sweep()`, and by `recover()` at start-up.

Exits: a created or running container's monitor is watched (`MonitorWatches`, a pidfd per
monitor). Until its monitor ends or writes an exit file, the container runs, and nobody asks
its handler: List looks at all of them with one listdir of the exit directory and one
epoll_wait, Status with one stat and one poll. A container that cannot be watched (no
pidfds, too many open files) is asked about as before, on every look.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import re
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from pycri import cgroups

from pycri.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, RuntimeFailed
from pycri.common.fs import Trash, Usage, usage
from pycri.common.lifecycle import CREATED as CREATED_EVENT, DELETED, STARTED, STOPPED, LifecycleEvent, Publisher
from pycri.containers import image_volumes, rootfs
from pycri.containers.handler import ContainerPaths, Creation, ExecResult, ExitStatus, RuntimeHandler, StreamIO
from pycri.containers.image_volumes import ImageVolume
from pycri.containers.monitors import MonitorWatches
from pycri.containers.oci_config import IdMapping, Resources, Spec, User
from pycri.containers.records import CREATED, CREATING, EXITED, RUNNING, ContainerMount, ContainerRecord, ContainerTable
from pycri.containers.runtime_deletes import RuntimeDeletes
from pycri.kernel.syscall import Syscall
from pycri.store.db import Database

log = structlog.get_logger("containers")
EXIT_POLL_SECONDS = 0.05
# A container whose process has died is "not running" to its runtime at once, and exited to pycri
# once its monitor has reaped it and written the exit file: a signal that fails in between waits
# (waking when the monitor ends) this long for the exit before stop reports the failure.
EXIT_RECORD_SECONDS = 5.0
KILL_WAIT_SECONDS = 10.0
# how long a pod's removal waits for a create under way in it (then FailedPrecondition: kubelet retries)
CREATE_WAIT_SECONDS = 10.0
# a container its runtime could not create, found at start (CreateContainer returns before the
# runtime has made it): exited, with containerd's reason and exit code for a task that did not start
START_ERROR, START_ERROR_EXIT_CODE = "StartError", 128
WRITABLE_USAGE_TTL_NS = 10 * 10**9  # how long a walk of a writable layer's disk use is kept


@dataclass(frozen=True)
class ContainerStats:
    timestamp: int
    cgroup: cgroups.Stats | None  # None when the container is not running
    writable_bytes: int
    writable_inodes: int
    processes: cgroups.ProcessStats | None = None  # asked for with stats(processes=True)


@dataclass
class _Config:
    """A container's config.json as pycri wrote it: parsed, and its JSON text."""

    spec: Spec
    text: str  # json.dumps(spec.to_dict())


class _Pending:
    """A created container whose runtime's creation is under way (ContainerService._settle)."""

    def __init__(self, creation: Creation) -> None:
        self.creation = creation
        self.lock = threading.Lock()  # held by the one that waits for it; the others then find it settled
        self.settled = False
        self.error: Exception | None = None


@dataclass(frozen=True)
class NewContainer:
    """What a container is made of, already translated from the CRI request."""

    pod_id: str
    name: str
    attempt: int
    handler: str
    image: str
    image_id: str
    image_ref: str
    layers: list[Path]  # bottom first
    spec: Spec  # the OCI runtime spec; create sets root.path and the image volumes' sources
    log_path: str
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    mounts: list[ContainerMount] = field(default_factory=list)  # as ContainerStatus reports them
    stdin: bool = False
    stdin_once: bool = False
    tty: bool = False
    stop_signal: str = ""  # the image's StopSignal
    user: User | None = None  # process.user of the spec, as ContainerStatus reports it
    image_volumes: list[ImageVolume] = field(default_factory=list)


class ContainerService:
    def __init__(self, db: Database, root: Path, exits: Path, handlers: dict[str, RuntimeHandler],
                 default_handler: str, syscall: Syscall) -> None:
        self.root = root
        self.exits = exits
        self.handlers = handlers
        self.default_handler = default_handler
        self.syscall = syscall
        self.kill_wait = KILL_WAIT_SECONDS  # how long stop waits for a container to die of SIGKILL
        self.exit_record_wait = EXIT_RECORD_SECONDS  # how long a failed signal waits for an exit to be recorded
        self.table = ContainerTable(db)
        self.db = db
        # created, started, stopped (also when noticed on its own exit) and deleted, in order per container
        self.events = Publisher()
        # held across a state change and its event, so a container's events go out in order
        self._transition = threading.RLock()
        self._starting: set[str] = set()  # ids whose start is under way: their exit is start's to notice
        # id -> pod id of the creates under way in this process (their `creating` rows are no
        # leftovers), under the lock; `_creates_done` is notified as each ends
        self._creating: dict[str, str] = {}
        self._creates_done = threading.Condition(self._transition)
        # id -> the runtime's creation of a created container still under way (`_settle`)
        self._pending: dict[str, _Pending] = {}
        self.create_wait = CREATE_WAIT_SECONDS
        self._exits_seen: set[str] = set()  # names in the exit directory at the last look (notice_exits)
        self.monitors = MonitorWatches()  # the live monitors of created and running containers
        self.runtime_deletes = RuntimeDeletes()  # exited containers are deleted from their runtime at once
        # config.json of each container, parsed: pycri alone writes it (create, update_resources),
        # and keeps this copy then; read once after a restart (under the lock, as it is written)
        self._configs: dict[str, _Config] = {}
        self._managers: dict[str, cgroups.CgroupManager] = {}  # container id -> its cgroup's manager (_cgroup)
        self._usage: dict[str, tuple[int, Usage]] = {}  # container id -> (when, its writable layer's use)
        self._configs_lock = threading.Lock()
        # (an id and its log path never change, and pathlib costs ~20 us a look)
        self._paths = functools.lru_cache(maxsize=8192)(self._make_paths)
        root.mkdir(parents=True, exist_ok=True)
        exits.mkdir(parents=True, exist_ok=True)
        # a removed container's files go at once, and are deleted in the background (as containerd's
        # snapshots are by its garbage collection): beside the root, whose entries are containers
        self.trash = Trash(root.parent / f".{root.name}-trash", "container-remover")

    # -- paths --------------------------------------------------------------

    def paths(self, record: ContainerRecord) -> ContainerPaths:
        return self._paths(record.id, record.log_path)

    def _make_paths(self, container_id: str, log_path: str) -> ContainerPaths:
        base = self.root / container_id
        return ContainerPaths(
            bundle=base / "bundle", persist=base / "persist", exit_file=self.exits / container_id,
            log_path=log_path,
        )

    def handler_name(self, name: str) -> str:
        """The configured handler `name` stands for ("" is the default one)."""
        name = name or self.default_handler
        if name not in self.handlers:
            raise InvalidArgument(f"no runtime handler {name!r} is configured (have: {', '.join(sorted(self.handlers))})")
        return name

    def handler(self, name: str) -> RuntimeHandler:
        return self.handlers[self.handler_name(name)]

    def _watcher(self, record: ContainerRecord) -> RuntimeHandler:
        """The handler whose monitor watches `record`: its own, or the default one when its
        handler has left the configuration (a monitor outlives pycri's configuration)."""
        return self.handlers.get(record.handler) or self.handlers[self.default_handler]

    # -- life cycle ---------------------------------------------------------

    def create(self, new: NewContainer) -> ContainerRecord:
        runtime = self.handler(new.handler)
        if self.table.by_name(new.pod_id, new.name, new.attempt):
            raise AlreadyExists(f"a container named {new.name!r} (attempt {new.attempt}) already exists in pod {new.pod_id}")
        record = ContainerRecord(
            id=uuid.uuid4().hex + uuid.uuid4().hex, pod_id=new.pod_id, name=new.name, attempt=new.attempt,
            state=CREATING, handler=new.handler, image=new.image, image_id=new.image_id, image_ref=new.image_ref,
            log_path=new.log_path, created_at=time.time_ns(), labels=new.labels, annotations=new.annotations,
            mounts=new.mounts, stdin=new.stdin, stdin_once=new.stdin_once, tty=new.tty,
            stop_signal=new.stop_signal, user=new.user,
            # the images it mounts as volumes, recorded before they are mounted (`image_volume_users`)
            image_volumes=sorted({v.image_id for v in new.image_volumes}),
        )
        with self._transition:  # (before the row exists: it is never taken for a leftover)
            self._creating[record.id] = record.pod_id
        try:
            with self.db.transaction() as tx:
                self.table.insert(tx, record)
            self._make(record, new, runtime)
        finally:
            with self._transition:
                del self._creating[record.id]
                self._creates_done.notify_all()
        pending = self._pending.get(record.id)
        if pending is not None and pending.creation.ready():
            self._settle_quietly(record.id)
        elif pending is not None:  # (what start, stop or remove wait for, if they come first)
            threading.Thread(target=self._settle_quietly, args=(record.id,), name="settle-create", daemon=True).start()
        log.info("container created", container_id=record.id, pod_sandbox_id=record.pod_id)
        return self.table.get(record.id) or record

    def _make(self, record: ContainerRecord, new: NewContainer, runtime: RuntimeHandler) -> None:
        """Make the container of the `creating` row `record`; on a failure, undo it (what cannot
        be undone stays, with the row: a leftover) and raise the failure."""
        log_existed = bool(record.log_path) and os.path.lexists(record.log_path)
        creation: Creation | None = None
        try:
            paths = self.paths(record)
            # searchable, not listable: a user-namespaced pod's root passes through to its rootfs
            (self.root / record.id).mkdir(mode=0o711, exist_ok=True)
            merged = rootfs.mount(self.syscall, new.layers, self.root / record.id / "rootfs", _idmap(new.spec))
            paths.bundle.mkdir(parents=True, exist_ok=True, mode=0o700)  # config.json holds the env
            spec = dataclasses.replace(new.spec, root=dataclasses.replace(new.spec.root, path=str(merged)))
            if new.image_volumes:
                sources = image_volumes.mount(self.syscall, new.image_volumes, self.root / record.id / "image-volumes")
                spec.mounts = image_volumes.bind_sources(spec.mounts, sources)
            text = json.dumps(spec.to_dict())
            with self._configs_lock:
                (paths.bundle / "config.json").write_text(text)
                self._configs[record.id] = _Config(spec, text)
            if record.log_path:
                Path(record.log_path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            creation = runtime.begin_create(record.id, paths, stdin=record.stdin, stdin_once=record.stdin_once,
                                            tty=spec.process.terminal)
            with self._transition:
                record.state = CREATED
                with self.db.transaction() as tx:
                    self.table.update(tx, record)
                self._pending[record.id] = _Pending(creation)
                self._publish(CREATED_EVENT, record)
        except BaseException:
            if creation is not None:  # (what the runtime makes meanwhile is deleted with the rest)
                with contextlib.suppress(Exception):
                    creation.wait()
                with self._transition:
                    self._pending.pop(record.id, None)
            with contextlib.suppress(Exception):  # (logged by _destroy; the create's failure is the one to report)
                self._destroy(record)
            if record.log_path and not log_existed:  # kubelet counts restarts by the log files it finds
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(record.log_path)
            raise

    def start(self, container_id: str) -> ContainerRecord:
        record = self.get(container_id)
        if record.id in self._pending:
            self._settle(record.id)  # (its failure is the start's: as containerd's StartError)
            record = self.get(record.id)
        if record.state == EXITED and record.reason == START_ERROR:
            raise RuntimeFailed(record.message)
        if record.state != CREATED:
            raise FailedPrecondition(f"container {record.id} is {record.state}, not created")
        with self._transition:
            self._starting.add(record.id)
        try:
            self.handler(record.handler).start(record.id)
            with self._transition:
                record.state, record.started_at = RUNNING, time.time_ns()
                with self.db.transaction() as tx:
                    self.table.update(tx, record)
                self._publish(STARTED, record)
        finally:
            with self._transition:
                self._starting.discard(record.id)
        return self.refresh(record)

    def stop(self, container_id: str, timeout: float) -> ContainerRecord:
        """Stop signal, then SIGKILL after `timeout` seconds; stopping a stopped container succeeds."""
        record = self._settled(self.get(container_id))
        if record.state not in (CREATED, RUNNING):
            return record
        runtime = self.handler(record.handler)
        if timeout > 0 and record.state == RUNNING:
            self._signal(runtime, record, self._stop_signal(record))
            if self._wait_exit(record, timeout):
                return self._stopped(record)
        self._signal(runtime, record, signal.SIGKILL)
        if not self._wait_exit(record, self.kill_wait):
            raise FailedPrecondition(f"container {record.id} did not exit {self.kill_wait:g} s after SIGKILL")
        return self._stopped(record)

    def _stopped(self, record: ContainerRecord) -> ContainerRecord:
        """A container stop saw exit, once it is gone from its runtime too (as containerd's
        StopContainer: then RemoveContainer has only files and the row left to remove)."""
        self.runtime_deletes.wait(record.id)
        return self.refresh(record)

    def remove(self, container_id: str) -> None:
        """Remove the container and everything it holds; removing an absent container succeeds."""
        record = self.table.get(container_id)
        if record is None:
            return
        record = self._settled(record)
        if self.refresh(record).state in (CREATED, RUNNING):
            self.stop(record.id, 0)
        with self._transition:
            self._destroy(record)
            self._publish(DELETED, record)
        log.info("container removed", container_id=record.id, pod_sandbox_id=record.pod_id)

    def remove_pod_containers(self, pod_id: str) -> None:
        """Remove every container of the pod, the leftovers of its failed creates too, before the
        pod goes. A create under way in it is waited for (up to `create_wait` seconds; what it
        made is then removed too), else FailedPrecondition: containerd's RemovePodSandbox does
        not see a create under way (its container is stored at the end) and would let it outlive
        the pod. Each container is tried; the first failure is raised (the pod must stay)."""
        with self._transition:
            if not self._creates_done.wait_for(lambda: pod_id not in self._creating.values(), self.create_wait):
                raise FailedPrecondition(f"a container is being created in pod {pod_id}: try again")
        first: Exception | None = None
        for record in self.list(pod_id):
            try:
                self.remove(record.id)
            except Exception as exc:
                first = first or exc
        try:
            self.remove_leftovers(pod_id)
        except Exception as exc:
            first = first or exc
        if first is not None:
            raise first
        with self._transition:  # (one started meanwhile: the pod is not ready, so it fails, or it is)
            if pod_id in self._creating.values():
                raise FailedPrecondition(f"a container is being created in pod {pod_id}: try again")

    def leftovers(self, pod_id: str | None = None) -> list[ContainerRecord]:
        """The `creating` rows (of one pod) that no create of this process is making: what a
        failed create could not undo, or a crash left."""
        with self._transition:
            return [r for r in self.table.all(pod_id) if r.state == CREATING and r.id not in self._creating]

    def remove_leftovers(self, pod_id: str | None = None) -> list[str]:
        """Try again to remove the leftovers (of one pod); the ids removed. Each is tried; the
        first failure is raised once all have been (those that failed stay)."""
        removed: list[str] = []
        first: Exception | None = None
        for record in self.leftovers(pod_id):
            log.info("removing a container a failed create or a crash left half-made", container_id=record.id,
                     pod_sandbox_id=record.pod_id)
            try:
                self._destroy(record)
            except Exception as exc:
                first = first or exc
            else:
                removed.append(record.id)
        if first is not None:
            raise first
        return removed

    def _exec_process(self, container_id: str, command: list[str], terminal: bool) -> tuple[ContainerRecord, dict[str, Any]]:
        record = self.get(container_id)
        if not command:
            raise InvalidArgument("exec: cmd is required")
        if record.state != RUNNING:
            raise FailedPrecondition(f"container {record.id} is not running ({record.state})")
        process = dataclasses.replace(self.spec(record).process, args=command, terminal=terminal)
        if terminal:
            process.env = [e for e in process.env if not e.startswith("TERM=")] + ["TERM=xterm"]
        return record, process.to_dict()

    def exec_sync(self, container_id: str, command: list[str], timeout: float) -> ExecResult:
        record, process = self._exec_process(container_id, command, False)
        return self.handler(record.handler).exec_sync(record.id, process, timeout)

    def exec_stream(self, container_id: str, command: list[str], tty: bool, io: StreamIO) -> int:
        """Run a command in the container with its I/O streamed; return its exit code."""
        record, process = self._exec_process(container_id, command, tty)
        return self.handler(record.handler).exec_stream(record.id, process, io)

    def attach(self, container_id: str, io: StreamIO) -> None:
        record = self.get(container_id)
        if record.state != RUNNING:
            raise FailedPrecondition(f"container {record.id} is not running ({record.state})")
        self._watcher(record).attach(record.id, self.paths(record), io, record.tty)

    def update_resources(self, container_id: str, resources: Resources) -> ContainerRecord:
        """Apply new cgroup limits to a running or created container and keep them in its spec."""
        record = self._settled(self.get(container_id))
        if record.state not in (CREATED, RUNNING):
            raise FailedPrecondition(f"container {record.id} is {record.state}: its resources cannot change")
        self.handler(record.handler).update(record.id, resources.to_dict())
        config = self.paths(record).bundle / "config.json"
        with self._configs_lock:
            spec = Spec.from_dict(json.loads(config.read_text()))
            spec.linux.resources = spec.linux.resources.merged(resources)
            text = json.dumps(spec.to_dict())
            config.write_text(text)
            self._configs[record.id] = _Config(spec, text)
        return record

    def reopen_log(self, container_id: str) -> None:
        """Ask the monitor to reopen the log file (after kubelet rotated it)."""
        record = self.get(container_id)
        if record.state != RUNNING:
            raise FailedPrecondition(f"container {record.id} is not running")
        self._watcher(record).reopen_log(record.id, self.paths(record))

    def spec(self, record: ContainerRecord) -> Spec:
        """The container's config.json (ValueError if it is not one pycri wrote; OSError if
        there is none), parsed once and shared: callers must not change it."""
        return self._config(record).spec

    def spec_json(self, record: ContainerRecord) -> str:
        """The container's config.json as JSON text, `json.dumps(self.spec(record).to_dict())`."""
        return self._config(record).text

    def _config(self, record: ContainerRecord) -> _Config:
        config = self._configs.get(record.id)
        if config is not None:
            return config
        with self._configs_lock:  # (written under it: never a half-written file, nor a stale copy kept)
            config = self._configs.get(record.id)
            if config is None:
                spec = Spec.from_dict(json.loads((self.paths(record).bundle / "config.json").read_text()))
                config = _Config(spec, json.dumps(spec.to_dict()))
                self._configs[record.id] = config
            return config

    def stats(self, record: ContainerRecord, processes: bool = False, brief: bool = False) -> ContainerStats:
        """CPU and memory from the container's cgroup, disk from its writable layer; with
        `processes`, also its processes and their open files (a walk through /proc); `brief`:
        only the cgroup figures CRI's ContainerStats carries (CgroupManager.usage)."""
        now = time.time_ns()
        upper = self._writable_usage(record, now)
        if record.state not in (CREATED, RUNNING):
            return ContainerStats(now, None, upper.bytes, upper.inodes)
        try:
            manager = self._cgroup(record)
            cgroup = manager.usage() if brief else manager.stats()
            procs = manager.process_stats() if processes else None
        except (OSError, ValueError, cgroups.CgroupError):
            cgroup, procs = None, None
        return ContainerStats(now, cgroup, upper.bytes, upper.inodes, procs)

    def _cgroup(self, record: ContainerRecord) -> cgroups.CgroupManager:
        """The manager of the container's cgroup, made once per container (its path and the
        host's hierarchies stay what they were at create): kubelet's stats ask about every
        container every 10 s, and finding the hierarchies again each time was a third of that."""
        manager = self._managers.get(record.id)
        if manager is None:
            manager = cgroups.new_manager(self.spec(record).linux.cgroups_path, record.id)
            with self._configs_lock:  # kept only while the container exists (_destroy drops it)
                if self.table.get(record.id) is not None:
                    manager.keep_files()  # its usage files stay open while it runs (cgroups/kept_files.py)
                    self._managers[record.id] = manager
        return manager

    def _writable_usage(self, record: ContainerRecord, now: int) -> Usage:
        """The writable layer's disk use, walked again when the last walk is WRITABLE_USAGE_TTL_NS
        old (containerd's CRI refreshes its snapshots' usage every 10 s the same way): a stats
        call of kubelet's does not walk every container's files every time."""
        known = self._usage.get(record.id)
        if known is not None and now - known[0] < WRITABLE_USAGE_TTL_NS:
            return known[1]
        upper = usage(self.root / record.id / "rootfs" / "upper")
        with self._configs_lock:  # kept only while the container exists (_destroy drops it)
            if self.table.get(record.id) is not None:
                self._usage[record.id] = (now, upper)
        return upper

    # -- creations under way ------------------------------------------------

    def _settle(self, container_id: str) -> None:
        """Wait for the runtime's creation of the container, if it is under way, and bring its
        row up to date: its pid and watched monitor, or, when the runtime could not create it,
        exited with StartError (exit code 128), as containerd marks a container whose task did
        not start, deleted from its runtime and unmounted as an exited one. That failure is
        raised to the callers that waited for it (start reports it)."""
        pending = self._pending.get(container_id)
        if pending is None:
            return
        with pending.lock:
            if not pending.settled:
                try:
                    pid = pending.creation.wait()
                except Exception as exc:
                    pending.error = exc
                    self._creation_failed(container_id, exc)
                else:
                    self._created(container_id, pid)
                finally:
                    pending.settled = True
                    with self._transition:
                        self._pending.pop(container_id, None)
        if pending.error is not None:
            raise pending.error

    def _settle_quietly(self, container_id: str) -> None:
        """`_settle`, its failure left in the row (StartError) and the log."""
        with contextlib.suppress(Exception):
            self._settle(container_id)

    def _settled(self, record: ContainerRecord) -> ContainerRecord:
        """`record` once its creation under way, if any, has settled (the row as it is then)."""
        if record.id not in self._pending:
            return record
        self._settle_quietly(record.id)
        return self.table.get(record.id) or record

    def _created(self, container_id: str, pid: int) -> None:
        with self._transition:
            record = self.table.get(container_id)
            if record is None:
                return
            record.pid = pid
            with self.db.transaction() as tx:
                self.table.update(tx, record)
        self._watch(record)

    def _creation_failed(self, container_id: str, error: Exception) -> None:
        log.warning("the runtime could not create a container", container_id=container_id, error=str(error))
        with self._transition:
            record = self.table.get(container_id)
            if record is None or record.state != CREATED:
                return
            record.state, record.exit_code, record.reason = EXITED, START_ERROR_EXIT_CODE, START_ERROR
            record.message, record.finished_at = str(error), time.time_ns()
            with self.db.transaction() as tx:
                self.table.update(tx, record)
            self._publish(STOPPED, record)
        runtime = self.handlers.get(record.handler)
        if runtime is not None:
            self.runtime_deletes.start(record.id, functools.partial(self._delete_exited, runtime, record.id))

    # -- queries ------------------------------------------------------------

    def get(self, container_id: str, wait: bool = True) -> ContainerRecord:
        """The container with this id (or unique id prefix), with its state refreshed (`refresh`)."""
        record = self.table.get(container_id)
        if record is None and container_id:
            matches = self.table.with_prefix(container_id)
            if len(matches) > 1:
                raise InvalidArgument(f"container id prefix {container_id!r} is ambiguous")
            record = matches[0] if matches else None
        if record is None or record.state == CREATING:
            raise NotFound(f"container {container_id!r} not found")
        return self.refresh(record, wait)

    def image_volume_users(self, image_id: str) -> list[str]:
        """The containers (half-made ones too) that mount the image `image_id` as a volume."""
        return [r.id for r in self.table.all() if image_id in r.image_volumes]

    def image_users(self, image_id: str) -> list[str]:
        """The containers (half-made and exited ones too) made of the image `image_id` or
        mounting it as a volume: until they are removed, its layers must stay."""
        return [r.id for r in self.table.all() if r.image_id == image_id or image_id in r.image_volumes]

    def find(self, container_id: str) -> ContainerRecord | None:
        try:
            return self.get(container_id)
        except NotFound:
            return None

    def list(self, pod_id: str | None = None, keep: Callable[[ContainerRecord], bool] = lambda r: True,
             wait: bool = True) -> list[ContainerRecord]:
        """The containers (of one pod) that `keep` keeps, oldest first, their states up to date
        (`wait`: as `refresh`)."""
        suspects = self._suspects()
        return [self._check_exit(r, wait) if r.state in (CREATED, RUNNING) and (
                    r.id in suspects or not self.monitors.watching(r.id)) else r
                for r in self.table.all(pod_id) if r.state != CREATING and keep(r)]

    def refresh(self, record: ContainerRecord, wait: bool = True) -> ContainerRecord:
        """Bring a created or running container's state up to date from the exit its monitor
        recorded. Without `wait`, never wait for a container change under way (the lock
        `_transition`): an exit found meanwhile is left for the exit watcher (or that change)
        to record, and the container shows its last state until then. The status and List
        calls, which may run in gRPC's polling thread (criserver/call_executor.py), refresh so."""
        if record.state not in (CREATED, RUNNING) or self._quiet(record):
            return record
        return self._check_exit(record, wait)

    def _quiet(self, record: ContainerRecord) -> bool:
        """Whether the container's watched monitor still lives and has written no exit file
        (then it runs: its handler need not be asked)."""
        if not self.monitors.watching(record.id) or os.path.lexists(self.paths(record).exit_file):
            return False
        return self.monitors.has_ended(record.id) is False

    def _suspects(self) -> set[str]:
        """Ids of the containers that may have exited: those with an exit file, and those
        whose watched monitor has ended. (Others that are watched still run.)"""
        ended = self.monitors.ended()
        try:
            return ended | set(os.listdir(self.exits))
        except FileNotFoundError:
            return ended

    def _watch(self, record: ContainerRecord) -> None:
        """Watch the container's monitor, if it can be (and is not yet) watched."""
        if self.monitors.watching(record.id) or self.monitors.full():
            return
        fd = self._watcher(record).watch(record.id, self.paths(record))
        if fd is not None:
            self.monitors.add(record.id, fd)

    def _check_exit(self, record: ContainerRecord, wait: bool = True) -> ContainerRecord:
        """`refresh`, asking the handler (and watching the monitor from now on if it lives).
        A container whose creation is under way is created: `_settle` says what became of it."""
        if record.id in self._pending:
            return record
        self._watch(record)  # first: an end after the handler's answer below makes it readable
        status = self._watcher(record).exit_status(record.id, self.paths(record))
        if status is None:
            return record
        if not self._transition.acquire(blocking=wait):
            return record  # a change under way: the exit watcher records this exit (its monitor has ended)
        try:
            if record.id in self._starting:  # start notices it once the container counts as started
                return record
            self.monitors.discard(record.id)
            reason, message = exit_reason(status)
            record.state, record.exit_code, record.reason, record.message = EXITED, status.code, reason, message
            record.finished_at = status.finished_at
            if not record.started_at and status.code != 0:
                record.started_at = 0
            current = self.table.get(record.id)  # another thread may have noticed the exit first
            with self.db.transaction() as tx:
                self.table.update(tx, record)
            if current is not None and current.state in (CREATED, RUNNING):
                manager = self._managers.get(record.id)
                if manager is not None:  # an exited container's stats read no cgroup file
                    manager.close_files()
                self._publish(STOPPED, record)
                runtime = self.handlers.get(record.handler)
                if runtime is not None:
                    self.runtime_deletes.start(record.id, functools.partial(self._delete_exited, runtime, record.id))
        finally:
            self._transition.release()
        return record

    def notice_exits(self) -> list[str]:
        """Bring the containers whose monitor has written an exit file since the last look, or
        has ended, up to date (publishing their stopped events); the ids found. One listdir
        and one epoll_wait when none has."""
        ended = self.monitors.ended()
        try:
            names = set(os.listdir(self.exits))
        except FileNotFoundError:
            names = set()
        new, self._exits_seen = names - self._exits_seen, names
        noticed = []
        for name in sorted(new | ended):  # names of other files (a monitor's temporary one) find no container
            record = self.table.get(name)
            if record is None or record.state not in (CREATED, RUNNING):
                if record is None or record.state != CREATING:  # a watch the container outlived (a race with remove)
                    self.monitors.discard(name)
                continue
            if self._check_exit(record).state == EXITED:
                noticed.append(name)
            else:  # the file is not complete yet, or its start is under way: look again next time
                self._exits_seen.discard(name)
        return noticed

    def wait_exits(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for a watched monitor to end (at once if one has), or
        for `stop_waiting`."""
        self.monitors.ended(timeout)

    def stop_waiting(self) -> None:
        """End a `wait_exits` now."""
        self.monitors.wake()

    def sweep(self) -> list[str]:
        """Ask the handlers about every created or running container but those whose watched
        monitor lives and wrote no exit file (what watching may have missed: a monitor that died
        unwatched), publishing the stopped events of those that have exited; the ids found.
        Then try again to remove the leftovers of failed creates (a failure is logged: they
        stay for the next sweep)."""
        exited = [r.id for r in self.table.all() if r.state in (CREATED, RUNNING) and self.refresh(r).state == EXITED]
        try:
            self.remove_leftovers()
        except Exception as exc:
            log.warning("a container a failed create left stays until the next sweep", error=str(exc))
        return exited

    # -- start-up -----------------------------------------------------------

    def recover(self) -> None:
        """Undo half-made containers; bring the state of the others up to date."""
        for record in self.table.all():
            if record.state == CREATING:
                log.warning("removing a container a crash or a failed create left half-made", container_id=record.id)
                try:
                    self._destroy(record)
                except Exception as exc:  # (each step's failure is logged) the sweep tries again
                    log.warning("a half-made container stays until the next sweep", container_id=record.id,
                                error=str(exc))
            else:
                self.refresh(record)  # (watches the monitors that live)

    # -- helpers ------------------------------------------------------------

    def _delete_exited(self, runtime: RuntimeHandler, container_id: str) -> None:
        """What an exit lets go of at once, as containerd's task delete: the container in its
        runtime, then its rootfs and image volume mounts (their files stay until remove), those
        even when the delete failed (as `_destroy` does; remove tries the delete again)."""
        try:
            runtime.delete(container_id, force=True)
        finally:
            self._unmount(container_id)

    def _unmount(self, container_id: str) -> None:
        rootfs.unmount(self.syscall, self.root / container_id / "rootfs" / "merged")
        image_volumes.unmount_all(self.syscall, self.root / container_id / "image-volumes")

    def _publish(self, kind: str, record: ContainerRecord) -> None:
        self.events.publish(LifecycleEvent(kind, record.id, record.pod_id, time.time_ns()))

    def _destroy(self, record: ContainerRecord) -> None:
        """Undo everything the container holds, each step even when one before failed (its
        failure logged). Its files and its row go only when every step before succeeded (the
        runtime has deleted it, nothing of it is mounted); else they stay for a retry, and the
        first failure is raised. Every step may run again: a retry redoes them all."""
        failures: list[Exception] = []

        def step(name: str, action: Callable[[], object]) -> bool:
            try:
                action()
            except Exception as exc:
                log.warning("a step of removing a container failed", container_id=record.id, step=name,
                            error=f"{type(exc).__name__}: {exc}")
                failures.append(exc)
                return False
            return True

        self.monitors.discard(record.id)
        runtime = self.handlers.get(record.handler)
        paths = self.paths(record)
        # (at once unless its exit was noticed since pycri started, when it was deleted then)
        step("runtime delete", functools.partial(
            self.runtime_deletes.finish, record.id,
            functools.partial(runtime.delete, record.id, force=True) if runtime is not None else lambda: None))
        step("release monitor", functools.partial(self._watcher(record).release, record.id, paths))
        # (unless its exit did; also when the delete failed: a container that still lives has its own mounts)
        directory = self.root / record.id
        step("unmount rootfs", functools.partial(rootfs.unmount, self.syscall, directory / "rootfs" / "merged"))
        step("unmount image volumes", functools.partial(image_volumes.unmount_all, self.syscall,
                                                        directory / "image-volumes"))
        if failures:  # its files stay: the runtime's delete may need them, a mount may be in them
            raise failures[0]
        if not step("remove files", functools.partial(self.trash.remove, directory)):
            raise failures[0]
        with self._configs_lock:  # after the file has gone: a look at it since found it, or nothing
            self._configs.pop(record.id, None)
        paths.exit_file.unlink(missing_ok=True)
        with self.db.transaction() as tx:
            self.table.delete(tx, record.id)
        with self._configs_lock:  # (a stats call's walk that ends later keeps nothing: _writable_usage)
            self._usage.pop(record.id, None)
            manager = self._managers.pop(record.id, None)
        if manager is not None:
            manager.close_files()

    def _signal(self, runtime: RuntimeHandler, record: ContainerRecord, sig: int) -> None:
        try:
            runtime.kill(record.id, sig)
        except Exception as exc:  # it may have died between refresh and kill, its exit not recorded yet
            if self._wait_exit(record, self.exit_record_wait):
                return
            raise FailedPrecondition(f"cannot signal container {record.id}: {exc}") from exc

    def _stop_signal(self, record: ContainerRecord) -> int:
        sig = parse_stop_signal(record.stop_signal)
        if sig is None:
            log.warning("the image's stop signal is not a signal: using SIGTERM", container_id=record.id,
                        stop_signal=record.stop_signal[:64])
            return int(signal.SIGTERM)
        return sig

    def _wait_exit(self, record: ContainerRecord, timeout: float) -> bool:
        """Whether the container exits within `timeout` seconds: looked for again as soon as
        its watched monitor ends, and every EXIT_POLL_SECONDS (an exit file written before
        the monitor ends, a monitor that is not watched)."""
        deadline = time.monotonic() + timeout
        ended = False  # its monitor has ended: from then on, sleep (a start under way may hold the exit back)
        while True:
            if self.refresh(record).state == EXITED:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if ended:
                time.sleep(min(remaining, EXIT_POLL_SECONDS))
                continue
            ended_now = self.monitors.wait_ended(record.id, min(remaining, EXIT_POLL_SECONDS))
            if ended_now is None:  # not watched
                time.sleep(min(remaining, EXIT_POLL_SECONDS))
            ended = bool(ended_now)


def exit_reason(status: ExitStatus) -> tuple[str, str]:
    """CRI's reason and message for how a container ended."""
    if status.lost:
        return "Unknown", "the container's monitor is gone and left no exit code"
    return ("OOMKilled" if status.oom_killed else ("Completed" if status.code == 0 else "Error")), ""


def parse_stop_signal(text: str) -> int | None:
    """An image's StopSignal ("SIGTERM", "TERM", "15", "SIGRTMIN+3") as a signal number; ""
    is SIGTERM; None when it names no signal a container can be stopped with (0, 99, SIGFOO)."""
    name = text.strip().upper()
    if not name:
        return int(signal.SIGTERM)
    if name.isascii() and name.isdigit():
        number = int(name)
    else:
        name = name if name.startswith("SIG") else f"SIG{name}"
        offset = re.fullmatch(r"SIGRTM(IN|AX)([+-]\d{1,2})?", name)
        if offset:
            base = signal.SIGRTMIN if offset.group(1) == "IN" else signal.SIGRTMAX
            number = int(base) + int(offset.group(2) or 0)
        else:
            try:
                number = int(signal.Signals[name])
            except KeyError:
                return None
    return number if number in signal.valid_signals() else None


def _idmap(spec: Spec) -> rootfs.IdMap | None:
    """The pod's user namespace a container joins (by path), with its root's host ids."""
    userns = next((ns.path for ns in spec.linux.namespaces if ns.type == "user"), None)
    if not userns:
        return None

    def host_root(mappings: list[IdMapping] | None) -> int:
        return next(m.host_id for m in mappings or [] if m.container_id == 0)

    return rootfs.IdMap(userns, host_root(spec.linux.uid_mappings), host_root(spec.linux.gid_mappings))
