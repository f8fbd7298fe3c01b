"""The container's init, in two forked stages (`create` is the parent of the first).

Stage 1, "namespaces" (a child of `create`, which imports this module in it while the parent
puts it in the container's cgroups): waits for the parent's go, joins the namespaces given by
path and unshares the new ones, forks stage 2, reports its host pid and exits; stage 2 is
reparented to the nearest subreaper (conmon).

User namespaces (as runc's nsexec): one given by path is joined first of all (it grants the
rights to join the pod's other namespaces, which it owns); a new one is unshared on its own
after the joins, and stage 1 waits while the parent, still root on the host, writes its
uid_map and gid_map; only then are the other new namespaces unshared, so that the user
namespace owns them. Either way stage 1 then becomes root (ids 0) of the user namespace:
the rootfs set-up creates files, which an unmapped id cannot.

Stage 2, "init" (PID 1 of a new PID namespace): hostname, rootfs and mounts, pivot_root,
console, sysctls, read-only/masked paths, the process attributes (setup.prepare), then tells
the parent it is ready and blocks opening the exec fifo for writing until `start` opens it
for reading, and execs the user's process.

A failure in either stage goes to the parent as an error message, then the stage exits.
"""
from __future__ import annotations

import os

from pycri.kernel.syscall import Syscall
from pycri.runtime import namespaces, rootfs, sysctl
from pycri.runtime.errors import RuntimeFailure
from pycri.runtime.process import setup
from pycri.runtime.spec import Spec
from pycri.runtime.stages import run_child
from pycri.runtime.sync import Channel

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pycri.runtime.create import InitOptions

# how long stage 1 waits for the parent to write its user namespace's maps
USERNS_TIMEOUT = 30.0


def stage_namespaces(to_parent: Channel, from_parent: Channel, kernel: Syscall, spec: Spec,
                     options: InitOptions) -> None:
    if options.console_fd >= 0:  # a terminal: stage_init's module, loaded as the host's root (as this one)
        from pycri.runtime.process import console  # noqa: F401
    go = from_parent.receive()
    if go.get("type") != "go":
        raise RuntimeFailure(f"unexpected message from the runtime: {go}")
    # opened while still root on the host: in a user namespace the path may not be reachable
    fifo = os.open(options.fifo_path, os.O_PATH | os.O_CLOEXEC)
    # written while root on the host too: the runtime is not dumpable, so its /proc/self files
    # belong to the host's root, whom the root of a new user namespace is not (kept across
    # fork and execve)
    if spec.process.oom_score_adj is not None:
        setup.set_oom_score_adj(spec.process.oom_score_adj)
    enter_namespaces(kernel, spec, to_parent, from_parent)
    from_parent.close()
    pid = os.fork()
    if pid == 0:
        run_child(to_parent, stage_init, kernel, spec, options, fifo)
    to_parent.send("pid", pid=pid)


def enter_namespaces(kernel: Syscall, spec: Spec, to_parent: Channel, from_parent: Channel) -> None:
    opened = namespaces.open_paths({ns.type: ns.path for ns in spec.linux.namespaces if ns.path})
    try:
        namespaces.join(kernel, opened)
    finally:
        namespaces.close(opened)
    user = spec.linux.namespace("user")
    if user is not None and not user.path:
        namespaces.create(kernel, ["user"])
        to_parent.send("userns", pid=os.getpid())
        reply = from_parent.receive(timeout=USERNS_TIMEOUT)
        if reply.get("type") != "mapped":
            raise RuntimeFailure(f"unexpected message from the runtime: {reply}")
    if user is not None:
        try:
            kernel.setresgid(0, 0, 0)
            kernel.setresuid(0, 0, 0)
        except OSError as e:
            raise RuntimeFailure(f"become root of the user namespace: {e.strerror or e}") from None
    namespaces.create(kernel, [ns.type for ns in spec.linux.namespaces if not ns.path and ns.type != "user"])


def stage_init(to_parent: Channel, kernel: Syscall, spec: Spec, options: InitOptions, fifo: int) -> None:
    os.setsid()
    try:
        if spec.hostname:
            kernel.sethostname(spec.hostname)
        if spec.domainname:
            kernel.setdomainname(spec.domainname)
    except OSError as e:
        raise RuntimeFailure(f"set hostname: {e.strerror or e}") from None
    rootfs.prepare(kernel, spec, no_pivot=options.no_pivot)
    if options.console_fd >= 0:
        from pycri.runtime.process import console  # loaded by stage_namespaces

        console.setup_console(kernel, options.console_fd, mount_dev_console=True)  # closes the socket
    sysctl.write_all(spec.linux.sysctl)
    rootfs.finalize(kernel, spec)
    prepared = setup.prepare(kernel, spec.process, seccomp=options.seccomp, preserve_fds=options.preserve_fds,
                             oom_score_adj=False)  # set by stage 1
    to_parent.send("ready")
    to_parent.close()
    # blocks until `start` opens the fifo for reading
    fd = os.open(f"/proc/self/fd/{fifo}", os.O_WRONLY | os.O_CLOEXEC)
    os.write(fd, b"0")
    os.close(fd)
    os.close(fifo)
    try:
        setup.execute(kernel, prepared)
    except OSError as e:
        os.write(2, f"pycri-runtime: exec {prepared.path}: {e.strerror or e}\n".encode())
        os._exit(127 if e.errno == 2 else 126)
