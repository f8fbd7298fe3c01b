"""Pods and containers, the whole crictl life cycle, checked from the host.

Every test runs with each runtime handler: runc (the reference) and pycri's own runtime,
so the same assertions are a differential test of our runtime against runc.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import grpc
import pytest

from pycri.api.cri import api_pb2 as cri

from tests.e2e.harness import VENV_BIN, Pycri

HANDLERS = ["runc", "pycri"]
DEFAULT_CAPS = 0x00000000A80425FB  # containerd's and CRI-O's default capability set
IPAM_DIR = Path("/var/lib/pycri/cni/networks/pycri")

# PID 1 in `ps -o pid,args`: catatonit, run from the daemon's sealed memfd (its comm "memfd:catatonit")
PID_1 = r"^\s*1\s+({memfd:catatonit} )?catatonit -P"


@pytest.fixture(params=HANDLERS)
def handler(request: pytest.FixtureRequest) -> str:
    if request.param == "pycri" and not (VENV_BIN / "pycri-runtime").exists():
        pytest.skip("pycri-runtime is not installed (hack/setup.sh writes it)")
    return request.param


def inspect(pycri: Pycri, container_id: str) -> dict:
    return pycri.crictl_json("inspect", container_id)


def pid_of(pycri: Pycri, container_id: str) -> int:
    return int(inspect(pycri, container_id)["info"]["pid"])


def ns(pid: int | str, kind: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/{kind}")


def pinned_ns(pycri: Pycri, pod_id: str, kind: str) -> tuple[int, int]:
    st = os.stat(pycri.state / "ns" / pod_id / kind)
    return st.st_dev, st.st_ino


def status_field(pid: int, name: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    raise KeyError(name)


def exited(pid: int) -> bool:
    try:
        return status_field(pid, "State").startswith("Z")
    except OSError:  # gone, reaped
        return True


def cgroup_dir(pid: int, controller: str) -> Path:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return Path("/sys/fs/cgroup") / controller / path.lstrip("/")
    raise KeyError(controller)


def wait_for(predicate, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def leftovers(pycri: Pycri, pod_ids: list[str], ips: list[str]) -> list[str]:
    """What a removed pod could leave behind: mounts, pins, cgroups, leases, processes."""
    found = []
    mounts = Path("/proc/self/mountinfo").read_text()
    for needle in [str(pycri.root / "containers")] + [str(pycri.state / "ns" / p) for p in pod_ids]:
        if needle in mounts:
            found.append(f"mount under {needle}")
    for pod_id in pod_ids:
        if (pycri.state / "ns" / pod_id).exists():
            found.append(f"pin dir of {pod_id}")
        for controller in ("memory", "cpu", "pids"):
            if (Path("/sys/fs/cgroup") / controller / "pycri" / pod_id).exists():
                found.append(f"{controller} cgroup of {pod_id}")
    for ip in ips:
        if (IPAM_DIR / ip).exists():
            found.append(f"IP lease {ip}")
    ps = subprocess.run(["ps", "-eo", "stat,args"], capture_output=True, text=True).stdout
    for pod_id in pod_ids:
        for line in ps.splitlines():
            if pod_id in line and not line.startswith("Z"):
                found.append(f"process {line}")
    return found


def test_life_cycle(pycri: Pycri, handler: str) -> None:
    pod = pycri.run_pod("life", runtime=handler)
    status = pycri.crictl_json("inspectp", pod)["status"]
    assert status["state"] == "SANDBOX_READY"
    ip = status["network"]["ip"]
    assert re.fullmatch(r"10\.88\.\d+\.\d+", ip), ip
    assert [p["id"] for p in pycri.crictl_json("pods")["items"]] == [pod]

    ctr = pycri.run(pod, "life", "main", ["sh", "-c", "echo to-stdout; echo to-stderr >&2; exec sleep 1000"])
    wait_for(lambda: "to-stderr" in pycri.crictl("logs", ctr).stderr)
    logs = pycri.crictl("logs", ctr)
    assert logs.stdout == "to-stdout\n" and logs.stderr == "to-stderr\n"
    log_file = Path(inspect(pycri, ctr)["status"]["logPath"])
    lines = log_file.read_text().splitlines()
    assert re.fullmatch(r"\S+ stdout F to-stdout", lines[0]) and re.fullmatch(r"\S+ stderr F to-stderr", lines[1])
    assert [c["id"] for c in pycri.crictl_json("ps")["containers"]] == [ctr]

    ok = pycri.crictl("exec", "-s", ctr, "sh", "-c", "echo exec-out; echo exec-err >&2")
    assert ok.stdout.split() == ["exec-out", "exec-err"]  # crictl prints the stdout, then the stderr
    failed = pycri.crictl("exec", "-s", ctr, "sh", "-c", "exit 7", check=False)
    assert failed.returncode != 0 and "exited with 7" in failed.stderr

    # seen from the host
    pid = pid_of(pycri, ctr)
    assert ns(pid, "mnt") != ns("self", "mnt") and ns(pid, "pid") != ns("self", "pid")
    assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] == b"sleep"
    assert status_field(pid, "NSpid").split()[-1] == "1"  # PID 1 in its own namespace
    for kind in ("net", "ipc", "uts"):
        st = os.stat(f"/proc/{pid}/ns/{kind}")
        assert (st.st_dev, st.st_ino) == pinned_ns(pycri, pod, kind)
    assert int(status_field(pid, "CapEff"), 16) == DEFAULT_CAPS
    assert int(status_field(pid, "CapBnd"), 16) == DEFAULT_CAPS
    assert status_field(pid, "Uid").split()[0] == "0"

    pycri.crictl("stop", ctr)
    assert inspect(pycri, ctr)["status"]["state"] == "CONTAINER_EXITED"
    pycri.crictl("rm", ctr)
    pycri.crictl("stopp", pod)
    assert pycri.crictl_json("inspectp", pod)["status"]["state"] == "SANDBOX_NOTREADY"
    # a stopped pod keeps no namespace (kubelet may keep its sandbox for a while), as CRI-O
    assert not (pycri.state / "ns" / pod).exists()
    assert pycri.crictl_json("statsp", "--id", pod) is not None  # stats of a stopped pod still answer
    pycri.crictl("rmp", pod)
    assert pycri.crictl_json("pods")["items"] == [] and pycri.crictl_json("ps", "-a")["containers"] == []
    assert leftovers(pycri, [pod], [ip]) == []


def test_two_containers_share_localhost_and_hostname(pycri: Pycri, handler: str) -> None:
    pod = pycri.run_pod("share", runtime=handler, hostname="shared-host")
    server = pycri.run(pod, "share", "server",
                       ["sh", "-c", "mkdir /www && echo served > /www/index.html && exec httpd -f -p 8080 -h /www"])
    client = pycri.run(pod, "share", "client", ["sleep", "1000"])
    wait_for(lambda: pycri.crictl("exec", "-s", client, "wget", "-qO-", "http://127.0.0.1:8080/", check=False)
             .stdout.strip() == "served")
    for ctr in (server, client):
        assert pycri.crictl("exec", "-s", ctr, "hostname").stdout.strip() == "shared-host"
    assert ns(pid_of(pycri, server), "pid") != ns(pid_of(pycri, client), "pid")


def test_stop_timeout_kills_a_process_that_ignores_sigterm(pycri: Pycri, handler: str) -> None:
    pod = pycri.run_pod("stubborn", runtime=handler)
    ctr = pycri.run(pod, "stubborn", "main", ["sh", "-c", "trap '' TERM; while true; do sleep 1; done"])
    started = time.monotonic()
    pycri.crictl("stop", "--timeout", "2", ctr)
    took = time.monotonic() - started
    status = inspect(pycri, ctr)["status"]
    assert status["exitCode"] == 137 and status["reason"] == "Error"
    assert 1.8 < took < 8, took


def test_clean_exit_and_exit_code(pycri: Pycri, handler: str) -> None:
    pod = pycri.run_pod("exits", runtime=handler)
    done = pycri.run(pod, "exits", "done", ["sh", "-c", "exit 0"])
    failing = pycri.run(pod, "exits", "failing", ["sh", "-c", "exit 3"])
    wait_for(lambda: inspect(pycri, failing)["status"]["state"] == "CONTAINER_EXITED")
    wait_for(lambda: inspect(pycri, done)["status"]["state"] == "CONTAINER_EXITED")
    assert inspect(pycri, done)["status"]["reason"] == "Completed"
    status = inspect(pycri, failing)["status"]
    assert status["exitCode"] == 3 and status["reason"] == "Error"
    assert int(status["finishedAt"] if isinstance(status["finishedAt"], int) else 1) > 0


def test_resources_and_user(pycri: Pycri, handler: str) -> None:
    pod = pycri.run_pod("limits", runtime=handler)
    ctr = pycri.run(pod, "limits", "main", ["sleep", "1000"], image="pycri/user-uid", linux={
        "resources": {"memory_limit_in_bytes": 64 * 1024 * 1024, "cpu_quota": 50000, "cpu_period": 100000},
    })
    pid = pid_of(pycri, ctr)
    assert (cgroup_dir(pid, "memory") / "memory.limit_in_bytes").read_text().strip() == str(64 * 1024 * 1024)
    assert (cgroup_dir(pid, "cpu") / "cpu.cfs_quota_us").read_text().strip() == "50000"
    assert (cgroup_dir(pid, "cpu") / "cpu.cfs_period_us").read_text().strip() == "100000"
    assert status_field(pid, "Uid").split()[0] == "1002"  # the image's USER
    other = pycri.run(pod, "limits", "other", ["sleep", "1000"], linux={
        "security_context": {"run_as_user": {"value": 1234}, "run_as_group": {"value": 5678}}})
    opid = pid_of(pycri, other)
    assert status_field(opid, "Uid").split()[0] == "1234" and status_field(opid, "Gid").split()[0] == "5678"


def test_restart_loses_nothing(pycri: Pycri, handler: str, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    pod = pycri.run_pod("survivor", runtime=handler)
    ticker = pycri.run(pod, "survivor", "ticker", ["sh", "-c", "while true; do echo tick; sleep 0.2; done"])
    quitter = pycri.run(pod, "survivor", "quitter", ["sh", "-c", "until [ -e /gate/go ]; do sleep 0.1; done; exit 42"],
                        mounts=[{"container_path": "/gate", "host_path": str(gate)}])
    pid, quitter_pid = pid_of(pycri, ticker), pid_of(pycri, quitter)
    pycri.kill()  # SIGKILL: a crash
    (gate / "go").touch()  # the quitter exits while pycri is down
    wait_for(lambda: exited(quitter_pid))
    pycri.start()
    assert [p["id"] for p in pycri.crictl_json("pods")["items"]] == [pod]
    assert pid_of(pycri, ticker) == pid and inspect(pycri, ticker)["status"]["state"] == "CONTAINER_RUNNING"
    status = inspect(pycri, quitter)["status"]
    assert status["state"] == "CONTAINER_EXITED" and status["exitCode"] == 42
    before = pycri.crictl("logs", ticker).stdout.count("tick")
    wait_for(lambda: pycri.crictl("logs", ticker).stdout.count("tick") > before + 2)  # logs still written
    pycri.crictl("stop", "--timeout", "1", ticker)
    pycri.crictl("rm", ticker)
    pycri.crictl("rmp", "--force", pod)
    assert leftovers(pycri, [pod], []) == []


def test_bad_input(pycri: Pycri, handler: str) -> None:
    for args in (["inspect", "0" * 64], ["inspectp", "0" * 64], ["start", "0" * 64]):
        result = pycri.crictl(*args, check=False)
        assert result.returncode != 0 and "NotFound" in result.stderr, result.stderr
    stub = pycri.runtime_stub()  # crictl asks for a status first; the CRI calls themselves must succeed
    stub.StopContainer(cri.StopContainerRequest(container_id="0" * 64, timeout=1))
    stub.RemoveContainer(cri.RemoveContainerRequest(container_id="0" * 64))
    stub.StopPodSandbox(cri.StopPodSandboxRequest(pod_sandbox_id="0" * 64))
    stub.RemovePodSandbox(cri.RemovePodSandboxRequest(pod_sandbox_id="0" * 64))
    with pytest.raises(grpc.RpcError) as error:
        stub.ContainerStatus(cri.ContainerStatusRequest(container_id=""))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    pod = pycri.run_pod("dup", runtime=handler)
    again = pycri.crictl("runp", "--runtime", handler, str(pycri.base / "pod-dup.json"), check=False)
    assert again.returncode != 0 and "AlreadyExists" in again.stderr
    pycri.create(pod, "dup", "one", ["sleep", "1000"])
    dup = pycri.crictl("create", pod, str(pycri.base / "ctr-one.json"), str(pycri.base / "pod-dup.json"), check=False)
    assert dup.returncode != 0 and "AlreadyExists" in dup.stderr
    for call, request in [
        (stub.RunPodSandbox, cri.RunPodSandboxRequest(config=cri.PodSandboxConfig(
            metadata=cri.PodSandboxMetadata(name="x", uid="u")))),  # no namespace
        (stub.CreateContainer, cri.CreateContainerRequest(pod_sandbox_id=pod, config=cri.ContainerConfig(
            metadata=cri.ContainerMetadata(name="noimage")))),
        (stub.CreateContainer, cri.CreateContainerRequest(pod_sandbox_id=pod, config=cri.ContainerConfig(
            image=cri.ImageSpec(image="busybox")))),  # no name
    ]:
        with pytest.raises(grpc.RpcError) as error:
            call(request)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value.details()
    with pytest.raises(grpc.RpcError) as error:
        stub.CreateContainer(cri.CreateContainerRequest(pod_sandbox_id=pod, config=cri.ContainerConfig(
            metadata=cri.ContainerMetadata(name="absent"), image=cri.ImageSpec(image="pycri/not-pulled"))))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert [c["metadata"]["name"] for c in pycri.crictl_json("ps", "-a")["containers"]] == ["one"]


def test_failed_create_leaves_nothing(pycri: Pycri, handler: str) -> None:
    """What the runtime refuses fails the start (CreateContainer returns once the runtime's create
    is on its way, as containerd's does before its task exists): the container is then exited
    with StartError and its rootfs unmounted at once; once removed, nothing of it is left."""
    pod = pycri.run_pod("broken", runtime=handler)
    pycri.crictl("pull", "busybox")
    before = sorted(os.listdir(pycri.root / "containers"))
    # the runtime refuses a mount over /proc: its create fails half-way, after the rootfs is mounted
    ctr = pycri.base / "ctr-bad.json"
    ctr.write_text(json.dumps({"metadata": {"name": "bad"}, "image": {"image": "busybox"}, "command": ["true"],
                               "mounts": [{"container_path": "/proc/pycri", "host_path": "/tmp"}], "linux": {},
                               "log_path": "bad/0.log"}))
    container = pycri.crictl("create", pod, str(ctr), str(pycri.base / "pod-broken.json")).stdout.strip()
    result = pycri.crictl("start", container, check=False)
    assert result.returncode != 0 and "could not create the container" in result.stderr, result.stderr
    status = pycri.crictl_json("inspect", container)["status"]
    assert (status["state"], status["reason"], status["exitCode"]) == ("CONTAINER_EXITED", "StartError", 128)
    deadline = time.monotonic() + 30
    while container in Path("/proc/self/mountinfo").read_text():  # (unmounted as an exited container is)
        assert time.monotonic() < deadline, "the rootfs of a container that failed to start stays mounted"
        time.sleep(0.05)
    pycri.crictl("rm", container)
    assert sorted(os.listdir(pycri.root / "containers")) == before
    assert str(pycri.root / "containers") not in Path("/proc/self/mountinfo").read_text()
    assert pycri.crictl_json("ps", "-a")["containers"] == []
    bad_user = pycri.base / "ctr-nouser.json"
    bad_user.write_text(json.dumps({"metadata": {"name": "nouser"}, "image": {"image": "busybox"}, "command": ["true"],
                                    "linux": {"security_context": {"run_as_username": "nosuchuser"}}}))
    result = pycri.crictl("create", pod, str(bad_user), str(pycri.base / "pod-broken.json"), check=False)
    assert result.returncode != 0 and "InvalidArgument" in result.stderr and "nosuchuser" in result.stderr


def test_host_namespaces(pycri: Pycri, handler: str) -> None:
    node = {"network": 2, "pid": 2, "ipc": 2}
    pod = pycri.run_pod("hostns", runtime=handler, linux={"security_context": {"namespace_options": node}})
    status = pycri.crictl_json("inspectp", pod)
    options = status["status"]["linux"]["namespaces"]["options"]
    assert (options["network"], options["pid"], options["ipc"]) == ("NODE", "NODE", "NODE")
    assert not (pycri.state / "ns" / pod / "net").exists()
    ctr = pycri.run(pod, "hostns", "main", ["sleep", "1000"],
                    linux={"security_context": {"namespace_options": node}})
    pid = pid_of(pycri, ctr)
    for kind in ("net", "pid", "ipc", "uts"):
        assert ns(pid, kind) == ns("self", kind), kind
    assert ns(pid, "mnt") != ns("self", "mnt")
    hostname = subprocess.run(["hostname"], capture_output=True, text=True).stdout.strip()
    assert pycri.crictl("exec", "-s", ctr, "hostname").stdout.strip() == hostname


def test_shared_pid_namespace(pycri: Pycri, handler: str) -> None:
    shared = {"security_context": {"namespace_options": {"pid": 0}}}  # POD
    pod = pycri.run_pod("sharedpid", runtime=handler, linux=shared)
    assert pycri.crictl_json("inspectp", pod)["status"]["linux"]["namespaces"]["options"]["pid"] == "POD"
    first = pycri.run(pod, "sharedpid", "first", ["sleep", "1001"], linux=shared)
    second = pycri.run(pod, "sharedpid", "second", ["sleep", "1002"], linux=shared)
    assert ns(pid_of(pycri, first), "pid") == ns(pid_of(pycri, second), "pid") != ns("self", "pid")
    seen = pycri.crictl("exec", "-s", second, "ps", "-o", "pid,args").stdout
    assert "sleep 1001" in seen and "sleep 1002" in seen and re.search(PID_1, seen, re.M), seen
    infra_pid = pycri.crictl_json("inspectp", pod)["info"]["infra"]["pid"]
    assert os.readlink(f"/proc/{infra_pid}/exe") == "/memfd:catatonit (deleted)"  # the daemon's sealed copy
    pycri.crictl("stopp", pod)
    assert inspect(pycri, first)["status"]["state"] == "CONTAINER_EXITED"
    pycri.crictl("rmp", pod)
    assert not Path(f"/proc/{infra_pid}/cmdline").exists() or b"catatonit" not in Path(
        f"/proc/{infra_pid}/cmdline").read_bytes()


def test_exec_timeout_and_oom_score_adj(pycri: Pycri, handler: str) -> None:
    pod = pycri.run_pod("oom", runtime=handler)
    # this machine has no CAP_SYS_RESOURCE: a negative oom_score_adj cannot be set, the container runs anyway
    negative = pycri.run(pod, "oom", "negative", ["sleep", "1000"], linux={"resources": {"oom_score_adj": -500}})
    assert inspect(pycri, negative)["status"]["state"] == "CONTAINER_RUNNING"
    positive = pycri.run(pod, "oom", "positive", ["sleep", "1000"], linux={"resources": {"oom_score_adj": 500}})
    assert Path(f"/proc/{pid_of(pycri, positive)}/oom_score_adj").read_text().strip() == "500"
    stub = pycri.runtime_stub()
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as error:
        stub.ExecSync(cri.ExecSyncRequest(container_id=positive, cmd=["sleep", "30"], timeout=1))
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED and time.monotonic() - started < 10
    # the timed-out command was killed and reaped: only the container's own sleep is left, no zombie
    assert pycri.crictl("exec", "-s", positive, "ps", "-o", "comm").stdout.split().count("sleep") == 1
    result = stub.ExecSync(cri.ExecSyncRequest(container_id=positive, cmd=["sh", "-c", "echo o; echo e >&2; exit 4"]))
    assert (result.stdout, result.stderr, result.exit_code) == (b"o\n", b"e\n", 4)


def test_seccomp_profiles(pycri: Pycri, handler: str) -> None:
    pod = pycri.run_pod("seccomp", runtime=handler)

    def seccomp_mode(name: str, security: dict) -> tuple[str, str]:
        ctr = pycri.run(pod, "seccomp", name, ["sleep", "1000"], linux={"security_context": security})
        mode = status_field(pid_of(pycri, ctr), "Seccomp")
        return mode, ctr

    assert seccomp_mode("default", {"seccomp": {"profile_type": 0}})[0] == "2"  # RuntimeDefault: a filter
    assert seccomp_mode("unconfined", {"seccomp": {"profile_type": 1}})[0] == "0"
    assert seccomp_mode("none", {})[0] == "0"  # no profile asked for: unconfined, as kubelet means it
    profile = pycri.base / "no-mkdir.json"
    profile.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}))
    mode, ctr = seccomp_mode("localhost", {"seccomp": {"profile_type": 2, "localhost_ref": str(profile)}})
    assert mode == "2"
    denied = pycri.crictl("exec", "-s", ctr, "mkdir", "/tmp/x", check=False)
    assert denied.returncode != 0 and "Operation not permitted" in denied.stdout + denied.stderr
    default_ctr = seccomp_mode("default2", {"seccomp": {"profile_type": 0}})[1]
    assert pycri.crictl("exec", "-s", default_ctr, "sh", "-c", "mkdir /tmp/y && echo made").stdout.strip() == "made"


def test_privileged_and_devices(pycri: Pycri, handler: str) -> None:
    pod = pycri.run_pod("priv", runtime=handler)
    privileged = pycri.run(pod, "priv", "privileged", ["sleep", "1000"], linux={"security_context": {"privileged": True}})
    pid = pid_of(pycri, privileged)
    assert int(status_field(pid, "CapEff"), 16) == int(Path("/proc/self/status").read_text().split("CapBnd:")[1].split()[0], 16)
    listing = pycri.crictl("exec", "-s", privileged, "ls", "/dev").stdout.split()
    assert "vda" in listing or any(name.startswith(("vd", "sd", "loop")) for name in listing)
    assert pycri.crictl("exec", "-s", privileged, "sh", "-c", "touch /sys/fs/cgroup/x 2>&1; grep ' /sys ' /proc/mounts").stdout.split()[3].startswith("rw")
    plain = pycri.run(pod, "priv", "plain", ["sleep", "1000"], devices=[
        {"container_path": "/dev/mynull", "host_path": "/dev/null", "permissions": "rwm"}])
    assert pycri.crictl("exec", "-s", plain, "sh", "-c", "echo hi > /dev/mynull && echo wrote").stdout.strip() == "wrote"
    assert "vda" not in pycri.crictl("exec", "-s", plain, "ls", "/dev").stdout.split()


def test_mount_propagation(pycri: Pycri, handler: str, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    subprocess.run(["mount", "--bind", str(shared), str(shared)], check=True)
    subprocess.run(["mount", "--make-shared", str(shared)], check=True)
    try:
        pod = pycri.run_pod("prop", runtime=handler)
        mounts = {name: pycri.run(pod, "prop", name, ["sleep", "1000"], linux={"security_context": {"privileged": True}},
                                  mounts=[{"container_path": "/mnt", "host_path": str(shared), "propagation": mode}])
                  for name, mode in (("private", 0), ("slave", 1), ("bidi", 2))}
        (shared / "from-host").mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "fromhost", str(shared / "from-host")], check=True)
        seen = {name: "fromhost" in pycri.crictl("exec", "-s", ctr, "cat", "/proc/mounts").stdout
                for name, ctr in mounts.items()}
        assert seen == {"private": False, "slave": True, "bidi": True}
        pycri.crictl("exec", "-s", mounts["bidi"], "sh", "-c", "mkdir -p /mnt/inner && mount -t tmpfs fromctr /mnt/inner")
        assert "fromctr" in Path("/proc/self/mountinfo").read_text()
    finally:
        pycri.remove_everything()
        subprocess.run(["umount", "-R", "-l", str(shared)], check=False)
