"""OCI runtime handlers: one interface, a conmon-monitored implementation for any runtime
with the runc command line (pycri's own runtime, runc, crun).

conmon is started per container; it runs `<runtime> create`, reports the container's pid
on a sync pipe, then stays as the container's parent: it writes the CRI log file and,
when the container exits, its exit code to `<exits>/<id>` and `<persist>/exit` (and an
`oom` file in the persist dir when the kernel OOM-killed it). pycri may restart at any
time: conmon is in its own session and never a child pycri must wait for.
"""
from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import structlog

from pycri.common.errors import DeadlineExceeded, NotFound, RuntimeFailed
from pycri.kernel.linux import has_mount_setattr

log = structlog.get_logger("containers")
CONMON = "/usr/bin/conmon"
CREATE_TIMEOUT = 60.0
FEATURES_TIMEOUT = 10.0
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# ExecSync keeps this much of each stream, as containerd and CRI-O (CVE-2022-31030, CVE-2022-1708)
EXEC_OUTPUT_LIMIT = 16 * 1024 * 1024
# and both streams together fit in one reply kubelet and crictl accept (16 MiB messages)
EXEC_REPLY_LIMIT = EXEC_OUTPUT_LIMIT - 64 * 1024
READ_CHUNK = 64 * 1024
KILL_ROUNDS = 20  # sweeps of an exec's session: a process may fork while it is being killed


@dataclass(frozen=True)
class ContainerPaths:
    """Where a container's runtime files live."""

    bundle: Path  # config.json (and rootfs, or root.path pointing elsewhere)
    persist: Path  # conmon's persist dir: exit, oom
    exit_file: Path  # conmon's exit file
    log_path: str  # the CRI log file ("" for none)
    conmon_pidfile: Path
    container_pidfile: Path


@dataclass(frozen=True)
class HandlerFeatures:
    """What a runtime handler can do, from its `features` command (runtime-spec features.md)."""

    mount_options: frozenset[str] = frozenset()
    # "rro" in the runtime's mount options and mount_setattr(2) in the kernel (as containerd decides)
    recursive_read_only_mounts: bool = False
    # "user" in the runtime's namespaces and idmapped mounts in the kernel (pycri idmaps the
    # rootfs's layers itself; the runtime joins the pod's user namespace)
    user_namespaces: bool = False


def parse_features(output: str, kernel_has_mount_setattr: bool) -> HandlerFeatures:
    """The features document a runtime prints (runc >= 1.1, crun >= 1.8.6, pycri-runtime)."""
    document = json.loads(output)
    if not isinstance(document, dict):
        raise ValueError("the features document is not a JSON object")
    options = frozenset(str(o) for o in document.get("mountOptions") or [])
    linux = document.get("linux")
    namespaces = (linux.get("namespaces") if isinstance(linux, dict) else None) or []
    return HandlerFeatures(mount_options=options,
                           recursive_read_only_mounts=kernel_has_mount_setattr and "rro" in options,
                           user_namespaces=kernel_has_mount_setattr and "user" in namespaces)


def query_features(runtime_path: str) -> HandlerFeatures:
    """Run `<runtime> features`; a runtime without the command (older crun) or missing has none."""
    try:
        result = subprocess.run([runtime_path, "features"], capture_output=True, text=True, timeout=FEATURES_TIMEOUT,
                                env=runtime_env())
        if result.returncode != 0:
            raise ValueError(_runtime_message(result.stderr or result.stdout) or f"exit status {result.returncode}")
        return parse_features(result.stdout, has_mount_setattr())
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        log.info("runtime features unknown: advertising none", runtime=runtime_path, error=str(exc))
        return HandlerFeatures()


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: bytes
    stderr: bytes


