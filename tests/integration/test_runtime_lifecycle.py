"""create/start/state/kill/delete of pycri-runtime on the real kernel: namespaces, rootfs,
mounts, user, capabilities, hostname, cgroups, failures that leave nothing behind."""
from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.integration.conftest import (
    LAYOUT, Bundle, Runtime, cgroup_dirs, new_id, ns_link, reap, spec_has_namespace,
)

DEFAULT_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]  # runc spec's default set


def run_to_exit(runtime: Runtime, bundle: Bundle, tmp_path: Path, reaped: set[int],
                cid: str | None = None) -> tuple[int | None, str, str]:
    """create + start; wait for the exit; (exit code, stdout, stderr) of the container."""
    cid = cid or new_id()
    out, err = tmp_path / f"{cid}.out", tmp_path / f"{cid}.err"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        runtime.create(cid, bundle, stdout=stdout, stderr=stderr)
    pid = runtime.state(cid)["pid"]
    reaped.add(pid)
    runtime.run("start", cid, check=True)
    code = reap(pid)
    runtime.wait_status(cid, "stopped")
    runtime.run("delete", cid, check=True)
    return code, out.read_text(), err.read_text()


def test_pid1_is_the_command_and_the_lifecycle_states(pycri: Runtime, make_bundle, tmp_path: Path,
                                                      subreaper: set[int]) -> None:
    bundle = make_bundle("cat", "/proc/1/cmdline")
    cid = new_id()
    out = tmp_path / "out"
    with open(out, "wb") as stdout:
        result = pycri.create(cid, bundle, "--pid-file", str(tmp_path / "pid"), stdout=stdout)
    assert result.returncode == 0
    state = pycri.state(cid)
    assert state["status"] == "created"
    assert state["id"] == cid and state["bundle"] == str(bundle.path) and state["rootfs"] == str(bundle.rootfs)
    assert state["created"].endswith("Z") and state["ociVersion"].startswith("1.")
    pid = state["pid"]
    subreaper.add(pid)
    assert int((tmp_path / "pid").read_text()) == pid
    assert (pycri.root / cid / "exec.fifo").exists()
    assert out.read_text() == ""  # blocked before exec until start
    assert pycri.run("start", cid).returncode == 0
    assert reap(pid) == 0
    assert out.read_bytes() == b"cat\0/proc/1/cmdline\0"
    stopped = pycri.wait_status(cid, "stopped")
    assert stopped["pid"] == 0
    again = pycri.run("start", cid)
    assert again.returncode == 1 and "stopped" in again.stderr
    assert pycri.run("delete", cid).returncode == 0
    gone = pycri.run("state", cid)
    assert gone.returncode == 1 and "does not exist" in gone.stderr
    assert not (pycri.root / cid).exists()


def test_own_mount_pid_uts_ipc_net_namespaces(pycri: Runtime, make_bundle, subreaper: set[int]) -> None:
    bundle = make_bundle("sleep", "100")
    cid = new_id()
    pycri.create(cid, bundle)
    pid = pycri.state(cid)["pid"]
    subreaper.add(pid)
    for name in ("mnt", "pid", "uts", "ipc", "net"):
        assert ns_link(pid, name) != ns_link("self", name), name
    if spec_has_namespace(bundle, "cgroup"):  # `runc spec` asks for one on cgroup v2
        assert LAYOUT.v2
        assert ns_link(pid, "cgroup") != ns_link("self", "cgroup")
    else:  # and none on v1
        assert not LAYOUT.v2
        assert ns_link(pid, "cgroup") == ns_link("self", "cgroup")
    status = Path(f"/proc/{pid}/status").read_text()
    nspid = [line for line in status.splitlines() if line.startswith("NSpid:")][0].split()
    assert nspid[-1] == "1"  # PID 1 in its own PID namespace
    pycri.run("start", cid, check=True)
    pycri.run("kill", cid, "KILL", check=True)
    assert reap(pid) == 137


@pytest.fixture
def netns() -> str:
    name = f"pycri-it-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    yield name
    subprocess.run(["ip", "netns", "del", name], check=False)


