"""`exec`: run another process in a running container.

The process (from --process process.json, or the command line over the container's own
process settings) joins the container's cgroups and namespaces (/proc/<init>/ns/*, mount
last), forks once more for the PID namespace, applies user, capabilities, env, cwd,
no_new_privs and the container's seccomp filter, and execs. With --detach the runtime exits
once the process started (its pid in --pid-file); without, it waits (as the process's
subreaper) and exits with its exit code, forwarding SIGINT/SIGTERM/SIGHUP/SIGQUIT to it.
As in `create`, the first stage imports the process set-up's modules itself, while the parent
moves it into the cgroups (runtime/create.py says why).
"""
from __future__ import annotations

import os

from pycri import cgroups

from pycri.kernel.linux import LinuxSyscall, preload_seccomp
from pycri.kernel.syscall import PR_SET_CHILD_SUBREAPER, PR_SET_DUMPABLE, SeccompProgram, Syscall
from pycri.runtime import jsonlite, namespaces
from pycri.runtime.args import Flags, UsageError
from pycri.runtime.errors import RuntimeFailure
from pycri.runtime.signals import SIGCHLD, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, set_default, set_handler
from pycri.runtime.spec import Process, SpecError
from pycri.runtime.stages import launch, run_child
from pycri.runtime.state import STOPPED, StateStore, write_pid_file
from pycri.runtime.sync import Channel

EXEC_TIMEOUT = 60.0
FORWARDED_SIGNALS = (SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2)


def _parse_user(text: str) -> tuple[int, int | None]:
    uid_text, _, gid_text = text.partition(":")
    try:
        return int(uid_text), int(gid_text) if gid_text else None
    except ValueError:
        raise UsageError(f"--user {text!r}: only numeric uid[:gid] is supported") from None


def process_from_flags(base: dict[str, object], command: list[str], flags: Flags) -> Process:
    """runc's exec without --process: the container's process settings, with the command,
    and --env, --cwd, --user, --additional-gids, --cap, --no-new-privs, --tty on top."""
    if flags.is_set("process"):
        path = flags.string("process")
        try:
            with open(path) as f:
                raw = jsonlite.loads(f.read())
        except (OSError, ValueError) as e:
            raise RuntimeFailure(f"read process spec {path}: {e}") from None
        return Process.from_dict(raw)
    if not command:
        raise UsageError("exec: a command is required (or --process)")
    raw = jsonlite.loads(jsonlite.dumps(base))  # a deep copy
    raw["args"] = list(command)
    raw["terminal"] = flags.flag("tty")
    env = list(raw.get("env") or [])
    env.extend(flags.strings("env"))
    raw["env"] = env
    if flags.is_set("cwd"):
        raw["cwd"] = flags.string("cwd")
    user = dict(raw.get("user") or {})
    if flags.is_set("user"):
        uid, gid = _parse_user(flags.string("user"))
        user["uid"] = uid
        if gid is not None:
            user["gid"] = gid
    try:
        gids = [int(g) for g in flags.strings("additional-gids")]
    except ValueError:
        raise UsageError("--additional-gids takes numeric gids") from None
    if gids:
        user["additionalGids"] = gids
    raw["user"] = user
    extra_caps = flags.strings("cap")
    if extra_caps:
        caps = dict(raw.get("capabilities") or {})
        for name in ("bounding", "effective", "permitted"):
            caps[name] = list(caps.get(name) or []) + extra_caps
        raw["capabilities"] = caps
    if flags.flag("no-new-privs"):
        raw["noNewPrivileges"] = True
    try:
        return Process.from_dict(raw)
    except SpecError as e:
        raise RuntimeFailure(str(e)) from None


