"""Turning a spec Process into the running container process, in the container (after
pivot_root for init, after setns for exec), in runc's order:

oom_score_adj, rlimits, no_new_privs; seccomp now if no_new_privs is off (loading it needs
CAP_SYS_ADMIN then); bounding set; user (keeping capabilities); the other capability sets;
cwd; env (+HOME); lookup of args[0] (a missing executable is a create-time error); umask;
close-on-exec for all but stdio and preserved fds. `execute` then loads seccomp when
no_new_privs is on (as late as possible) and calls execve.
"""
from __future__ import annotations

import errno
import os

from pycri.kernel.syscall import PR_SET_KEEPCAPS, PR_SET_NO_NEW_PRIVS, SeccompProgram, Syscall
from pycri.runtime import log
from pycri.runtime.errors import RuntimeFailure
from pycri.runtime.process import capabilities, fds, rlimits, user
from pycri.runtime.process.lookup import look_path
from pycri.runtime.signals import SIGPIPE, SIGXFSZ, set_default
from pycri.runtime.spec import Process


class PreparedProcess:
    """What is left to do after `prepare`: load the late seccomp filter and execve."""

    def __init__(self, path: str, args: list[str], env: dict[str, str], late_seccomp: SeccompProgram | None) -> None:
        self.path = path
        self.args = args
        self.env = env
        self.late_seccomp = late_seccomp


def set_oom_score_adj(value: int) -> None:
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(value))
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM):
            log.current.warning(f"cannot set oom_score_adj to {value}: {e.strerror} (no CAP_SYS_RESOURCE?)")
        else:
            raise RuntimeFailure(f"set oom_score_adj: {e.strerror or e}") from None


def environment(process: Process) -> dict[str, str]:
    env: dict[str, str] = {}
    for entry in process.env:
        key, sep, value = entry.partition("=")
        if sep and key:
            env[key] = value
    if "HOME" not in env:
        env["HOME"] = user.home_of(process.user.uid)
    return env


def _chdir(path: str) -> bool:
    """True when done; False on a permission error (retried as the container user)."""
    try:
        os.chdir(path)
        return True
    except PermissionError:
        return False
    except OSError as e:
        raise RuntimeFailure(f"chdir to cwd ({path!r}) set in config.json failed: {e.strerror}") from None


def prepare(kernel: Syscall, process: Process, *, seccomp: SeccompProgram | None, preserve_fds: int = 0,
            oom_score_adj: bool = True) -> PreparedProcess:
    if oom_score_adj and process.oom_score_adj is not None:
        set_oom_score_adj(process.oom_score_adj)
    rlimits.apply_rlimits(kernel, process.rlimits)
    if process.no_new_privileges:
        kernel.prctl(PR_SET_NO_NEW_PRIVS, 1)
    if seccomp is not None and not process.no_new_privileges:
        _load(kernel, seccomp)
    plan = capabilities.CapabilityPlan(process.capabilities, capabilities.last_cap())
    if plan.unknown:
        log.current.warning(f"unknown or unsupported capabilities left out: {', '.join(plan.unknown)}")
    capabilities.drop_bounding(kernel, plan)
    cwd_done = _chdir(process.cwd)
    kernel.prctl(PR_SET_KEEPCAPS, 1)
    user.switch_user(kernel, process.user)
    kernel.prctl(PR_SET_KEEPCAPS, 0)
    capabilities.apply_sets(kernel, plan)
    if not cwd_done:
        try:
            os.chdir(process.cwd)
        except OSError as e:
            raise RuntimeFailure(f"chdir to cwd ({process.cwd!r}) set in config.json failed: {e.strerror}") from None
    env = environment(process)
    path = look_path(process.args[0], [f"{k}={v}" for k, v in env.items()])
    os.umask(process.user.umask if process.user.umask is not None else 0o022)
    fds.keep_only(preserve_fds)
    late = seccomp if seccomp is not None and process.no_new_privileges else None
    return PreparedProcess(path, list(process.args), env, late)


def _load(kernel: Syscall, program: SeccompProgram) -> None:
    try:
        kernel.load_seccomp(program)
    except OSError as e:
        raise RuntimeFailure(f"load seccomp filter: {e.strerror or e}") from None


def execute(kernel: Syscall, prepared: PreparedProcess) -> None:
    """Never returns: execve, or an OSError."""
    # Python ignores SIGPIPE and SIGXFSZ; ignored signals survive execve
    for sig in (SIGPIPE, SIGXFSZ):
        set_default(sig)
    if prepared.late_seccomp is not None:
        _load(kernel, prepared.late_seccomp)
    os.execve(prepared.path, prepared.args, prepared.env)
