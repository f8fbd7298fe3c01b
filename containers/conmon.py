"""The conmon runtime handler: any runtime with the runc command line (pycri's own runtime,
runc, crun), each container watched by conmon (as CRI-O's internal/oci/runtime_oci.go).

conmon is started per container; it runs `<runtime> create`, reports the container's pid
on a sync pipe, then stays as the container's parent: it writes the CRI log file and,
when the container exits, its exit code to `<exits>/<id>` and `<persist>/exit` (and an
`oom` file in the persist dir when the kernel OOM-killed it). pycri may restart at any
time: conmon is in its own session and never a child pycri must wait for. In the bundle it
keeps its pid file, the container's, its attach socket (SOCK_SEQPACKET: output messages
carry a first byte, 2 for stdout and 3 for stderr; input goes as is) and its control fifo
(`ctl`: window sizes, log reopening).
"""
from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from pycri.common.errors import FailedPrecondition, RuntimeFailed
from pycri.containers import own_runtime, streams
from pycri.containers.handler import ContainerPaths, ExecResult, ExitStatus, HandlerFeatures, StreamIO
from pycri.containers.oci import OciCli, runtime_env, runtime_message, tail

log = structlog.get_logger("containers")
CONMON = "/usr/bin/conmon"
CREATE_TIMEOUT = 60.0
REOPEN_WAIT_SECONDS = 5.0
STDOUT_PIPE, STDERR_PIPE = 2, 3  # conmon's attach message prefixes
ATTACH_BUFFER = 8192 + 1
RESIZE_EVENT, REOPEN_LOGS_EVENT = 1, 2  # what a line written to conmon's ctl fifo asks for


def conmon_pidfile(paths: ContainerPaths) -> Path:
    return paths.bundle / "conmon.pid"


def container_pidfile(paths: ContainerPaths) -> Path:
    return paths.bundle / "pidfile"


