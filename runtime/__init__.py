"""pycri-runtime: pycri's own OCI runtime, with runc's command line so conmon can drive it.

The CLI is started once per container operation, so everything on the paths of `state`,
`start`, `kill`, `delete` and `--version` imports only light standard-library modules (no
json/re/enum, dataclasses, typing or ctypes; tests/unit/test_runtime_cli.py checks it);
`create`, `exec` and `update` import what they need when they run. Module map:

- cli: global flags and the subcommand table; args: runc-style flag parsing (Flags)
- launcher: writes the fast-starting `pycri-runtime` script (`python -m runtime.launcher DEST`)
- spec: config.json / process.json as dataclasses, with validation
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
- sysctl: namespaced sysctls only; signals: signal names; errors: RuntimeFailure

Cgroups are in the `cgroups` package; every kernel call goes through `kernel`.
"""