def exec_command(store: StateStore, container_id: str, command: list[str], flags: Flags,
                 kernel: Syscall | None = None) -> int:
    kernel = kernel or LinuxSyscall()
    state = store.load(container_id)
    if store.status(state) == STOPPED:
        raise RuntimeFailure("cannot exec in a stopped container")
    process = process_from_flags(state.process, command, flags)
    detach = flags.flag("detach")
    console_socket = flags.string("console-socket")
    if process.terminal and not console_socket:
        raise RuntimeFailure("a terminal (--tty) needs --console-socket with pycri-runtime")
    if console_socket and not process.terminal:
        raise RuntimeFailure("cannot use console socket if runc will not detach or allocate tty")
    program: SeccompProgram | None = None
    if state.seccomp:
        from pycri.runtime.seccomp import translate

        program = translate(state.seccomp, process.no_new_privileges)
        if isinstance(kernel, LinuxSyscall):
            preload_seccomp()
    manager = cgroups.manager_from_state(state.cgroup) if state.cgroup else None
    # before anything joins the container: a non-dumpable process's /proc/<pid>/exe, environ,
    # fd/, mem are closed to the container's processes (CVE-2019-5736); execve makes the
    # container's process dumpable again
    kernel.prctl(PR_SET_DUMPABLE, 0)
    if not detach:
        kernel.prctl(PR_SET_CHILD_SUBREAPER, 1)
        set_default(SIGCHLD)  # an ignored SIGCHLD (inherited) would leave no exit status to wait for
    opened = namespaces.open_paths(namespaces.process_namespace_paths(state.pid, state.namespaces))
    console_fd = -1
    if console_socket:
        from pycri.runtime.process import console

        console_fd = console.connect(console_socket)
    try:
        # a subreaper (non-detached) reaps a process that failed: a zombie left in the
        # container's PID namespace would keep its init from exiting
        preserve_fds = flags.integer("preserve-fds")
        pid = launch(_first_stage, (kernel, opened, process, program, console_fd, preserve_fds),
                     join_cgroups=manager.add if manager is not None else None, timeout=EXEC_TIMEOUT,
                     reap_on_failure=not detach)
    finally:
        namespaces.close(opened)
        if console_fd >= 0:
            os.close(console_fd)
    if flags.is_set("pid-file"):
        write_pid_file(flags.string("pid-file"), pid)
    if detach:
        return 0
    return _wait(pid)


def _first_stage(to_parent: Channel, from_parent: Channel, kernel: Syscall, opened: list[tuple[str, int]],
                 process: Process, program: SeccompProgram | None, console_fd: int, preserve_fds: int) -> None:
    """The first stage's entry, in the child: the process set-up's modules, imported while the
    parent moves this process into the container's cgroups (as create's first stage does)."""
    from pycri.runtime.process import console, setup  # noqa: F401 - for _stage_exec

    _stage_join(to_parent, from_parent, kernel, opened, process, program, console_fd, preserve_fds)


def _stage_join(to_parent: Channel, from_parent: Channel, kernel: Syscall, opened: list[tuple[str, int]],
                process: Process, program: SeccompProgram | None, console_fd: int, preserve_fds: int) -> None:
    go = from_parent.receive()
    if go.get("type") != "go":
        raise RuntimeFailure(f"unexpected message from the runtime: {go}")
    from_parent.close()
    namespaces.join(kernel, opened)
    namespaces.close(opened)
    pid = os.fork()
    if pid == 0:
        run_child(to_parent, _stage_exec, kernel, process, program, console_fd, preserve_fds)
    to_parent.send("pid", pid=pid)


def _stage_exec(to_parent: Channel, kernel: Syscall, process: Process, program: SeccompProgram | None,
                console_fd: int, preserve_fds: int) -> None:
    from pycri.runtime.process import console, setup  # (loaded by _first_stage, before the namespaces)

    os.setsid()
    if console_fd >= 0:
        console.setup_console(kernel, console_fd, mount_dev_console=False)  # closes the socket
    prepared = setup.prepare(kernel, process, seccomp=program, preserve_fds=preserve_fds)
    to_parent.send("ready")
    to_parent.close()
    try:
        setup.execute(kernel, prepared)
    except OSError as e:
        os.write(2, f"pycri-runtime: exec {prepared.path}: {e.strerror or e}\n".encode())
        os._exit(127 if e.errno == 2 else 126)


def _wait(pid: int) -> int:
    def forward(sig: int, _frame: object) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    for sig in FORWARDED_SIGNALS:
        set_handler(sig, forward)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except ChildProcessError:
            return 255  # not our child: someone else reaped it
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)
