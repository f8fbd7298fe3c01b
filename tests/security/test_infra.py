"""The infra process of a pod sharing its PID namespace (PID 1 of the namespace) is no way to
the host: a container that may ptrace it (CAP_SYS_PTRACE) used to read and write host files
through /proc/1/root, since PID 1 was a Python process of the host's mount namespace running
as host root with every capability. Now PID 1 is catatonit in a root of its own (one read-only
file), uid 65535, no capability, no_new_privs."""
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
        assert sh(pycri, ctr, "readlink /proc/1/exe")[1].strip() == "/catatonit"
        # the pod's namespaces, not the host's: the pod's hostname, network and IPC
        infra = pycri.crictl_json("inspectp", pod)["info"]["infra"]["pid"]
        own = pycri.crictl_json("inspect", ctr)["info"]["pid"]
        for kind in ("net", "ipc", "uts", "pid"):
            assert os.readlink(f"/proc/{infra}/ns/{kind}") == os.readlink(f"/proc/{own}/ns/{kind}"), kind
        assert os.readlink(f"/proc/{infra}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
        assert Path(f"/proc/{infra}/mountinfo").read_text().count("\n") == 1
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
    assert "sleep 1001" in seen and re.search(r"^\s*1\s+catatonit -P", seen, re.M), seen
    code, status = sh(pycri, second, "cat /proc/1/status")
    assert code == 0 and int(status_field(status, "CapEff"), 16) == 0, status
    stat = Path(f"/proc/{infra}/stat").read_text()
    pycri.crictl("stopp", pod)
    wait_gone(infra, stat)
    pycri.crictl("rmp", pod)