class ConmonHandler:
    """A runtime with runc's command line, each container monitored by conmon. `monitor_pid`
    finds a live conmon from its pid file and the container's id (tests give their own).
    With `own_runtime` (the runtime is pycri's own, runtime/), `start` runs the runtime's start
    in pycri's process (containers/own_runtime.py) instead of as a command."""

    def __init__(self, name: str, runtime_path: str, runtime_root: Path, conmon: str = CONMON,
                 monitor_pid: Callable[[Path, str], int | None] | None = None, *,
                 systemd_cgroup: bool = False, own_runtime: bool = False) -> None:
        self.name = name
        self.runtime_path = runtime_path
        self.runtime_root = runtime_root
        self.conmon = conmon
        self.cli = OciCli(name, runtime_path, runtime_root, systemd_cgroup=systemd_cgroup)
        self.monitor_pid = monitor_pid or conmon_pid
        self.own_runtime = own_runtime

    # -- the runtime's command line -------------------------------------------

    def features(self) -> HandlerFeatures:
        return self.cli.features()

    def start(self, container_id: str) -> None:
        if self.own_runtime:
            own_runtime.start(self.name, self.runtime_root, container_id)
        else:
            self.cli.start(container_id)

    def kill(self, container_id: str, sig: int, *, all_processes: bool = False) -> None:
        self.cli.kill(container_id, sig, all_processes=all_processes)

    def delete(self, container_id: str, *, force: bool = False) -> None:
        self.cli.delete(container_id, force=force)

    def update(self, container_id: str, resources: dict[str, Any]) -> None:
        self.cli.update(container_id, resources)

    def exec_sync(self, container_id: str, process: dict[str, Any], timeout: float) -> ExecResult:
        return self.cli.exec_sync(container_id, process, timeout)

    def exec_stream(self, container_id: str, process: dict[str, Any], io: StreamIO) -> int:
        return streams.exec_process(self.cli.command(), container_id, process, io)

    # -- conmon -------------------------------------------------------------

    def begin_create(self, container_id: str, paths: ContainerPaths, *, stdin: bool = False,
                     stdin_once: bool = False, tty: bool = False) -> ConmonCreation:
        """Start conmon, which creates the container: back once conmon has daemonized (its
        parent has exited); the runtime's create goes on, and the container's pid comes on
        conmon's sync pipe (`ConmonCreation.wait`)."""
        paths.exit_file.parent.mkdir(parents=True, exist_ok=True)
        paths.persist.mkdir(parents=True, exist_ok=True)
        args = self._conmon_args(container_id, paths, stdin=stdin, stdin_once=stdin_once, tty=tty)
        sync, conmon_err = _start(args, paths.bundle)
        return ConmonCreation(self.name, sync, conmon_err, paths.bundle / "runtime.log")

    def _conmon_args(self, container_id: str, paths: ContainerPaths, *, stdin: bool, stdin_once: bool,
                     tty: bool) -> list[str]:
        args = [
            self.conmon, "--api-version", "1",
            "--cid", container_id, "--cuuid", container_id, "--name", container_id,
            "--runtime", self.runtime_path, "--runtime-arg", "--root", "--runtime-arg", str(self.runtime_root),
            # the runtime's own messages go to a file, not into the container's stderr
            "--runtime-arg", "--log", "--runtime-arg", str(paths.bundle / "runtime.log"),
            *[arg for flag in self.cli.global_flags() for arg in ("--runtime-arg", flag)],
            "--bundle", str(paths.bundle),
            "--container-pidfile", str(container_pidfile(paths)),
            "--conmon-pidfile", str(conmon_pidfile(paths)),
            "--exit-dir", str(paths.exit_file.parent),
            "--persist-dir", str(paths.persist),
            "--socket-dir-path", str(paths.bundle), "--full-attach",
            "--log-level", "info",
        ]
        args += ["--log-path", f"k8s-file:{paths.log_path}"] if paths.log_path else ["--log-path", "none:"]
        if stdin:
            args.append("--stdin")
            if not stdin_once:  # the container's stdin stays open when an attached client leaves
                args.append("--leave-stdin-open")
        if tty:
            args.append("--terminal")
        return args

    def exit_status(self, container_id: str, paths: ContainerPaths) -> ExitStatus | None:
        """The exit conmon recorded; None while conmon lives without one. Collects conmon once
        the container has exited."""
        code = _exit_code(paths)
        if code is None:
            if self.monitor_pid(conmon_pidfile(paths), container_id) is not None:
                return None
            # conmon writes the exit file, then exits: it may have done both since the read above
            code = _exit_code(paths)
        if code is None:
            status = ExitStatus(255, time.time_ns(), lost=True)
        else:
            source = paths.exit_file if paths.exit_file.exists() else paths.persist / "exit"
            status = ExitStatus(code, source.stat().st_mtime_ns, oom_killed=(paths.persist / "oom").exists())
        _reap(conmon_pidfile(paths))
        return status

    def watch(self, container_id: str, paths: ContainerPaths) -> int | None:
        """A pidfd of the container's live conmon (readable once conmon has exited: it writes the
        exit file first). None when conmon is gone, or the kernel has no pidfds."""
        pidfile = conmon_pidfile(paths)
        pid = self.monitor_pid(pidfile, container_id)
        if pid is None:
            return None
        try:
            fd = os.pidfd_open(pid)
        except OSError:  # gone since, no pidfds (Linux < 5.3), or out of descriptors
            return None
        if self.monitor_pid(pidfile, container_id) != pid:  # the pid was conmon's when the pidfd was taken
            os.close(fd)
            return None
        return fd

    def attach(self, container_id: str, paths: ContainerPaths, io: StreamIO, tty: bool) -> None:
        """Attach to the container's stdio through conmon's attach socket until its output ends."""
        sock = _connect_attach(paths.bundle)
        ctl = paths.bundle / "ctl"
        streams.resizer(io, lambda w, h: _write_ctl(ctl, f"{RESIZE_EVENT} {h} {w}\n"))
        if io.stdin:
            streams.pump(streams.stdin_reader(io), sock.sendall, lambda: sock.shutdown(socket.SHUT_WR))
        if io.gone is not None:
            _on_event(io.gone, lambda: sock.shutdown(socket.SHUT_RD))  # wakes the recv below
        with sock:
            _relay_output(sock, io, tty)

    def reopen_log(self, container_id: str, paths: ContainerPaths) -> None:
        """Ask conmon to reopen the log file; answer once it has made the new file, as kubelet expects."""
        try:
            fd = os.open(paths.bundle / "ctl", os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            raise FailedPrecondition(f"cannot reach the monitor of container {container_id}: {exc.strerror}") from None
        try:
            os.write(fd, f"{REOPEN_LOGS_EVENT} 0 0\n".encode())
        finally:
            os.close(fd)
        if paths.log_path:
            deadline = time.monotonic() + REOPEN_WAIT_SECONDS
            while not os.path.exists(paths.log_path) and time.monotonic() < deadline:
                time.sleep(0.005)

    def release(self, container_id: str, paths: ContainerPaths) -> None:
        """Kill conmon if it still runs, and collect it."""
        pid = self.monitor_pid(conmon_pidfile(paths), container_id)
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _reap(conmon_pidfile(paths))


class ConmonCreation:
    """A container conmon is creating: the read end of conmon's sync pipe, on which it writes
    the container's pid (or the runtime's error) once the runtime's create has ended."""

    def __init__(self, handler: str, sync: int, conmon_err: str, runtime_log: Path) -> None:
        self.handler = handler
        self.conmon_err = conmon_err
        self.runtime_log = runtime_log
        self._sync = sync
        self._lock = threading.Lock()
        self._result: int | RuntimeFailed | None = None

    def ready(self) -> bool:
        if self._result is not None:
            return True
        readable, _, _ = select.select([self._sync], [], [], 0)
        return bool(readable)

    def wait(self) -> int:
        with self._lock:
            if self._result is None:
                try:
                    report = _read_sync(self._sync)
                finally:
                    os.close(self._sync)
                pid = int(report.get("data", report.get("pid", -1))) if report else -1
                if pid > 0:
                    self._result = pid
                else:
                    message = (report or {}).get("message") or runtime_message(tail(self.runtime_log)) \
                        or runtime_message(self.conmon_err)
                    self._result = RuntimeFailed(
                        f"{self.handler} could not create the container: {message or 'conmon gave no reason'}")
        if isinstance(self._result, RuntimeFailed):
            raise self._result
        return self._result


def _start(args: list[str], bundle: Path) -> tuple[int, str]:
    """Run conmon until it has daemonized; the read end of its sync pipe, and its stderr."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        env = {**runtime_env(), "_OCI_SYNCPIPE": str(write_end)}
        process = subprocess.Popen(
            args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            pass_fds=(write_end,), start_new_session=True, cwd=str(bundle),
        )
        os.close(write_end)
        write_end = -1
        _, err = process.communicate(timeout=CREATE_TIMEOUT)
    except BaseException:
        os.close(read_end)
        raise
    finally:
        if write_end >= 0:
            os.close(write_end)
    return read_end, err.decode(errors="replace")


def _read_sync(fd: int) -> dict[str, Any] | None:
    data = b""
    deadline = time.monotonic() + CREATE_TIMEOUT
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    try:
        return json.loads(data.split(b"\n", 1)[0]) if data else None
    except ValueError:
        return None


def _exit_code(paths: ContainerPaths) -> int | None:
    """The exit code conmon wrote (its exit dir, else its persist dir); None if neither has one."""
    code = _read_exit(paths.exit_file)
    return code if code is not None else _read_exit(paths.persist / "exit")


def _read_exit(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    try:
        return int(text)
    except ValueError:
        return None


def conmon_pid(pidfile: Path, container_id: str) -> int | None:
    """The pid of the live conmon of `container_id` in `pidfile`; None when it is gone."""
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    if b"conmon" not in cmdline or container_id.encode() not in cmdline:
        return None  # the pid was reused by something else
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    return None if state == "Z" else pid


def _reap(pidfile: Path) -> None:
    """conmon is orphaned to pycri (a child subreaper): collect it once it has exited."""
    try:
        pid = int(pidfile.read_text().strip())
        os.waitpid(pid, os.WNOHANG)
    except (OSError, ValueError):  # not our child (pycri restarted since), or gone
        pass


def _connect_attach(bundle: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    # through /proc/self/fd: a socket path may not exceed 108 bytes, a bundle path may
    directory = os.open(bundle, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        sock.connect(f"/proc/self/fd/{directory}/attach")
    except OSError as exc:
        sock.close()
        raise FailedPrecondition(f"cannot attach: conmon's attach socket is not there ({exc.strerror or exc})") from None
    finally:
        os.close(directory)
    return sock


def _relay_output(sock: socket.socket, io: StreamIO, tty: bool) -> None:
    """Copy conmon's output messages to the client until either end goes."""
    while True:
        try:
            message = sock.recv(ATTACH_BUFFER)
        except OSError:
            break
        if not message:
            break
        kind, data = message[0], message[1:]
        target = io.stderr if kind == STDERR_PIPE and not tty else io.stdout
        if target is not None and data:
            try:
                target.write(data)
            except OSError:  # the client has gone
                break


def _on_event(event: threading.Event, action: Callable[[], object]) -> None:
    def run() -> None:
        event.wait()
        try:
            action()
        except OSError:
            pass

    threading.Thread(target=run, daemon=True).start()


def _write_ctl(ctl: Path, line: str) -> None:
    fd = os.open(ctl, os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
