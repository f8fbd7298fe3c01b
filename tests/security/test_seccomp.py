"""The runtime's default seccomp profile keeps a container out of new namespaces: it used to
allow clone/clone3 with any flags, so a container made a user and network namespace, held every
capability there and reached NETLINK_NETFILTER. Now, as in the default profiles of Docker and
containerd, clone with a namespace flag is refused (EPERM), clone3 answers ENOSYS (the C library
falls back to clone) and unshare/setns stay refused, unless the container has CAP_SYS_ADMIN;
fork and threads keep working. Checked for pycri's runtime and for runc, which get the same spec."""
from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.harness import Pycri
from tests.security.hostile import f, layer, push_image

# a static probe: each line "<what>: ok" or "<what>: errno N"
PROBE = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <linux/sched.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/netlink.h>

static void report(const char *what, long r) {
    if (r < 0) printf("%s: errno %d\n", what, errno);
    else printf("%s: ok\n", what);
}

static long raw_clone(unsigned long flags) {
    long pid = syscall(SYS_clone, flags | SIGCHLD, 0, 0, 0, 0);
    if (pid == 0) {
        int fd = socket(AF_NETLINK, SOCK_RAW, NETLINK_NETFILTER);
        _exit(fd < 0 ? 1 : 0);
    }
    if (pid > 0) waitpid(pid, 0, 0);
    return pid;
}

static void *thread(void *arg) { return arg; }

int main(void) {
    setvbuf(stdout, 0, _IONBF, 0);
    report("fork", raw_clone(0));
    report("clone-newuser-newnet", raw_clone(CLONE_NEWUSER | CLONE_NEWNET));
    struct clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = CLONE_NEWUSER;
    args.exit_signal = SIGCHLD;
    long pid = syscall(SYS_clone3, &args, sizeof args);
    if (pid == 0) _exit(0);
    if (pid > 0) waitpid(pid, 0, 0);
    report("clone3-newuser", pid);
    report("unshare-newuser", unshare(CLONE_NEWUSER));
    pthread_t t;
    int e = pthread_create(&t, 0, thread, 0);
    if (e == 0) { pthread_join(t, 0); printf("thread: ok\n"); } else printf("thread: errno %d\n", e);
    return 0;
}
"""
RUNTIME_DEFAULT = {"profile_type": 0}  # SecurityProfile.RuntimeDefault


@pytest.fixture(scope="module")
def probe_image(tmp_path_factory: pytest.TempPathFactory) -> str:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the clone probe")
    work = tmp_path_factory.mktemp("nsclone")
    (work / "nsclone.c").write_text(PROBE)
    subprocess.run(["gcc", "-static", "-O2", "-o", str(work / "nsclone"), str(work / "nsclone.c"), "-lpthread"],
                   check=True, capture_output=True)
    binary = (work / "nsclone").read_bytes()
    key = hashlib.sha256(binary).hexdigest()[:16]
    return push_image("nsclone", layer(f"nsclone-{key}", f("bin/nsclone", binary, 0o755)))


def probe(pycri: Pycri, handler: str, image: str, name: str, security: dict) -> dict[str, str]:
    pod = pycri.run_pod(name, runtime=handler)
    ctr = pycri.run(pod, name, "probe", ["sleep", "1000"], image=image, linux={"security_context": security})
    spec = pycri.crictl_json("inspect", ctr)["info"]["runtimeSpec"]
    assert spec["linux"].get("seccomp"), "the container runs without the runtime's default profile"
    result = pycri.crictl("exec", "-s", ctr, "/bin/nsclone")
    return dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)


@pytest.mark.parametrize("handler", ["pycri", "runc"])
def test_default_profile_refuses_new_namespaces(pycri: Pycri, handler: str, probe_image: str) -> None:
    seen = probe(pycri, handler, probe_image, "seccomp", {"seccomp": RUNTIME_DEFAULT})
    assert seen == {
        "fork": "ok",
        "clone-newuser-newnet": "errno 1",  # EPERM: clone with namespace flags
        "clone3-newuser": "errno 38",  # ENOSYS, so that the C library falls back to clone
        "unshare-newuser": "errno 1",
        "thread": "ok",
    }, seen


@pytest.mark.parametrize("handler", ["pycri", "runc"])
def test_default_profile_with_sys_admin_allows_them(pycri: Pycri, handler: str, probe_image: str) -> None:
    seen = probe(pycri, handler, probe_image, "seccompadmin",
                 {"seccomp": RUNTIME_DEFAULT, "capabilities": {"add_capabilities": ["SYS_ADMIN"]}})
    assert seen == {"fork": "ok", "clone-newuser-newnet": "ok", "clone3-newuser": "ok",
                    "unshare-newuser": "ok", "thread": "ok"}, seen
