"""The launcher of a pod's infra process: PID 1 of the PID namespace a pod's containers share.

Run by sandbox/infra.py as `<python> -IS -c BOOTSTRAP --uid U --gid G --sandbox ID [--user P]
[--network P] [--ipc P] [--uts P] [--pause-fd FD] CATATONIT` (a fresh, single-threaded interpreter, so
forking is safe). BOOTSTRAP (`bootstrap`) makes the `pycri` package by hand, as pycri-runtime's
launcher does: with -S there is no site-packages scan, and the launcher imports only the standard
library and pycri.kernel, without argparse, so it starts in ~10 ms instead of ~40. It

1. takes the pause binary (catatonit, statically linked): the sealed memfd `--pause-fd` (passed
   on by the daemon, shared by every pod's infra process: sandbox/infra.py `sealed_pause`), or,
   without one, the file CATATONIT read while the launcher still sees the host;
2. joins the pod's pinned namespaces (the user one first: it owns the others), and unshares a new
   PID, mount and cgroup namespace;
3. forks PID 1 of the new PID namespace, which makes its mount namespace private, mounts an
   empty tmpfs (into which, without a memfd, it writes the pause binary), makes it read-only,
   pivots into it and detaches the host's root: the infra process sees nothing of the host
   (`/proc/1/root` of a container that may ptrace it shows an empty directory, or one file);
4. in that child: drops every capability (bounding set too), becomes `--uid`/`--gid` with no
   supplementary groups, sets no_new_privs and execs the memfd (execveat; `/proc/1/exe` is
   `/memfd:catatonit (deleted)`), or `/catatonit`, as `catatonit -P` with PYCRI_SANDBOX=<pod id>
   as its whole environment (its pause mode: it reaps
   orphans and exits on SIGTERM/SIGINT; when PID 1 dies the kernel ends the namespace);
5. prints the child's host pid once the exec has happened (a close-on-exec pipe reports any
   failure of the child) and exits; the infra process is then pycri's (a subreaper) or init's.

The launcher is the only Python here: PID 1 is the static pause binary, never an interpreter.
Nothing else stays: no launcher, no shell, no process that only waits.
"""
from __future__ import annotations

import os
import sys

from pycri.kernel.syscall import (
    CLONE_NEWCGROUP,
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWUSER,
    CLONE_NEWUTS,
    MNT_DETACH,
    MS_BIND,
    MS_NODEV,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    PR_CAPBSET_DROP,
    PR_SET_NO_NEW_PRIVS,
    CapSets,
    Syscall,
)

# where the new root is mounted before pivot_root, in the infra's own mount namespace only: a
# directory every user may traverse (in a pod user namespace the host's root-owned 0700
# directories are closed even to the namespace's root)
STAGING = "/tmp"
PAUSE_NAME = "catatonit"
# the infra process's only environment variable: its pod, so that a pod a crash left half-made
# finds an infra process that was started but not yet recorded
MARKER = "PYCRI_SANDBOX"
# joined in this order: the user namespace first, so the launcher holds CAP_SYS_ADMIN over the others
JOIN = (("user", CLONE_NEWUSER), ("network", CLONE_NEWNET), ("ipc", CLONE_NEWIPC), ("uts", CLONE_NEWUTS))
NEW = CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWCGROUP


class LauncherArgs:
    """The launcher's options (a plain class: dataclasses would import inspect and re, ~10 ms)."""

    __slots__ = ("uid", "gid", "pause", "sandbox", "user", "network", "ipc", "uts", "pause_fd")

    def __init__(self, uid: int, gid: int, pause: str, sandbox: str = "", user: str = "", network: str = "",
                 ipc: str = "", uts: str = "", pause_fd: int = -1) -> None:
        self.uid, self.gid, self.pause, self.sandbox = uid, gid, pause, sandbox
        self.user, self.network, self.ipc, self.uts, self.pause_fd = user, network, ipc, uts, pause_fd

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LauncherArgs) and all(
            getattr(self, name) == getattr(other, name) for name in self.__slots__)

    def __repr__(self) -> str:
        return "LauncherArgs(" + ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__) + ")"


USAGE = ("usage: pycri-infra --uid U --gid G [--sandbox ID] [--user P] [--network P] [--ipc P] [--uts P] "
         "[--pause-fd FD] PAUSE")


