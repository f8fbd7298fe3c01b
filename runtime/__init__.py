"""pycri-runtime: pycri's own OCI runtime, with runc's command line so conmon can drive it.

The CLI is started once per container operation, so its start-up is most of what a call
costs. Every command imports only light standard-library modules: never json/re/enum,
dataclasses, typing, inspect, signal or socket (the classes are plain __slots__ classes,
JSON goes through the C accelerator, signals and sockets through `_signal`/`_socket`);
`state`, `start`, `kill`, `delete` and `--version` not even ctypes or select, which only
`create` and `exec` load. Each command module is imported when it runs, and anything only
some calls need inside the function that needs it (but before the child enters the
container: past pivot_root the standard library is out of reach). The allowlists in
tests/unit/test_runtime_cli.py and tests/integration/test_runtime_startup.py keep it so.
Module map:

- cli: global flags and the subcommand table; args: runc-style flag parsing (Flags)
- launcher: writes the fast-starting `pycri-runtime` script (`python -m pycri.runtime.launcher DEST`)
- spec: config.json / process.json as plain classes (spec.Record), with validation
- state: the state directory <root>/<id>/ (state.json, exec.fifo) and the status logic
- jsonlite: JSON through the C accelerator, without importing `json` (start-up)
- create: the `create` command (parent side); init: the two init stages in the children
- stages: forking the children, following them to "ready", cleaning up after failures
- exec_process: the `exec` command; commands: start/state/kill/delete/list/features/update/events
- sync: JSON messages between the runtime and its children; log: --log / --log-format
- namespaces: setns by path, unshare the new ones
- rootfs/: mountopts (options -> flags), securejoin (paths inside the rootfs), mountinfo,
  mounts (the spec's mounts), cgroupfs (the cgroup mount), devices (/dev nodes and links),
  protect (masked and read-only paths), pivot (pivot_root / MS_MOVE+chroot), __init__ (order)
- process/: setup (order of the steps before execve), capabilities, user, rlimits, lookup
  (args[0] in $PATH), console (pty over --console-socket), fds (--preserve-fds)
- seccomp: linux.seccomp -> kernel.SeccompProgram (loaded by kernel.linux with libseccomp)
- sysctl: namespaced sysctls only; signals: signal names and handlers; errors: RuntimeFailure

Cgroups are in the `cgroups` package; every kernel call goes through `kernel`.
"""
