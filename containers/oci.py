"""The runc command line, which pycri's own runtime, runc and crun all speak:
`<runtime> --root <dir> <command> ...` for start, kill, delete, state, update, exec and
features, and what ExecSync needs around `exec` (output capture, killing on a deadline).
Creating a container, and watching it afterwards, is the handler's monitor's part
(containers/handler.py).
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
from typing import Any

import structlog

from pycri.common.errors import DeadlineExceeded, NotFound, RuntimeFailed
from pycri.containers.handler import ExecResult, HandlerFeatures
from pycri.kernel.linux import has_mount_setattr

log = structlog.get_logger("containers")
FEATURES_TIMEOUT = 10.0
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# ExecSync keeps this much of each stream, as containerd and CRI-O (CVE-2022-31030, CVE-2022-1708)
EXEC_OUTPUT_LIMIT = 16 * 1024 * 1024
# and both streams together fit in one reply kubelet and crictl accept (16 MiB messages)
EXEC_REPLY_LIMIT = EXEC_OUTPUT_LIMIT - 64 * 1024
READ_CHUNK = 64 * 1024
KILL_ROUNDS = 20  # sweeps of an exec's session: a process may fork while it is being killed


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
            raise ValueError(runtime_message(result.stderr or result.stdout) or f"exit status {result.returncode}")
        return parse_features(result.stdout, has_mount_setattr())
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        log.info("runtime features unknown: advertising none", runtime=runtime_path, error=str(exc))
        return HandlerFeatures()


class OciCli:
    """An OCI runtime with runc's command line, its containers' state under `root`."""

    def __init__(self, name: str, path: str, root: Path, *, systemd_cgroup: bool = False) -> None:
        self.name = name
        self.path = path
        self.root = root
        # the systemd cgroup driver: runc's global --systemd-cgroup (cgroupsPath is slice:prefix:name)
        self.systemd_cgroup = systemd_cgroup
        self._features: HandlerFeatures | None = None
        self._features_lock = threading.Lock()
        root.mkdir(parents=True, exist_ok=True)

    def features(self) -> HandlerFeatures:
        """The runtime's features, asked once (the binary does not change under a running pycri)."""
        with self._features_lock:
            if self._features is None:
                self._features = query_features(self.path)
            return self._features

    def command(self) -> list[str]:
        """The runtime's command line prefix (binary and global flags)."""
        return [self.path, "--root", str(self.root), *self.global_flags()]

    def global_flags(self) -> list[str]:
        """Global flags besides --root and --log: --systemd-cgroup with the systemd driver."""
        return ["--systemd-cgroup"] if self.systemd_cgroup else []

    def _runtime(self, *args: str) -> list[str]:
        return [*self.command(), *args]

    def _run(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(self._runtime(*args), capture_output=True, text=True, timeout=timeout,
                                env=runtime_env())
        if result.returncode != 0:
            message = runtime_message(result.stderr or result.stdout)
            if "does not exist" in message or "not exist" in message or "not found" in message.lower():
                raise NotFound(f"{self.name}: {args[0]} {args[-1]}: {message}")
            raise RuntimeFailed(f"{self.name} {args[0]} failed: {message}")
        return result

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


def runtime_message(text: str) -> str:
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


def tail(path: Path, size: int = 8192) -> str:
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