def test_joins_a_network_namespace_by_path(pycri: Runtime, make_bundle, netns: str, tmp_path: Path,
                                           subreaper: set[int]) -> None:
    bundle = make_bundle("cat", "/proc/net/dev")
    for ns in bundle.linux["namespaces"]:
        if ns["type"] == "network":
            ns["path"] = f"/run/netns/{netns}"
    bundle.write()
    cid = new_id()
    pycri.create(cid, bundle)
    pid = pycri.state(cid)["pid"]
    subreaper.add(pid)
    assert ns_link(pid, "net") == f"net:[{os.stat(f'/run/netns/{netns}').st_ino}]"
    pycri.run("kill", cid, "KILL", check=True)
    assert reap(pid) == 137


def test_cgroup_limits_and_membership(pycri: Runtime, make_bundle, subreaper: set[int]) -> None:
    bundle = make_bundle("sleep", "100")
    bundle.linux["resources"].update({
        "memory": {"limit": 64 << 20, "reservation": 32 << 20},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000},
        "pids": {"limit": 100},
    })
    bundle.write()
    cid = new_id()
    pycri.create(cid, bundle)
    pid = pycri.state(cid)["pid"]
    subreaper.add(pid)
    path = bundle.linux["cgroupsPath"]

    def read(controller: str, *, v1: str, v2: str) -> str:
        return LAYOUT.read(controller, path, v1=v1, v2=v2)

    assert read("memory", v1="memory.limit_in_bytes", v2="memory.max") == str(64 << 20)
    assert read("memory", v1="memory.soft_limit_in_bytes", v2="memory.low") == str(32 << 20)
    if LAYOUT.v2:
        assert read("cpu", v1="", v2="cpu.max") == "50000 100000"
        assert read("cpu", v1="", v2="cpu.weight") == "20"  # shares 512 as runc converts them
    else:
        assert read("cpu", v1="cpu.cfs_quota_us", v2="") == "50000"
        assert read("cpu", v1="cpu.cfs_period_us", v2="") == "100000"
        assert read("cpu", v1="cpu.shares", v2="") == "512"
    assert read("pids", v1="pids.max", v2="pids.max") == "100"
    dirs = cgroup_dirs(path)
    assert dirs == [LAYOUT.root / path.lstrip("/")] if LAYOUT.v2 else len(dirs) >= 3  # memory, cpu, pids...
    for hierarchy in dirs:
        assert str(pid) in (hierarchy / "cgroup.procs").read_text().split(), hierarchy
    own = Path(f"/proc/{pid}/cgroup").read_text()
    if LAYOUT.v2:
        assert own == f"0::{path}\n"  # the one tree (seen from this cgroup namespace)
    else:
        assert f"memory:{path}" in own and f"0::{path}" in own  # v1 and the unified hierarchy
    # update (kubelet's UpdateContainerResources)
    resources = Path(bundle.path / "update.json")
    resources.write_text('{"memory": {"limit": 134217728}, "cpu": {"quota": 20000}}')
    pycri.run("update", "--resources", str(resources), cid, check=True)
    assert read("memory", v1="memory.limit_in_bytes", v2="memory.max") == str(128 << 20)
    if LAYOUT.v2:
        assert read("cpu", v1="", v2="cpu.max") == "20000 100000"
    else:
        assert read("cpu", v1="cpu.cfs_quota_us", v2="") == "20000"
    pycri.run("update", "--pids-limit", "50", cid, check=True)
    assert read("pids", v1="pids.max", v2="pids.max") == "50"
    import json

    stats = json.loads(pycri.run("events", "--stats", cid, check=True).stdout)
    assert stats["data"]["memory"]["usage"]["limit"] == 128 << 20 and stats["data"]["pids"]["current"] >= 1
    pycri.run("delete", "--force", cid, check=True)
    assert not cgroup_dirs(path)
    assert reap(pid) == 137


