"""`exec` into a running container: namespaces, cgroups, user, env, cwd, exit codes, --detach."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.conftest import LAYOUT, Runtime, new_id, ns_link, reap, spec_has_namespace


@pytest.fixture
def running(pycri: Runtime, make_bundle, subreaper: set[int]) -> tuple[str, int, object]:
    bundle = make_bundle("sleep", "1000")
    bundle.config["hostname"] = "exec-box"
    bundle.config["process"]["env"].append("FROM_CONFIG=yes")
    bundle.write()
    cid = new_id()
    pycri.create(cid, bundle)
    pid = pycri.state(cid)["pid"]
    subreaper.add(pid)
    pycri.run("start", cid, check=True)
    return cid, pid, bundle


def test_exec_output_exit_code_and_namespaces(pycri: Runtime, running) -> None:
    cid, pid, _ = running
    result = pycri.run("exec", cid, "sh", "-c", "echo out; echo err >&2; hostname; cat /proc/1/cmdline; "
                       "echo; echo $FROM_CONFIG; for n in mnt pid net; do readlink /proc/self/ns/$n; done; "
                       "exit 5")
    assert result.returncode == 5
    lines = result.stdout.splitlines()
    assert lines[:3] == ["out", "exec-box", "sleep\x001000\x00"]
    assert lines[3] == "yes"
    assert lines[4:7] == [ns_link(pid, "mnt"), ns_link(pid, "pid"), ns_link(pid, "net")]
    assert result.stderr == "err\n"
    killed = pycri.run("exec", cid, "sh", "-c", "kill -9 $$")
    assert killed.returncode == 137


def test_exec_process_json_user_env_cwd(pycri: Runtime, running, tmp_path: Path) -> None:
    cid, _, bundle = running
    process = {
        "args": ["sh", "-c", "id; pwd; echo $ONLY; echo HOME=$HOME; grep CapEff /proc/self/status; "
                 "cat /proc/self/cgroup"],
        "env": ["PATH=/bin", "ONLY=this"], "cwd": "/tmp",
        "user": {"uid": 1000, "gid": 1000, "additionalGids": [44]},
        "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"]},
        "noNewPrivileges": True,
    }
    (tmp_path / "process.json").write_text(json.dumps(process))
    result = pycri.run("exec", "--process", str(tmp_path / "process.json"), cid)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "uid=1000(user) gid=1000(user) groups=44(video)"
    assert lines[1:4] == ["/tmp", "this", "HOME=/home/user"]
    assert lines[4].split()[1] == "0000000000000000"  # non-root without ambient: no caps after execve
    cgroups = lines[5:]
    if LAYOUT.v2:  # one line; "/" inside the container's cgroup namespace (runc spec asks for one on v2)
        assert cgroups == ["0::/" if spec_has_namespace(bundle, "cgroup") else f"0::{bundle.linux['cgroupsPath']}"]
    else:
        memory = [line for line in cgroups if ":memory:" in line]
        assert len(memory) == 1 and memory[0].endswith(bundle.linux["cgroupsPath"])


def test_exec_flags_and_failures(pycri: Runtime, running) -> None:
    cid, _, _ = running
    result = pycri.run("exec", "--env", "X=1", "--cwd", "/etc", "--user", "1000:44", cid, "sh", "-c", "echo $X; pwd; id -u; id -g")
    assert result.stdout.split() == ["1", "/etc", "1000", "44"]
    missing = pycri.run("exec", cid, "no-such-binary")
    assert missing.returncode == 255
    assert 'exec failed: unable to start container process: exec: \\"no-such-binary\\": executable file not found' in missing.stderr
    nocontainer = pycri.run("exec", "nope", "true")
    assert nocontainer.returncode == 1 and "does not exist" in nocontainer.stderr


def test_exec_detached_writes_the_pid_file(pycri: Runtime, running, tmp_path: Path, subreaper: set[int]) -> None:
    cid, pid, _ = running
    pid_file = tmp_path / "exec.pid"
    marker = "/dev/shm/detached-done"  # the rootfs is read-only
    result = pycri.run("exec", "-d", "--pid-file", str(pid_file), cid, "sh", "-c", f"sleep 0.3; touch {marker}")
    assert result.returncode == 0
    exec_pid = int(pid_file.read_text())
    subreaper.add(exec_pid)
    status = Path(f"/proc/{exec_pid}/status").read_text()
    nspid = [line for line in status.splitlines() if line.startswith("NSpid:")][0].split()
    assert len(nspid) == 3 and nspid[-1] != str(exec_pid)  # host pid + pid inside the container
    assert reap(exec_pid) == 0  # we are the subreaper, as conmon would be
    assert pycri.run("exec", cid, "test", "-e", marker).returncode == 0


def test_exec_into_a_stopped_container_fails(pycri: Runtime, make_bundle, subreaper: set[int]) -> None:
    bundle = make_bundle("true")
    cid = new_id()
    pycri.create(cid, bundle)
    pid = pycri.state(cid)["pid"]
    subreaper.add(pid)
    pycri.run("start", cid, check=True)
    assert reap(pid) == 0
    pycri.wait_status(cid, "stopped")
    result = pycri.run("exec", cid, "true")
    assert result.returncode == 255 and "stopped" in result.stderr