def parse_args(argv: list[str]) -> LauncherArgs:
    """The launcher's command line (infra.launcher_command writes it): `--name value` options
    and the pause binary last. Raises ValueError with the usage on anything else."""
    options: dict[str, str] = {}
    rest: list[str] = []
    names = {"--uid", "--gid", "--sandbox", "--pause-fd", *(f"--{kind}" for kind, _ in JOIN)}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in names:
            if i + 1 >= len(argv):
                raise ValueError(f"{arg} needs a value; {USAGE}")
            options[arg[2:].replace("-", "_")] = argv[i + 1]
            i += 2
            continue
        if arg.startswith("--"):
            raise ValueError(f"unknown option {arg}; {USAGE}")
        rest.append(arg)
        i += 1
    if len(rest) != 1 or "uid" not in options or "gid" not in options:
        raise ValueError(USAGE)
    try:
        return LauncherArgs(uid=int(options.pop("uid")), gid=int(options.pop("gid")),
                            pause_fd=int(options.pop("pause_fd", "-1")), pause=rest[0], **options)
    except ValueError:
        raise ValueError(f"--uid, --gid and --pause-fd take numbers; {USAGE}") from None


def bootstrap(src_root: str) -> str:
    """The `-c` program of `python -IS`: the pycri package made by hand (its path: the folder
    that holds sandbox/ and kernel/), then run()."""
    return _package(src_root) + "from pycri.sandbox.pause import run; run()"


def _package(src_root: str) -> str:
    """The start of a `-c` program that makes the `pycri` package by hand (no site-packages)."""
    return f"import sys; p = type(sys)('pycri'); p.__path__ = [{src_root!r}]; sys.modules['pycri'] = p; "


def last_cap() -> int:
    with open("/proc/sys/kernel/cap_last_cap") as f:
        return int(f.read())


def join(kernel: Syscall, paths: dict[str, str]) -> None:
    for kind, flag in JOIN:
        if not paths.get(kind):
            continue
        fd = os.open(paths[kind], os.O_RDONLY | os.O_CLOEXEC)
        try:
            kernel.setns(fd, flag)
        finally:
            os.close(fd)
        if kind == "user":  # as nsenter: the namespace's root, so what it makes belongs to a mapped id
            kernel.setresgid(0, 0, 0)
            kernel.setresuid(0, 0, 0)


