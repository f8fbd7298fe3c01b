"""A local Kubernetes cluster (hack/local-cluster.sh: etcd, kube-apiserver, controller-manager,
scheduler, kubelet) whose node runs on a pycri daemon of the test's own, driven by kubectl.

The scenarios share one cluster (starting it takes seconds once the binaries are built) and run
in file order; the last one deletes everything and checks that pycri and the host are clean."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Pycri
from tests.e2e.kube import Cluster, http_get, kube_bin, wait_until

BUSYBOX = "registry.k8s.io/e2e-test-images/busybox:1.29-2"
WEB_COMMAND = ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]
IPAM_DIR = Path("/var/lib/pycri/cni/networks/pycri")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, registries: Any) -> Iterator[tuple[Pycri, Cluster]]:
    bin_dir = kube_bin()
    base = tmp_path_factory.mktemp("cluster")
    (base / "pycri").mkdir()
    pycri = Pycri(base / "pycri")
    pycri.start()
    cluster = Cluster(base, f"unix://{pycri.socket}", bin_dir)
    try:
        cluster.script("start")
        yield pycri, cluster
    finally:
        cluster.script("stop")  # the logs stay in the test's temporary directory
        pycri.remove_everything()
        pycri.stop()
        pycri.unmount_pin_root()


def pod(name: str, command: list[str], **spec: Any) -> dict[str, Any]:
    container = {"name": "main", "image": BUSYBOX, "command": command}
    container.update(spec.pop("container", {}))
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"e2e": "pycri"}},
            "spec": {"containers": [container], "terminationGracePeriodSeconds": 5, **spec}}


def phase(cluster: Cluster, name: str) -> str:
    result = cluster.kubectl("get", "pod", name, "-o", "jsonpath={.status.phase}", check=False)
    return result.stdout if result.returncode == 0 else ""


def main_status(cluster: Cluster, name: str) -> dict[str, Any]:
    statuses = cluster.get("pod", name)["status"].get("containerStatuses") or [{}]
    return dict(statuses[0])


def wait_ready(cluster: Cluster, *names: str, timeout: str = "120s") -> None:
    cluster.kubectl("wait", "--for=condition=Ready", *(f"pod/{n}" for n in names), f"--timeout={timeout}",
                    timeout=180)


# --- workloads --------------------------------------------------------------------------------

def test_deployment_becomes_ready_and_scales(node: tuple[Pycri, Cluster]) -> None:
    pycri, cluster = node
    cluster.apply({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web", "e2e": "pycri"}},
                              "spec": {"terminationGracePeriodSeconds": 5, "containers": [{
                                  "name": "web", "image": BUSYBOX, "command": WEB_COMMAND,
                                  "readinessProbe": {"exec": {"command": ["wget", "-qO-", "http://127.0.0.1:8080/"]},
                                                     "periodSeconds": 2}}]}}}})
    cluster.kubectl("rollout", "status", "deployment/web", "--timeout=180s", timeout=200)
    assert cluster.get("deployment", "web")["status"]["readyReplicas"] == 3

    def ready_pods() -> int:
        sandboxes = pycri.crictl_json("pods", "--label", "app=web", "--state", "ready")["items"]
        return len(sandboxes)

    assert ready_pods() == 3  # kubelet's pods are pycri's sandboxes
    cluster.kubectl("scale", "deployment/web", "--replicas=5")
    cluster.kubectl("rollout", "status", "deployment/web", "--timeout=180s", timeout=200)
    assert cluster.get("deployment", "web")["status"]["readyReplicas"] == 5
    wait_until(lambda: ready_pods() == 5, 30, "five ready sandboxes")
    cluster.kubectl("scale", "deployment/web", "--replicas=0")
    wait_until(lambda: not cluster.get("pods", "", "-l", "app=web")["items"], 90, "no web pods")
    wait_until(lambda: ready_pods() == 0, 30, "no ready web sandboxes in pycri")


def test_two_pods_reach_each_other_by_pod_ip(node: tuple[Pycri, Cluster]) -> None:
    _, cluster = node
    cluster.apply(pod("server", WEB_COMMAND), pod("client", ["sleep", "3600"]))
    wait_ready(cluster, "server", "client")
    ip = cluster.get("pod", "server")["status"]["podIP"]
    body = wait_until(lambda: cluster.kubectl("exec", "client", "--", "wget", "-qO-", f"http://{ip}:8080/",
                                              check=False).stdout, 30, "client reaches server")
    assert body.strip() == "server"  # the server pod's hostname is its name
    assert http_get(f"http://{ip}:8080/") == b"server\n"  # and the node reaches it too


def wait_job(cluster: Cluster, name: str, condition: str) -> None:
    result = cluster.kubectl("wait", f"--for=condition={condition}", f"job/{name}", "--timeout=120s",
                             timeout=150, check=False)
    if result.returncode != 0:  # say what the job's pods looked like
        pods = cluster.get("pods", "", "-l", f"job-name={name}")["items"]
        seen = [(p["metadata"]["name"], p["status"].get("phase"), p["metadata"].get("finalizers"),
                 p["status"].get("containerStatuses")) for p in pods]
        raise AssertionError(f"job {name} not {condition}: {result.stderr.strip()}; "
                             f"job status {cluster.get('job', name)['status']}; pods {seen}")


def test_job_runs_to_completion_with_its_exit_code(node: tuple[Pycri, Cluster]) -> None:
    _, cluster = node
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "count"},
           "spec": {"backoffLimit": 0, "template": {"metadata": {"labels": {"e2e": "pycri"}}, "spec": {
               "restartPolicy": "Never",
               "containers": [{"name": "main", "image": BUSYBOX, "command": ["sh", "-c", "seq 3; exit 0"]}]}}}}
    failing = json.loads(json.dumps(job))
    failing["metadata"]["name"] = "fail"
    failing["spec"]["template"]["spec"]["containers"][0]["command"] = ["sh", "-c", "echo failing; exit 42"]
    cluster.apply(job, failing)
    wait_job(cluster, "count", "Complete")
    assert cluster.kubectl("logs", "job/count").stdout == "1\n2\n3\n"
    wait_job(cluster, "fail", "Failed")
    pods = cluster.get("pods", "", "-l", "job-name=fail")["items"]
    terminated = pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 42 and terminated["reason"] == "Error"


# --- probes, restarts, logs -------------------------------------------------------------------

def test_failing_liveness_probe_restarts_the_container(node: tuple[Pycri, Cluster]) -> None:
    _, cluster = node
    cluster.apply(pod("probed", ["sh", "-c", "echo started; touch /tmp/ready /tmp/alive; sleep 4; rm /tmp/alive; sleep 3600"],
                      container={
                          "readinessProbe": {"exec": {"command": ["cat", "/tmp/ready"]}, "periodSeconds": 1},
                          "livenessProbe": {"exec": {"command": ["cat", "/tmp/alive"]}, "periodSeconds": 1,
                                            "failureThreshold": 2, "timeoutSeconds": 2}}))
    wait_ready(cluster, "probed")
    wait_until(lambda: main_status(cluster, "probed").get("restartCount", 0) >= 1, 90, "a liveness restart")
    events = cluster.kubectl("get", "events", "--field-selector", "involvedObject.name=probed").stdout
    assert "Liveness probe failed" in events
    wait_ready(cluster, "probed")  # readiness comes back in the new container
    assert "started" in cluster.kubectl("logs", "probed", "--previous").stdout


def test_exec_probe_timeout_counts_as_a_failure(node: tuple[Pycri, Cluster]) -> None:
    _, cluster = node
    cluster.apply(pod("slowprobe", ["sleep", "3600"], container={
        "readinessProbe": {"exec": {"command": ["sleep", "5"]}, "periodSeconds": 2, "timeoutSeconds": 1}}))
    wait_until(lambda: phase(cluster, "slowprobe") == "Running", 90, "slowprobe running")
    # ExecSync's timeout: each probe is cut off after a second and reported as failed
    wait_until(lambda: "timed out" in cluster.kubectl("get", "events", "--field-selector",
                                                      "involvedObject.name=slowprobe").stdout, 60, "a timed-out probe")
    assert main_status(cluster, "slowprobe")["ready"] is False


def test_logs_follow_and_previous(node: tuple[Pycri, Cluster]) -> None:
    _, cluster = node
    cluster.apply(pod("talker", ["sh", "-c", "echo run-$(cat /proc/sys/kernel/random/uuid); "
                                             "for i in 1 2 3 4 5 6 7 8; do echo line-$i; sleep 0.5; done; exit 1"]))
    wait_until(lambda: phase(cluster, "talker") == "Running", 90, "talker running")
    follower = cluster.popen("logs", "-f", "talker", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert follower.stdout is not None
        lines = [follower.stdout.readline().strip() for _ in range(3)]
        assert lines[0].startswith("run-") and lines[1:] == ["line-1", "line-2"]
    finally:
        follower.kill()
        follower.wait()
    first_run = lines[0]
    wait_until(lambda: main_status(cluster, "talker").get("restartCount", 0) >= 1, 120, "talker restarted")
    previous = cluster.kubectl("logs", "talker", "--previous").stdout.splitlines()
    assert previous[0] == first_run and previous[-1] == "line-8"
    assert main_status(cluster, "talker")["lastState"]["terminated"]["exitCode"] == 1


def test_termination_message_and_volumes(node: tuple[Pycri, Cluster]) -> None:
    _, cluster = node
    cluster.apply(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"colour": "blue"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "token"}, "stringData": {"key": "s3cret"}},
        pod("volumes", ["sh", "-c", "cat /config/colour /secret/key > /dev/termination-log; "
                                    "echo scratch > /scratch/file && cat /scratch/file >> /dev/termination-log"],
            restartPolicy="Never",
            volumes=[{"name": "config", "configMap": {"name": "settings"}},
                     {"name": "secret", "secret": {"secretName": "token"}},
                     {"name": "scratch", "emptyDir": {}}],
            container={"volumeMounts": [{"name": "config", "mountPath": "/config"},
                                        {"name": "secret", "mountPath": "/secret", "readOnly": True},
                                        {"name": "scratch", "mountPath": "/scratch"}]}))
    wait_until(lambda: phase(cluster, "volumes") == "Succeeded", 90, "volumes pod done")
    terminated = main_status(cluster, "volumes")["state"]["terminated"]
    assert terminated["message"] == "blues3cretscratch\n" and terminated["exitCode"] == 0


def test_memory_limit_oom_kill_is_reported(node: tuple[Pycri, Cluster]) -> None:
    _, cluster = node
    cluster.apply(pod("hog", ["sh", "-c", "echo start; head -c 200m /dev/zero | tail"], restartPolicy="Never",
                      container={"resources": {"limits": {"memory": "32Mi"}, "requests": {"memory": "32Mi"}}}))
    wait_until(lambda: phase(cluster, "hog") == "Failed", 90, "hog killed")
    terminated = main_status(cluster, "hog")["state"]["terminated"]
    assert terminated["reason"] == "OOMKilled", terminated


def cgroup_file(pid: int, controller: str, name: str) -> str:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return (Path("/sys/fs/cgroup") / controller / path.lstrip("/") / name).read_text().strip()
    raise KeyError(controller)


def test_limits_runtime_class_and_pod_overhead(node: tuple[Pycri, Cluster]) -> None:
    pycri, cluster = node
    cluster.apply({"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": "runc"},
                   "handler": "runc", "overhead": {"podFixed": {"memory": "16Mi", "cpu": "100m"}}},
                  pod("limited", ["sleep", "3600"], runtimeClassName="runc",
                      container={"resources": {"requests": {"cpu": "250m", "memory": "64Mi"},
                                               "limits": {"cpu": "500m", "memory": "64Mi"}}}))
    wait_ready(cluster, "limited")
    sandbox = pycri.crictl_json("pods", "--name", "^limited$")["items"][0]
    assert sandbox["runtimeHandler"] == "runc"  # the RuntimeClass's handler ran the pod
    ctr = pycri.crictl_json("ps", "--pod", sandbox["id"])["containers"][0]
    pid = int(pycri.crictl_json("inspect", ctr["id"])["info"]["pid"])
    assert int(cgroup_file(pid, "memory", "memory.limit_in_bytes")) == 64 << 20
    assert cgroup_file(pid, "cpu", "cpu.cfs_quota_us") == "50000" and cgroup_file(pid, "cpu", "cpu.cfs_period_us") == "100000"
    assert cgroup_file(pid, "cpu", "cpu.shares") == "256"
    # the pod's cgroup (kubelet's, with the cgroupfs driver) holds the container plus the overhead
    assert int(cgroup_file(pid, "memory", "../memory.limit_in_bytes")) == (64 + 16) << 20


# --- exec, attach, port-forward, graceful deletion --------------------------------------------

def test_exec_attach_and_port_forward(node: tuple[Pycri, Cluster]) -> None:
    _, cluster = node
    cluster.apply(pod("shell", ["sh", "-c", "while read line; do echo got-$line; done"],
                      container={"stdin": True}),
                  pod("site", WEB_COMMAND))
    wait_ready(cluster, "shell", "site")
    assert cluster.kubectl("exec", "site", "--", "hostname").stdout == "site\n"
    piped = cluster.kubectl("exec", "-i", "site", "--", "tr", "a-z", "A-Z", input="through stdin\n")
    assert piped.stdout == "THROUGH STDIN\n"
    failed = cluster.kubectl("exec", "site", "--", "sh", "-c", "exit 9", check=False)
    assert failed.returncode == 9

    attach = cluster.popen("attach", "-i", "shell", stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    try:
        assert attach.stdin is not None and attach.stdout is not None
        deadline = time.monotonic() + 90
        seen = ""
        while "got-hello" not in seen:  # kubectl attach connects asynchronously: say it until heard
            assert time.monotonic() < deadline, seen
            attach.stdin.write("hello\n")
            attach.stdin.flush()
            seen += attach.stdout.readline()
    finally:
        attach.kill()
        attach.wait()

    forward = cluster.popen("port-forward", "pod/site", ":8080", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert forward.stdout is not None
        match = re.search(r"127\.0\.0\.1:(\d+) -> 8080", forward.stdout.readline())
        assert match
        assert wait_until(lambda: http_get(f"http://127.0.0.1:{match.group(1)}/"), 20, "forwarded") == b"site\n"
    finally:
        forward.send_signal(signal.SIGINT)
        forward.wait(timeout=10)


def test_delete_with_grace_period_sends_sigterm_first(node: tuple[Pycri, Cluster], tmp_path: Path) -> None:
    _, cluster = node
    os.chmod(tmp_path, 0o777)
    cluster.apply(pod("graceful", ["sh", "-c", "trap 'echo got-TERM > /host/term; exit 0' TERM; "
                                               "echo up > /host/up; while true; do sleep 0.2; done"],
                      volumes=[{"name": "host", "hostPath": {"path": str(tmp_path)}}],
                      container={"volumeMounts": [{"name": "host", "mountPath": "/host"}]}))
    wait_until(lambda: (tmp_path / "up").exists(), 90, "graceful running")
    started = time.monotonic()
    cluster.kubectl("delete", "pod", "graceful", "--grace-period=20", timeout=60)
    assert (tmp_path / "term").read_text() == "got-TERM\n"
    assert time.monotonic() - started < 15  # it left on SIGTERM, long before the SIGKILL


# --- the end: nothing left --------------------------------------------------------------------

def test_deleting_everything_leaves_nothing(node: tuple[Pycri, Cluster]) -> None:
    pycri, cluster = node
    ips = [p["status"].get("podIP") for p in cluster.get("pods")["items"]]
    cluster.kubectl("delete", "deployments,jobs,pods,configmaps,secrets", "--all", "--wait=true", "--timeout=120s",
                    timeout=150)
    wait_until(lambda: not pycri.crictl("pods", "-q").stdout.split(), 120,
               "kubelet removed every sandbox from pycri")
    assert pycri.crictl("ps", "-a", "-q").stdout.split() == []
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(pycri.root / "containers") not in mounts and str(pycri.state / "ns") + "/" not in mounts
    assert not any((pycri.state / "ns").iterdir()) if (pycri.state / "ns").exists() else True
    for ip in filter(None, ips):
        assert not (IPAM_DIR / ip).exists(), f"IP lease {ip} left"
    cgroups = [p for p in Path("/sys/fs/cgroup/memory/kubepods").rglob("*") if p.is_dir() and len(p.name) == 64]
    assert cgroups == [], cgroups  # no container cgroup left under kubelet's pods
