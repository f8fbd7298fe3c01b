"""The infra process of a pod sharing its PID namespace (PID 1 of the namespace) is no way to
the host: a container that may ptrace it (CAP_SYS_PTRACE) used to read and write host files
through /proc/1/root, since PID 1 was a Python process of the host's mount namespace running
as host root with every capability. Now PID 1 is catatonit in a root of its own (an empty
read-only tmpfs), uid 65535, no capability, no_new_privs, run from the daemon's sealed memfd:
one copy shared by every pod's PID 1, which nobody can write (the CVE-2019-5736 way, through
/proc/1/exe)."""
from __future__ import annotations

import os
import re
import time
import uuid
from pathlib import Path

import pytest

from tests.e2e.harness import Pycri

SHARED = {"security_context": {"namespace_options": {"pid": 0}}}  # NamespaceMode POD
PTRACE = {"security_context": {"namespace_options": {"pid": 0},
                               "capabilities": {"add_capabilities": ["SYS_PTRACE"]}}}

# PID 1 in `ps -o pid,args`: catatonit, run from the daemon's sealed memfd (its comm "memfd:catatonit")
PID_1 = r"^\s*1\s+({memfd:catatonit} )?catatonit -P"


def sh(pycri: Pycri, ctr: str, script: str) -> tuple[int, str]:
    result = pycri.crictl("exec", "-s", ctr, "sh", "-c", script, check=False)
    return result.returncode, result.stdout + result.stderr


def status_field(text: str, name: str) -> str:
    match = re.search(rf"^{name}:\s*(.*)$", text, re.M)
    assert match, text
    return match.group(1).strip()


def wait_gone(pid: int, start_line: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text() != start_line:
                return
        except OSError:
            return
        time.sleep(0.1)
    raise AssertionError(f"the infra process {pid} outlived its pod")


@pytest.mark.parametrize("handler", ["pycri", "runc"])
def test_ptrace_container_sees_nothing_of_the_host_through_pid_1(pycri: Pycri, handler: str) -> None:
    marker = f"pycri-infra-{uuid.uuid4().hex}"
    pod = pycri.run_pod("infra", runtime=handler, linux=SHARED)
    ctr = pycri.run(pod, "infra", "tracer", ["sleep", "1000"], linux=PTRACE)
    code, caps = sh(pycri, ctr, "grep CapEff /proc/self/status")
    assert code == 0 and int(status_field(caps, "CapEff"), 16) & (1 << 19), caps  # the container may ptrace
    try:
        # the host's root is not there: no /etc, nothing to read or write
        code, listing = sh(pycri, ctr, "ls -a /proc/1/root/")
        assert code == 0 and set(listing.split()) <= {".", "..", "catatonit"}, listing
        assert sh(pycri, ctr, "test -e /proc/1/root/etc/hostname")[0] != 0
        assert sh(pycri, ctr, "cat /proc/1/root/etc/shadow")[0] != 0
        assert sh(pycri, ctr, f"echo pwned > /proc/1/root/tmp/{marker}")[0] != 0
        assert sh(pycri, ctr, f"echo pwned > /proc/1/root/{marker}")[0] != 0
        assert not Path("/tmp", marker).exists() and not Path("/", marker).exists()
        # PID 1 is the static pause binary, without privilege
        code, status = sh(pycri, ctr, "cat /proc/1/status")
        assert code == 0, status
        for field in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            assert int(status_field(status, field), 16) == 0, (field, status)
        assert status_field(status, "NoNewPrivs") == "1"
        assert status_field(status, "Uid").split() == ["65535"] * 4
        assert status_field(status, "Gid").split() == ["65535"] * 4
        assert sh(pycri, ctr, "readlink /proc/1/exe")[1].strip() == "/memfd:catatonit (deleted)"
        # the pause binary every pod's PID 1 runs cannot be changed from a container that may ptrace one
        code, out = sh(pycri, ctr, "printf pwned > /proc/1/exe; printf pwned | dd of=/proc/1/exe conv=notrunc")
        assert code != 0, out
        assert sh(pycri, ctr, "head -c 4 /proc/1/exe")[1].startswith("\x7fELF")
        # the pod's namespaces, not the host's: the pod's hostname, network and IPC
        infra = pycri.crictl_json("inspectp", pod)["info"]["infra"]["pid"]
        own = pycri.crictl_json("inspect", ctr)["info"]["pid"]
        for kind in ("net", "ipc", "uts", "pid"):
            assert os.readlink(f"/proc/{infra}/ns/{kind}") == os.readlink(f"/proc/{own}/ns/{kind}"), kind
        assert os.readlink(f"/proc/{infra}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
        assert Path(f"/proc/{infra}/mountinfo").read_text().count("\n") == 1
        # and it is one copy for all the pods (its pages shared), not one a pod
        other = pycri.run_pod("infra-other", runtime=handler, linux=SHARED)
        other_infra = pycri.crictl_json("inspectp", other)["info"]["infra"]["pid"]
        assert os.stat(f"/proc/{infra}/exe").st_ino == os.stat(f"/proc/{other_infra}/exe").st_ino
        pycri.crictl("stopp", other)
        pycri.crictl("rmp", other)
    finally:
        for leftover in (Path("/tmp", marker), Path("/", marker)):
            leftover.unlink(missing_ok=True)
    stat = Path(f"/proc/{infra}/stat").read_text()
    pycri.crictl("stopp", pod)
    wait_gone(infra, stat)
    pycri.crictl("rmp", pod)


@pytest.fixture
def tmp_path(reachable_tmp_path: Path) -> Path:
    """A user-namespace pod's root (a mapped id) must reach its rootfs and pinned namespaces, as
    under /var/lib/pycri (tests.e2e.conftest.reachable_tmp_path)."""
    return reachable_tmp_path


def test_infra_survives_a_restart_and_keeps_the_pod_user_namespace(pycri: Pycri) -> None:
    mapping = [{"container_id": 0, "host_id": 1000, "length": 100000}]
    userns = {"security_context": {"namespace_options": {
        "pid": 0, "userns_options": {"mode": 0, "uids": mapping, "gids": mapping}}}}
    pod = pycri.run_pod("infrauserns", linux=userns)
    first = pycri.run(pod, "infrauserns", "first", ["sleep", "1001"], linux=SHARED)
    infra = pycri.crictl_json("inspectp", pod)["info"]["infra"]["pid"]
    assert os.stat(f"/proc/{infra}").st_uid == 1000 + 65535
    assert os.readlink(f"/proc/{infra}/ns/user") == os.readlink(
        f"/proc/{pycri.crictl_json('inspect', first)['info']['pid']}/ns/user")
    pycri.kill()
    pycri.start()
    second = pycri.run(pod, "infrauserns", "second", ["sleep", "1002"], linux=SHARED)
    seen = pycri.crictl("exec", "-s", second, "ps", "-o", "pid,args").stdout
    assert "sleep 1001" in seen and re.search(PID_1, seen, re.M), seen
    code, status = sh(pycri, second, "cat /proc/1/status")
    assert code == 0 and int(status_field(status, "CapEff"), 16) == 0, status
    stat = Path(f"/proc/{infra}/stat").read_text()
    pycri.crictl("stopp", pod)
    wait_gone(infra, stat)
    pycri.crictl("rmp", pod)
