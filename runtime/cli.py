"""The runc-compatible command line of pycri-runtime.

    pycri-runtime [--root DIR] [--log FILE] [--log-format text|json] [--systemd-cgroup] [--debug] COMMAND ...

--systemd-cgroup (runc's): `create` takes linux.cgroupsPath as `slice:prefix:name` and asks
systemd for the scope <prefix>-<name>.scope in that slice (cgroups.systemd); the container's
state remembers the unit, so `delete` stops it and `update` sets its properties without the flag.

Commands: create, start, state, kill, delete, exec, update, list, features, events --stats.
Each command module is imported only when it runs (see runtime/__init__.py on start-up).
"""
from __future__ import annotations

import sys

from pycri.runtime import log
from pycri.runtime.args import BOOL, INT, LIST, STRING, FlagSpec, UsageError, parse
from pycri.runtime.errors import ContainerNotExist, RuntimeFailure

VERSION = "0.1.0"
SPEC_VERSION = "1.2.0"
PROG = "pycri-runtime"
EXEC_FAILED = 255  # runc's exit status when `exec` could not start the process

GLOBAL_FLAGS = FlagSpec(
    ("root", STRING), ("log", STRING), ("log-format", STRING), ("systemd-cgroup", BOOL), ("debug", BOOL),
    ("version|v", BOOL), ("help|h", BOOL), ("criu", STRING), ("rootless", STRING),
)
COMMAND_FLAGS = {
    "create": FlagSpec(("bundle|b", STRING), ("pid-file", STRING), ("console-socket", STRING), ("no-pivot", BOOL),
                       ("no-new-keyring", BOOL), ("preserve-fds", INT)),
    "start": FlagSpec(),
    "state": FlagSpec(),
    "kill": FlagSpec(("all|a", BOOL)),
    "delete": FlagSpec(("force|f", BOOL)),
    "exec": FlagSpec(("process|p", STRING), ("detach|d", BOOL), ("pid-file", STRING), ("console-socket", STRING),
                     ("tty|t", BOOL), ("cwd", STRING), ("env|e", LIST), ("user|u", STRING),
                     ("additional-gids|g", LIST), ("cap|c", LIST), ("no-new-privs", BOOL), ("preserve-fds", INT),
                     ("process-label", STRING), ("apparmor", STRING), ("ignore-paused", BOOL), ("cgroup", LIST)),
    "list": FlagSpec(("format|f", STRING), ("quiet|q", BOOL)),
    "features": FlagSpec(),
    "update": FlagSpec(("resources|r", STRING), ("memory", STRING), ("memory-reservation", STRING),
                       ("memory-swap", STRING), ("cpu-shares", STRING), ("cpu-quota", STRING), ("cpu-period", STRING),
                       ("cpu-rt-period", STRING), ("cpu-rt-runtime", STRING), ("cpuset-cpus", STRING),
                       ("cpuset-mems", STRING), ("pids-limit", STRING), ("blkio-weight", STRING),
                       ("kernel-memory", STRING), ("kernel-memory-tcp", STRING), ("l3-cache-schema", STRING),
                       ("mem-bw-schema", STRING)),
    "events": FlagSpec(("stats", BOOL), ("interval", STRING)),
}
USAGE = f"""usage: {PROG} [global options] command [command options] [arguments...]

global options: --root DIR (default /run/pycri-runtime), --log FILE, --log-format text|json,
  --systemd-cgroup (cgroupsPath is slice:prefix:name, the container gets a systemd scope), --debug

commands:
  create [-b BUNDLE] [--pid-file F] [--console-socket S] [--no-pivot] [--preserve-fds N] ID
  start ID
  state ID
  kill [--all] ID [SIGNAL]
  delete [--force] ID
  exec [--process F | ID CMD...] [-d] [--pid-file F] [--console-socket S] [-t] [--cwd D] [-e K=V] [-u UID[:GID]] ID
  update [--resources F|-] [--memory N] [--cpu-quota N] ... ID
  list [--format table|json] [-q]
  features
  events --stats ID
"""


def _version() -> str:
    return (f"{PROG} version {VERSION}\nspec: {SPEC_VERSION}\n"
            f"python: {sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}\n")


def _one_id(command: str, positional: list[str], extra: int = 0) -> str:
    if not positional:
        raise UsageError(f"{command}: a container id is required")
    if len(positional) > 1 + extra:
        raise UsageError(f"{command}: unexpected arguments {positional[1 + extra:]}")
    return positional[0]