def make_root(kernel: Syscall, binary: bytes | None) -> None:
    """A new read-only root, empty or of one file (`binary`, the pause binary, when it is not
    run from a memfd), the host's root detached (in the new mount namespace)."""
    kernel.mount("", "/", "", MS_REC | MS_PRIVATE)
    kernel.mount("tmpfs", STAGING, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0555,size=4m,nr_inodes=16")
    if binary is not None:
        fd = os.open(f"{STAGING}/{PAUSE_NAME}", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o555)
        try:
            view = memoryview(binary)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
    kernel.mount("", STAGING, "", MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.chdir(STAGING)
    kernel.pivot_root(".", ".")
    kernel.umount(".", MNT_DETACH)
    os.chdir("/")


def drop_privileges(kernel: Syscall, uid: int, gid: int, cap_last: int) -> None:
    """No capability in any set (bounding included), `uid`/`gid` only, no_new_privs."""
    for cap in range(cap_last + 1):
        kernel.prctl(PR_CAPBSET_DROP, cap)
    kernel.setgroups([])
    kernel.setresgid(gid, gid, gid)
    kernel.setresuid(uid, uid, uid)
    kernel.capset(CapSets(0, 0, 0))
    kernel.prctl(PR_SET_NO_NEW_PRIVS, 1)


def _child(kernel: Syscall, args: LauncherArgs, binary: bytes | None, cap_last: int, null: int,
           report: int) -> None:
    try:
        for target in (0, 1, 2):
            os.dup2(null, target)
        make_root(kernel, binary)
        drop_privileges(kernel, args.uid, args.gid, cap_last)
        # the memfd is close-on-exec: catatonit holds no descriptor of it, only its mapping
        program: int | str = args.pause_fd if binary is None else f"/{PAUSE_NAME}"
        os.execve(program, [PAUSE_NAME, "-P"], {MARKER: args.sandbox})
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, then gone
        try:
            os.write(report, f"{type(exc).__name__}: {exc}".encode()[:4000])
        finally:
            os._exit(127)


class LaunchFailed(Exception):
    """The infra process did not start (the message says why)."""


def launch(args: LauncherArgs) -> int:
    """Steps 1-5 above, up to the exec of the pause binary in the new PID namespace; its host pid.
    Raises LaunchFailed when the child reported a failure before its exec."""
    from pycri.kernel.linux import LinuxSyscall

    kernel = LinuxSyscall()
    binary: bytes | None = None
    if args.pause_fd >= 0:
        os.set_inheritable(args.pause_fd, False)
    else:
        with open(args.pause, "rb") as f:
            binary = f.read()
    cap_last = last_cap()
    null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
    join(kernel, {kind: getattr(args, kind) for kind, _ in JOIN})
    kernel.unshare(NEW)
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        _child(kernel, args, binary, cap_last, null, write_end)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 4096):
        chunks.append(chunk)
    os.close(read_end)
    if chunks:
        os.waitpid(pid, 0)
        raise LaunchFailed(f"the infra process failed: {b''.join(chunks).decode(errors='replace')}")
    return pid


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        pid = launch(args)
    except LaunchFailed as exc:
        print(exc, file=sys.stderr)
        return 1
    print(pid, flush=True)
    return 0


# -- the warm launcher (sandbox/warm_launcher.py) ------------------------------------------------

REQUEST_BYTES = 65536


def serve(channel: int, owner: int) -> None:
    """The warm launcher: a single-threaded interpreter with this module and pycri.kernel.linux
    imported that forks a launcher per request, so a pod's infra process starts without an
    interpreter's start-up. A request on the socket `channel` (from pycri, `owner`) is the
    launcher's argv (NUL-separated, without --pause-fd) with descriptors: a socket for the reply
    ("pid N" or "error MESSAGE"), then the pause memfd if there is one. The forked child is a
    launcher as `main` is one (its own session, cwd /, stdin/stdout/stderr /dev/null), and
    exits once it has replied. Ends at EOF on `channel`, and with its owner (PR_SET_PDEATHSIG)."""
    import signal
    import socket

    from pycri.kernel.linux import LinuxSyscall
    from pycri.kernel.syscall import PR_SET_PDEATHSIG

    LinuxSyscall().prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != owner:  # the owner died before the signal was asked for
        return
    signal.signal(signal.SIGCHLD, _reap)  # launchers exit once they have replied
    listener = socket.socket(fileno=channel)
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(listener, REQUEST_BYTES, 2)
        except OSError:
            return
        if not message:
            return
        pid = os.fork()
        if pid == 0:
            listener.close()
            _launch_for(message, fds)  # (never returns)
        for fd in fds:
            os.close(fd)


def _reap(signum: int, frame: object) -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def _launch_for(message: bytes, fds: list[int]) -> None:
    """In the forked child: launch, reply, exit."""
    import signal

    status = 1
    reply = fds[0] if fds else -1
    try:
        for fd in fds:  # (SCM_RIGHTS gives them without close-on-exec: the pause binary gets none)
            os.set_inheritable(fd, False)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setsid()
        os.chdir("/")
        null = os.open("/dev/null", os.O_RDWR)
        for target in (0, 1, 2):
            os.dup2(null, target)
        argv = message.decode().split("\0")
        if len(fds) > 1:
            argv = [*argv[:-1], "--pause-fd", str(fds[1]), argv[-1]]
        text = f"pid {launch(parse_args(argv))}"
        status = 0
    except BaseException as exc:  # noqa: BLE001 - the reply says what went wrong
        text = f"error {exc}"
    try:
        if reply >= 0:
            os.write(reply, text.encode()[:REQUEST_BYTES])
    finally:
        os._exit(status)


def serve_bootstrap(src_root: str, channel: int, owner: int) -> str:
    """The `-c` program of `python -IS` for the warm launcher (as `bootstrap`)."""
    return _package(src_root) + f"from pycri.sandbox.pause import launch, serve; serve({channel}, {owner})"


def run() -> None:
    """The bootstrap's entry: main(), then exit without the interpreter's teardown."""
    from pycri.runtime.exits import exit_now

    exit_now(main())


if __name__ == "__main__":
    run()