def test_capabilities_are_the_spec_sets(pycri: Runtime, make_bundle, tmp_path: Path, subreaper: set[int]) -> None:
    bundle = make_bundle("grep", "^Cap", "/proc/self/status")
    code, out, _ = run_to_exit(pycri, bundle, tmp_path, subreaper)
    caps = dict(line.split(":\t") for line in out.splitlines())
    expected = (1 << 29) | (1 << 5) | (1 << 10)  # AUDIT_WRITE, KILL, NET_BIND_SERVICE
    assert code == 0
    assert int(caps["CapEff"], 16) == expected
    assert int(caps["CapPrm"], 16) == expected
    assert int(caps["CapBnd"], 16) == expected
    assert int(caps["CapInh"], 16) == 0


def test_user_groups_and_home(pycri: Runtime, make_bundle, tmp_path: Path, subreaper: set[int]) -> None:
    bundle = make_bundle("sh", "-c", "id; echo HOME=$HOME; grep ^Cap[EP] /proc/self/status; pwd")
    bundle.config["process"]["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [29, 44]}
    bundle.config["process"]["cwd"] = "/home/user"
    # a non-root user keeps capabilities across execve only through the ambient set, which
    # needs them inheritable too (and kept across the uid switch: PR_SET_KEEPCAPS + capset)
    bundle.config["process"]["capabilities"]["inheritable"] = list(DEFAULT_CAPS)
    bundle.write()
    code, out, err = run_to_exit(pycri, bundle, tmp_path, subreaper)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "uid=1000(user) gid=1000(user) groups=29(audio),44(video)"
    assert lines[1] == "HOME=/home/user"
    assert int(lines[2].split()[1], 16) == (1 << 29) | (1 << 5) | (1 << 10)
    assert int(lines[3].split()[1], 16) == (1 << 29) | (1 << 5) | (1 << 10)
    assert lines[4] == "/home/user"


def test_readonly_rootfs_and_hostname(pycri: Runtime, make_bundle, tmp_path: Path, subreaper: set[int]) -> None:
    bundle = make_bundle("sh", "-c", "hostname; touch /newfile; echo touch=$?; touch /tmp/x 2>&1; echo tmp=$?")
    bundle.config["hostname"] = "pycri-box"
    assert bundle.config["root"]["readonly"] is True
    bundle.write()
    code, out, err = run_to_exit(pycri, bundle, tmp_path, subreaper)
    lines = out.splitlines()
    assert lines[0] == "pycri-box"
    assert "touch=1" in lines and "Read-only file system" in err
    assert not (bundle.rootfs / "newfile").exists()
    bundle.config["root"]["readonly"] = False
    bundle.set_args("sh", "-c", "touch /newfile && echo ok")
    code, out, _ = run_to_exit(pycri, bundle, tmp_path, subreaper)
    assert out.strip() == "ok" and (bundle.rootfs / "newfile").exists()


def test_masked_and_readonly_paths(pycri: Runtime, make_bundle, tmp_path: Path, subreaper: set[int]) -> None:
    (tmp_path / "lowerdata").mkdir()
    bundle = make_bundle("sh", "-c", "cat /etc/hostname; echo ---; ls /data; echo ---; "
                         "cat /proc/keys | wc -c; echo 1 > /proc/sys/kernel/printk 2>&1 || echo ro-sys; "
                         "touch /data/new 2>/dev/null || echo data-ro; grep -c . /proc/timer_list")
    (bundle.rootfs / "data" / "secret").write_text("secret")
    bundle.linux["maskedPaths"] += ["/etc/hostname", "/data"]
    bundle.config["root"]["readonly"] = False
    bundle.write()
    code, out, _ = run_to_exit(pycri, bundle, tmp_path, subreaper)
    parts = out.split("---\n")
    assert parts[0] == ""  # /etc/hostname masked by /dev/null
    assert parts[1] == ""  # /data: an empty read-only tmpfs
    rest = parts[2].splitlines()
    assert rest[0].strip() == "0"
    assert "ro-sys" in rest and "data-ro" in rest


def test_devices_and_dev_links(pycri: Runtime, make_bundle, tmp_path: Path, subreaper: set[int]) -> None:
    bundle = make_bundle("sh", "-c", "ls /dev; echo ---; ls -l /dev/null /dev/ptmx /dev/fd; "
                         "echo hi > /dev/null && echo null-ok; head -c 4 /dev/zero | wc -c")
    code, out, err = run_to_exit(pycri, bundle, tmp_path, subreaper)
    listing, details = out.split("---\n")
    expected = ["fd", "full", "mqueue", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin",
                "stdout", "tty", "urandom", "zero"]
    if os.path.exists("/proc/kcore"):  # /dev/core -> /proc/kcore, as runc makes it, where the kernel has one
        expected = sorted([*expected, "core"])
    assert listing.split() == expected
    assert "crw-rw-rw-" in details and "1,   3" in details
    assert "/dev/ptmx -> pts/ptmx" in details and "/dev/fd -> /proc/self/fd" in details
    assert "null-ok" in details and details.strip().endswith("4"), err


def test_kill_with_sigterm_and_sigkill(pycri: Runtime, make_bundle, tmp_path: Path, subreaper: set[int]) -> None:
    bundle = make_bundle("sh", "-c", "trap 'echo got-term; exit 7' TERM; echo ready; while true; do sleep 0.05; done")
    cid = new_id()
    out = tmp_path / "out"
    with open(out, "wb") as stdout:
        pycri.create(cid, bundle, stdout=stdout)
    pid = pycri.state(cid)["pid"]
    subreaper.add(pid)
    pycri.run("start", cid, check=True)
    assert pycri.state(cid)["status"] == "running"
    _wait_for(lambda: "ready" in out.read_text())
    pycri.run("kill", cid, "SIGTERM", check=True)
    assert reap(pid) == 7
    assert "got-term" in out.read_text()
    pycri.wait_status(cid, "stopped")
    dead = pycri.run("kill", cid, "KILL")
    assert dead.returncode == 1 and "container not running" in dead.stderr
    pycri.run("delete", cid, check=True)

    bundle2 = make_bundle("sleep", "1000")
    cid2 = new_id()
    pycri.create(cid2, bundle2)
    pid2 = pycri.state(cid2)["pid"]
    subreaper.add(pid2)
    pycri.run("start", cid2, check=True)
    assert pycri.run("kill", cid2).returncode == 0  # default TERM: ignored by a PID 1 without a handler
    assert pycri.state(cid2)["status"] == "running"
    pycri.run("kill", cid2, "9", check=True)
    assert reap(pid2) == 137
    assert pycri.wait_status(cid2, "stopped")["pid"] == 0


def test_delete_running_needs_force_and_removes_everything(pycri: Runtime, make_bundle, subreaper: set[int]) -> None:
    bundle = make_bundle("sleep", "1000")
    cid = new_id()
    pycri.create(cid, bundle)
    pid = pycri.state(cid)["pid"]
    subreaper.add(pid)
    pycri.run("start", cid, check=True)
    refused = pycri.run("delete", cid)
    assert refused.returncode == 1 and "not stopped: running" in refused.stderr
    assert cgroup_dirs(bundle.linux["cgroupsPath"])
    pycri.run("delete", "--force", cid, check=True)
    assert reap(pid) == 137
    assert not (pycri.root / cid).exists()
    assert not cgroup_dirs(bundle.linux["cgroupsPath"])
    assert pycri.run("delete", "--force", cid).returncode == 0  # like runc: nothing to do
    assert pycri.run("delete", cid).returncode == 1


def test_delete_of_a_created_container_kills_its_init(pycri: Runtime, make_bundle, subreaper: set[int]) -> None:
    bundle = make_bundle("true")
    cid = new_id()
    pycri.create(cid, bundle)
    pid = pycri.state(cid)["pid"]
    subreaper.add(pid)
    pycri.run("delete", cid, check=True)
    assert reap(pid) == 137
    assert not cgroup_dirs(bundle.linux["cgroupsPath"])


def _assert_nothing_left(pycri: Runtime, cid: str, bundle: Bundle) -> None:
    assert not (pycri.root / cid).exists()
    assert not cgroup_dirs(bundle.linux["cgroupsPath"])
    mountpoints = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    assert [m for m in mountpoints if m.startswith(str(bundle.path))] == [str(bundle.rootfs)]
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert cid not in ps


def test_failing_create_leaves_nothing_behind(pycri: Runtime, make_bundle, subreaper: set[int]) -> None:
    bundle = make_bundle("true")
    bundle.config["mounts"].append({"destination": "/mnt/data", "type": "bind", "source": "/nonexistent/source",
                                    "options": ["rbind", "ro"]})
    bundle.write()
    cid = new_id()
    result = pycri.create(cid, bundle, check=False)
    assert result.returncode == 1
    assert b"create failed" in result.stderr and b"/nonexistent/source" in result.stderr
    _assert_nothing_left(pycri, cid, bundle)


def test_missing_executable_fails_create(pycri: Runtime, make_bundle, subreaper: set[int]) -> None:
    bundle = make_bundle("no-such-command", "arg")
    cid = new_id()
    result = pycri.create(cid, bundle, check=False)
    assert result.returncode == 1
    assert b'exec: \\"no-such-command\\": executable file not found in $PATH' in result.stderr
    _assert_nothing_left(pycri, cid, bundle)


def test_bind_mounts_sysctl_rlimits_and_env(pycri: Runtime, make_bundle, tmp_path: Path, subreaper: set[int]) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "hello").write_text("from the host")
    single = tmp_path / "single.txt"
    single.write_text("one file")
    bundle = make_bundle("sh", "-c", "cat /mnt/shared/hello; echo; cat /etc/single.txt; echo; "
                         "touch /mnt/shared/x 2>/dev/null || echo shared-ro; touch /mnt/rw/y && echo rw-ok; "
                         "cat /proc/sys/net/ipv4/ip_forward; ulimit -n; echo $FOO; grep -c nosuid /proc/self/mountinfo")
    (tmp_path / "rw").mkdir()
    bundle.config["mounts"] += [
        {"destination": "/mnt/shared", "type": "bind", "source": str(shared), "options": ["rbind", "ro", "nosuid"]},
        {"destination": "/etc/single.txt", "type": "bind", "source": str(single), "options": ["bind", "ro"]},
        {"destination": "/mnt/rw", "type": "none", "source": str(tmp_path / "rw"), "options": ["rbind", "rw", "rprivate"]},
    ]
    bundle.linux["sysctl"] = {"net.ipv4.ip_forward": "1"}
    bundle.config["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 512, "hard": 1024}]
    bundle.config["process"]["env"].append("FOO=bar baz")
    bundle.write()
    code, out, err = run_to_exit(pycri, bundle, tmp_path, subreaper)
    lines = out.splitlines()
    assert lines[:2] == ["from the host", "one file"], err
    assert "shared-ro" in lines and "rw-ok" in lines
    assert (tmp_path / "rw" / "y").exists()
    assert lines[4] == "1" and lines[5] == "512" and lines[6] == "bar baz"


def test_symlinked_mount_target_stays_inside_the_rootfs(pycri: Runtime, make_bundle, tmp_path: Path,
                                                        subreaper: set[int]) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    source = tmp_path / "src"
    source.mkdir()
    (source / "f").write_text("x")
    bundle = make_bundle("ls", "/escape")
    os.symlink(str(outside), bundle.rootfs / "escape")  # absolute link: means <rootfs>/<outside> in the container
    bundle.config["mounts"].append({"destination": "/escape", "type": "bind", "source": str(source),
                                    "options": ["rbind"]})
    bundle.write()
    code, out, _ = run_to_exit(pycri, bundle, tmp_path, subreaper)
    assert out.split() == ["f"]
    assert list(outside.iterdir()) == []  # nothing was mounted or created on the host side


def _wait_for(predicate, timeout: float = 5.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_failure_after_the_first_stage_is_forked_leaves_nothing_behind(pycri: Runtime, make_bundle,
                                                                          subreaper: set[int]) -> None:
    """`create` forks the first stage before it makes the cgroups (runtime/create.py): when
    those fail, the waiting first stage is killed and reaped with everything else."""
    bundle = make_bundle("true")
    bundle.linux["cgroupsPath"] = "/pycri-it/../escape"
    bundle.write()
    cid = new_id()
    result = pycri.create(cid, bundle, check=False)
    assert result.returncode == 1
    assert b"create failed" in result.stderr and b"bad cgroup path" in result.stderr, result.stderr
    assert not (pycri.root / cid).exists()
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert cid not in ps  # the first stage runs the runtime's command line