def run_command(command: str, root: str, argv: list[str], systemd_cgroup: bool = False) -> int:
    from pycri.runtime.state import StateStore

    flags, positional = parse(COMMAND_FLAGS[command], argv)
    store = StateStore(root)
    if command == "state":
        from pycri.runtime import commands

        commands.state(store, _one_id(command, positional))
    elif command == "start":
        from pycri.runtime import commands

        commands.start(store, _one_id(command, positional))
    elif command == "kill":
        from pycri.runtime import commands
        from pycri.runtime.signals import parse_signal

        container_id = _one_id(command, positional, extra=1)
        sig = parse_signal(positional[1]) if len(positional) > 1 else 15
        commands.kill(store, container_id, sig, all_processes=flags.flag("all"))
    elif command == "delete":
        from pycri.runtime import commands

        commands.delete(store, _one_id(command, positional), force=flags.flag("force"))
    elif command == "create":
        from pycri.runtime import cgroup_lock

        cgroup_lock.warm()  # the grace period of the cgroup.procs write, beside the imports
        from pycri.runtime.create import CreateOptions, create

        container_id = _one_id(command, positional)
        try:
            create(store, container_id, CreateOptions(
                bundle=flags.string("bundle", "."), pid_file=flags.string("pid-file"),
                console_socket=flags.string("console-socket"), no_pivot=flags.flag("no-pivot"),
                no_new_keyring=flags.flag("no-new-keyring"), preserve_fds=flags.integer("preserve-fds"),
                systemd_cgroup=systemd_cgroup))
        except RuntimeFailure as e:
            raise RuntimeFailure(f"{PROG} create failed: {e}") from None
    elif command == "exec":
        from pycri.runtime import cgroup_lock

        cgroup_lock.warm()
        from pycri.runtime.exec_process import exec_command

        if not positional:
            raise UsageError("exec: a container id is required")
        try:
            return exec_command(store, positional[0], positional[1:], flags)
        except ContainerNotExist:
            raise
        except RuntimeFailure as e:
            log.current.error(f"exec failed: {e}")
            return EXEC_FAILED
    elif command == "update":
        from pycri.runtime import commands

        commands.update(store, _one_id(command, positional), flags.string("resources"), flags)
    elif command == "list":
        from pycri.runtime import commands

        commands.list_containers(store, flags.string("format", "table"), flags.flag("quiet"))
    elif command == "features":
        from pycri.runtime import commands

        commands.features()
    elif command == "events":
        from pycri.runtime import commands

        if not flags.flag("stats"):
            raise UsageError("events: only --stats (one sample) is supported")
        commands.events_stats(store, _one_id(command, positional))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        flags, rest = parse(GLOBAL_FLAGS, argv)
    except UsageError as e:
        sys.stderr.write(f"{PROG}: {e}\n{USAGE}")
        return 1
    if flags.flag("version"):
        sys.stdout.write(_version())
        return 0
    try:
        logger = log.Logger(flags.string("log") or None, flags.string("log-format", "text"), flags.flag("debug"))
    except ValueError as e:
        sys.stderr.write(f"{PROG}: {e}\n")
        return 1
    log.current = logger
    if flags.flag("help") or not rest:
        sys.stdout.write(USAGE)
        return 0 if flags.flag("help") else 1
    command, args = rest[0], rest[1:]
    if command in ("help", "--help", "-h"):
        sys.stdout.write(USAGE)
        return 0
    if command not in COMMAND_FLAGS:
        logger.error(f"No help topic for '{command}'")
        return 1
    root = flags.string("root", "/run/pycri-runtime")
    try:
        return run_command(command, root, args, systemd_cgroup=flags.flag("systemd-cgroup"))
    except RuntimeFailure as e:
        logger.error(str(e))
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # a bug: say what, and where with --debug
        if flags.flag("debug"):
            import traceback

            logger.debug(traceback.format_exc())
        logger.error(f"{command}: internal error: {type(e).__name__}: {e}")
        return 1


def run() -> None:
    """The launcher's entry: main(), then exit without the interpreter's teardown (there is
    nothing to clean up, and tearing down the modules costs a CLI call ~10 ms)."""
    from pycri.runtime.exits import exit_now

    exit_now(main())


if __name__ == "__main__":
    raise SystemExit(main())