class OciRuntime(Protocol):
    name: str

    def create(self, container_id: str, paths: ContainerPaths, *, stdin: bool = False, stdin_once: bool = False,
               tty: bool = False) -> int: ...

    def start(self, container_id: str) -> None: ...

    def kill(self, container_id: str, sig: int, *, all_processes: bool = False) -> None: ...

    def delete(self, container_id: str, *, force: bool = False) -> None: ...

    def state(self, container_id: str) -> dict[str, Any] | None: ...

    def exec_sync(self, container_id: str, process: dict[str, Any], timeout: float) -> ExecResult: ...

    def update(self, container_id: str, resources: dict[str, Any]) -> None: ...

    def features(self) -> HandlerFeatures: ...

    def command(self) -> list[str]:
        """The runtime's command line prefix (binary and global flags)."""
        ...


class ConmonRuntime:
    """Any runtime with runc's command line, each container monitored by conmon."""

    def __init__(self, name: str, runtime_path: str, runtime_root: Path, conmon: str = CONMON) -> None:
        self.name = name
        self.runtime_path = runtime_path
        self.runtime_root = runtime_root
        self.conmon = conmon
        self._features: HandlerFeatures | None = None
        self._features_lock = threading.Lock()
        runtime_root.mkdir(parents=True, exist_ok=True)

    def features(self) -> HandlerFeatures:
        """The runtime's features, asked once (the binary does not change under a running pycri)."""
        with self._features_lock:
            if self._features is None:
                self._features = query_features(self.runtime_path)
            return self._features

    def command(self) -> list[str]:
        return [self.runtime_path, "--root", str(self.runtime_root)]

    def _runtime(self, *args: str) -> list[str]:
        return [*self.command(), *args]

    def _run(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(self._runtime(*args), capture_output=True, text=True, timeout=timeout,
                                env=runtime_env())
        if result.returncode != 0:
            message = _runtime_message(result.stderr or result.stdout)
            if "does not exist" in message or "not exist" in message or "not found" in message.lower():
                raise NotFound(f"{self.name}: {args[0]} {args[-1]}: {message}")
            raise RuntimeFailed(f"{self.name} {args[0]} failed: {message}")
        return result

    def create(self, container_id: str, paths: ContainerPaths, *, stdin: bool = False, stdin_once: bool = False,
               tty: bool = False) -> int:
        paths.exit_file.parent.mkdir(parents=True, exist_ok=True)
        paths.persist.mkdir(parents=True, exist_ok=True)
        args = [
            self.conmon, "--api-version", "1",
            "--cid", container_id, "--cuuid", container_id, "--name", container_id,
            "--runtime", self.runtime_path, "--runtime-arg", "--root", "--runtime-arg", str(self.runtime_root),
            # the runtime's own messages go to a file, not into the container's stderr
            "--runtime-arg", "--log", "--runtime-arg", str(paths.bundle / "runtime.log"),
            "--bundle", str(paths.bundle),
            "--container-pidfile", str(paths.container_pidfile),
            "--conmon-pidfile", str(paths.conmon_pidfile),
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
        read_end, write_end = os.pipe()
        try:
            env = {**runtime_env(), "_OCI_SYNCPIPE": str(write_end)}
            process = subprocess.Popen(
                args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                pass_fds=(write_end,), start_new_session=True, cwd=str(paths.bundle),
            )
            os.close(write_end)
            write_end = -1
            _, conmon_err = process.communicate(timeout=CREATE_TIMEOUT)
            report = _read_sync(read_end)
        finally:
            os.close(read_end)
            if write_end >= 0:
                os.close(write_end)
        pid = int(report.get("data", report.get("pid", -1))) if report else -1
        if pid <= 0:
            message = (report or {}).get("message") or _runtime_message(_tail(paths.bundle / "runtime.log")) \
                or _runtime_message(conmon_err.decode(errors="replace"))
            raise RuntimeFailed(f"{self.name} could not create the container: {message or 'conmon gave no reason'}")
        return pid

    def start(self, container_id: str) -> None:
        self._run("start", container_id)

    def kill(self, container_id: str, sig: int, *, all_processes: bool = False) -> None:
        args = ["kill", *(["--all"] if all_processes else []), container_id, str(sig)]
        self._run(*args)

    def delete(self, container_id: str, *, force: bool = False) -> None:
        try:
            self._run("delete", *(["--force"] if force else []), container_id)
        except NotFound:
            pass

    def state(self, container_id: str) -> dict[str, Any] | None:
        try:
            return json.loads(self._run("state", container_id).stdout)
        except NotFound:
            return None

    def update(self, container_id: str, resources: dict[str, Any]) -> None:
        with tempfile.NamedTemporaryFile("w", prefix="pycri-resources-", suffix=".json") as spec:
            json.dump(resources, spec)
            spec.flush()
            self._run("update", "--resources", spec.name, container_id)

    def exec_sync(self, container_id: str, process: dict[str, Any], timeout: float) -> ExecResult:
        """Run `process` in the container and collect its output: the first EXEC_OUTPUT_LIMIT
        bytes of each stream are kept, the rest is read and dropped (as containerd and CRI-O
        do). At the deadline the process and everything in its session are killed and
        DeadlineExceeded raised."""
        with tempfile.TemporaryDirectory(prefix="pycri-exec-") as work:
            spec, pidfile = Path(work) / "process.json", Path(work) / "pid"
            spec.write_text(json.dumps(process))
            child = subprocess.Popen(
                self._runtime("exec", "--process", str(spec), "--pid-file", str(pidfile), container_id),
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=runtime_env(),
            )
            assert child.stdout is not None and child.stderr is not None
            deadline = time.monotonic() + timeout if timeout > 0 else None
            try:
                outputs, finished = capture_output([child.stdout.fileno(), child.stderr.fileno()], deadline,
                                                   EXEC_OUTPUT_LIMIT)
                if finished:
                    child.wait()
                else:
                    _kill_exec(child, pidfile)
                    raise DeadlineExceeded(f"command {process.get('args')} timed out after {timeout:g} s")
            except BaseException:
                if child.returncode is None:
                    _kill_exec(child, pidfile)
                raise
            finally:
                child.stdout.close()
                child.stderr.close()
        stdout, stderr = outputs
        fit_reply(stdout, stderr, EXEC_REPLY_LIMIT)
        for name, data in (("stdout", stdout), ("stderr", stderr)):
            if data.truncated:
                log.warning("exec output truncated", container_id=container_id, stream=name,
                            kept_bytes=len(data.kept), dropped_bytes=data.dropped)
        return ExecResult(child.returncode, bytes(stdout.kept), bytes(stderr.kept))


def runtime_env() -> dict[str, str]:
    """The environment the runtime runs with: a PATH, nothing of pycri's own (the runtime's
    processes pass through the container's namespaces before they exec)."""
    return {"PATH": os.environ.get("PATH") or DEFAULT_PATH}


@dataclass
class CapturedStream:
    kept: bytearray = field(default_factory=bytearray)
    dropped: int = 0

    @property
    def truncated(self) -> bool:
        return self.dropped > 0


def capture_output(fds: list[int], deadline: float | None, limit: int) -> tuple[list[CapturedStream], bool]:
    """Read `fds` to their end, keeping the first `limit` bytes of each and dropping the rest.
    Returns the captures and True, or what was read by `deadline` (monotonic) and False."""
    captures = [CapturedStream() for _ in fds]
    selector = selectors.DefaultSelector()
    try:
        for index, fd in enumerate(fds):
            selector.register(fd, selectors.EVENT_READ, index)
        while selector.get_map():
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                return captures, False
            for key, _ in selector.select(wait):
                try:
                    chunk = os.read(key.fd, READ_CHUNK)
                except BlockingIOError:
                    continue
                if not chunk:
                    selector.unregister(key.fd)
                    continue
                capture = captures[key.data]
                room = limit - len(capture.kept)
                if room > 0:
                    capture.kept += chunk[:room]
                capture.dropped += max(0, len(chunk) - max(room, 0))
        return captures, True
    finally:
        selector.close()


def fit_reply(stdout: CapturedStream, stderr: CapturedStream, budget: int) -> None:
    """Trim the two captures to `budget` bytes in all: stderr gets at least half of it when
    stdout would need more, stdout the rest."""
    out, err = len(stdout.kept), len(stderr.kept)
    if out + err <= budget:
        return
    err_keep = min(err, max(budget - out, budget // 2))
    out_keep = min(out, budget - err_keep)
    for capture, keep in ((stdout, out_keep), (stderr, err_keep)):
        capture.dropped += len(capture.kept) - keep
        del capture.kept[keep:]


def _kill_exec(child: subprocess.Popen[bytes], pidfile: Path) -> None:
    """Kill an exec: the process the runtime started and its session (what it started),
    then the runtime, then whatever the runtime reported in the meantime."""
    _kill_session(pidfile)
    child.kill()
    child.wait()
    _kill_session(pidfile)
    try:
        reap(int(pidfile.read_text().strip()))  # orphaned to pycri, the subreaper, once the runtime is gone
    except (OSError, ValueError):
        pass


def _read_sync(fd: int) -> dict[str, Any] | None:
    data = b""
    deadline = time.monotonic() + CREATE_TIMEOUT
    while b"\n" not in data and time.monotonic() < deadline:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    try:
        return json.loads(data.split(b"\n", 1)[0]) if data else None
    except ValueError:
        return None


def _runtime_message(text: str) -> str:
    """The useful part of a runtime's error output (runc logs JSON or logfmt lines)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("{"):
            try:
                return str(json.loads(line).get("msg", line))
            except ValueError:
                pass
        if 'msg="' in line:
            return line.split('msg="', 1)[1].rstrip('"')
    return lines[-1] if lines else ""


def _tail(path: Path, size: int = 8192) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - size))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _kill_session(pidfile: Path) -> list[int]:
    """SIGKILL the process in `pidfile` and what it started: its descendants (stopped first, so
    that none forks or is orphaned while the tree is walked) and, when it leads a session (the
    runtime calls setsid for it), every process of the session in its PID namespace. Sweeps
    until one finds nobody new: a process with a signal pending forks no more. The pids killed."""
    try:
        leader = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return []
    if leader <= 1:
        return []
    session = _session_of(leader)
    if session is not None:  # alive: the runtime has not reaped it, so the pid is still its own
        namespace = _pid_namespace(leader)
        in_session = lambda pid: session == leader and _pid_namespace(pid) == namespace  # noqa: E731
        roots = [leader]
    else:  # gone (its pid may be reused): only its session's processes in some container's namespace
        own = _pid_namespace(os.getpid())
        in_session = lambda pid: _pid_namespace(pid) not in (own, None)  # noqa: E731
        roots = []
    stopped: list[int] = []
    for _ in range(KILL_ROUNDS):
        found = _descendants(roots) + [pid for pid in _session_members(leader) if in_session(pid)]
        new = [pid for pid in dict.fromkeys(found) if pid not in stopped]
        if not new:
            break
        for pid in new:
            try:
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
            except ProcessLookupError:
                pass
    killed = []
    for pid in stopped:
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except ProcessLookupError:
            pass
    return killed


def _descendants(roots: list[int]) -> list[int]:
    """`roots` (the live ones) and all their live descendants."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _proc_stat_fields(int(name))
            if fields is not None and fields[0] not in ("Z", "X"):
                children.setdefault(int(fields[1]), []).append(int(name))
    found, queue = [], [pid for pid in roots if _session_of(pid) is not None]
    while queue:
        pid = queue.pop()
        found.append(pid)
        queue += children.get(pid, [])
    return found


def _proc_stat_fields(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _session_of(pid: int) -> int | None:
    fields = _proc_stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return int(fields[3])


def _session_members(session: int) -> list[int]:
    members = []
    for name in os.listdir("/proc"):
        if name.isdigit() and _session_of(int(name)) == session:
            members.append(int(name))
    return members


def _pid_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def reap(pid: int, timeout: float = 2.0) -> None:
    """Wait for `pid` if it is (or becomes, when its parent dies) a child of this process."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = 0
            if Path(f"/proc/{pid}").exists() is False:
                return
        if done or time.monotonic() >= deadline:
            return
        time.sleep(0.01)
