"""A 3-node kind cluster on pycri, made by `hack/kind.sh up` (issue 13's acceptance).

Opt-in, not run by default (dockerd, the node image, a 3-node cluster: minutes and GBs):

    PYCRI_KIND_E2E=1 .venv/bin/python -m pytest tests/e2e/test_kind_cluster.py -q -p no:cacheprovider

The cluster is named `pycri-accept` (KIND_CLUSTER), not the `pycri` one a user may have up, and is
deleted by `hack/kind.sh down` at the end. Workloads run one image that never saw a registry:
`docker build` here from the host's static busybox, then `kind load docker-image` (which runs
the node's `ctr` front end, hence `pycri images import`), and pods use imagePullPolicy: Never.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.kind_support import KUBECTL, OPT_IN, REPO, poll, run

CLUSTER = "pycri-accept"
WORKERS = (f"{CLUSTER}-worker", f"{CLUSTER}-worker2")
IMAGE = "pycri.local/kind-e2e-busybox:v1"

pytestmark = OPT_IN


@dataclass(frozen=True)
class Cluster:
    kind: str
    kubeconfig: Path

    def kubectl(self, *args: str, check: bool = True, stdin: str | None = None,
                timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return run(str(KUBECTL), "--kubeconfig", str(self.kubeconfig), *args, check=check, input=stdin,
                   timeout=timeout)

    def jsonpath(self, *args: str, path: str) -> str:
        return self.kubectl(*args, "-o", f"jsonpath={path}", check=False).stdout

    def in_node(self, node: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run("docker", "exec", node, *args, check=check, timeout=120)

    def wait_ready(self, *pods: str, timeout_s: int = 180) -> None:
        self.kubectl("wait", "--for=condition=Ready", *(f"pod/{p}" for p in pods), f"--timeout={timeout_s}s",
                     timeout=timeout_s + 30)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    env = {"KIND_CLUSTER": CLUSTER}
    run(str(REPO / "hack/kind.sh"), "up", env=env, timeout=3600)
    kind = run(str(REPO / "hack/build-kind.sh")).stdout.strip()
    kubeconfig = tmp_path_factory.mktemp("kind") / "kubeconfig"
    kubeconfig.write_text(run(kind, "get", "kubeconfig", "--name", CLUSTER).stdout)
    try:
        yield Cluster(kind, kubeconfig)
    finally:
        run(str(REPO / "hack/kind.sh"), "down", env=env, check=False, timeout=600)
        left = run("docker", "ps", "-a", "-q", "--filter", f"label=io.x-k8s.kind.cluster={CLUSTER}").stdout
        assert not left.strip(), f"kind left containers: {left}"


@pytest.fixture(scope="module")
def image(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A busybox image built by docker here and loaded into every node by `kind load`."""
    context = tmp_path_factory.mktemp("image")
    (context / "bin").mkdir()
    shutil.copy("/bin/busybox", context / "bin/busybox")
    for applet in ("sh", "httpd", "wget", "nslookup", "sleep", "echo", "cat", "hostname", "date", "env", "timeout"):
        (context / "bin" / applet).symlink_to("busybox")
    (context / "www").mkdir()
    (context / "Dockerfile").write_text(
        "FROM scratch\nCOPY bin /bin\nCOPY www /www\n"
        'CMD ["/bin/sh", "-c", "hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]\n')
    run("docker", "build", "-q", "-t", IMAGE, str(context), timeout=300)
    run(cluster.kind, "load", "docker-image", IMAGE, "--name", CLUSTER, timeout=600)
    return IMAGE


def apply(cluster: Cluster, manifest: str) -> None:
    cluster.kubectl("apply", "-f", "-", stdin=manifest)


def test_three_nodes_ready_on_pycri_with_the_systemd_driver(cluster: Cluster) -> None:
    nodes = [f"{CLUSTER}-control-plane", *WORKERS]

    def ready() -> bool:
        states = cluster.jsonpath("get", "nodes", path="{range .items[*]}{.metadata.name}="
                                  "{.status.conditions[?(@.type=='Ready')].status} {end}").split()
        return sorted(states) == sorted(f"{n}=True" for n in nodes)

    poll("3 nodes Ready", ready, deadline_s=300)
    for node in nodes:
        assert cluster.jsonpath("get", "node", node, path="{.status.nodeInfo.containerRuntimeVersion}") \
            .startswith("pycri://")
        assert "cgroupDriver: systemd" in cluster.in_node(node, "cat", "/var/lib/kubelet/config.yaml").stdout
        assert "SYSTEMD" in cluster.in_node(node, "crictl", "runtime-config").stdout


WEB = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule,
         labelSelector: {matchLabels: {app: web}}}
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms:
            - matchExpressions: [{key: node-role.kubernetes.io/control-plane, operator: DoesNotExist}]
      containers:
      - name: web
        image: %(image)s
        imagePullPolicy: Never
        ports: [{containerPort: 8080}]
        readinessProbe: {httpGet: {path: /, port: 8080}, periodSeconds: 2}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-nodeport}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"""


@pytest.fixture(scope="module")
def web(cluster: Cluster, image: str) -> dict[str, str]:
    """The `web` Deployment, one pod on each worker: node name -> pod IP."""
    apply(cluster, WEB % {"image": image})
    cluster.kubectl("rollout", "status", "deployment/web", "--timeout=240s", timeout=270)
    placed = cluster.jsonpath("get", "pods", "-l", "app=web",
                              path="{range .items[*]}{.spec.nodeName}={.status.podIP} {end}").split()
    return dict(item.split("=", 1) for item in placed)


def client_pod(cluster: Cluster, image: str, name: str, node: str) -> str:
    apply(cluster, f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  nodeName: {node}
  containers:
  - {{name: c, image: {image}, imagePullPolicy: Never, command: [sleep, "3600"]}}
""")
    cluster.wait_ready(name)
    return name


def test_deployment_spreads_over_both_workers(web: dict[str, str]) -> None:
    assert sorted(web) == sorted(WORKERS), web


def test_pods_reach_each_other_across_nodes_by_ip(cluster: Cluster, image: str, web: dict[str, str]) -> None:
    client = client_pod(cluster, image, "client-w1", WORKERS[0])
    other_ip = web[WORKERS[1]]
    body = poll("pod on the other worker answers", lambda: cluster.kubectl(
        "exec", client, "--", "timeout", "5", "wget", "-qO-", f"http://{other_ip}:8080/", check=False).stdout.strip())
    assert body.startswith("web-"), body  # its hostname, i.e. the pod name


def test_a_clusterip_service_answers_by_its_dns_name(cluster: Cluster, image: str, web: dict[str, str]) -> None:
    client = client_pod(cluster, image, "client-w2", WORKERS[1])
    body = poll("web.default.svc by name", lambda: cluster.kubectl(
        "exec", client, "--", "timeout", "5", "wget", "-qO-", "http://web.default.svc.cluster.local/",
        check=False).stdout.strip(), deadline_s=240)
    assert body.startswith("web-"), body



def http_body(url: str) -> str:
    """The page at url, stripped; "" while it does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.read().decode().strip()
    except OSError:
        return ""

def test_a_nodeport_answers_from_the_host(cluster: Cluster, web: dict[str, str]) -> None:
    port = cluster.jsonpath("get", "service", "web-nodeport", path="{.spec.ports[0].nodePort}")
    address = cluster.jsonpath("get", "node", WORKERS[0],
                               path="{.status.addresses[?(@.type=='InternalIP')].address}")
    assert poll(f"NodePort {address}:{port} from the host",
                lambda: http_body(f"http://{address}:{port}/")).startswith("web-")


CRASHER = """
apiVersion: v1
kind: Pod
metadata: {name: crasher}
spec:
  nodeName: %(node)s
  restartPolicy: Always
  containers:
  - name: c
    image: %(image)s
    imagePullPolicy: Never
    command: [sh, -c, 'echo "run at $(date +%%s%%N)"; sleep 2; exit 3']
"""


def test_logs_exec_and_a_crash_restart_on_a_worker(cluster: Cluster, image: str) -> None:
    apply(cluster, CRASHER % {"node": WORKERS[0], "image": image})
    restarts = poll("crasher restarted", lambda: int(cluster.jsonpath(
        "get", "pod", "crasher", path="{.status.containerStatuses[0].restartCount}") or 0) >= 1, deadline_s=240)
    assert restarts
    previous = poll("logs --previous", lambda: cluster.kubectl("logs", "--previous", "crasher", check=False).stdout)
    assert previous.startswith("run at "), previous
    last = cluster.jsonpath("get", "pod", "crasher",
                            path="{.status.containerStatuses[0].lastState.terminated.exitCode}")
    assert last == "3"
    # exec into a running pod on the worker
    client = client_pod(cluster, image, "exec-probe", WORKERS[0])
    assert cluster.kubectl("exec", client, "--", "sh", "-c", "echo $((6 * 7))").stdout.strip() == "42"
    assert cluster.kubectl("logs", "crasher", check=False).returncode == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_port_forward_to_a_pod_on_a_worker(cluster: Cluster, web: dict[str, str]) -> None:
    pod = cluster.jsonpath("get", "pods", "-l", "app=web", "--field-selector", f"spec.nodeName={WORKERS[1]}",
                           path="{.items[0].metadata.name}")
    port = free_port()
    forward = subprocess.Popen([str(KUBECTL), "--kubeconfig", str(cluster.kubeconfig), "port-forward",
                                f"pod/{pod}", f"{port}:8080"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        assert poll("port-forward answers", lambda: http_body(f"http://127.0.0.1:{port}/"), deadline_s=60) == pod
    finally:
        os.killpg(forward.pid, signal.SIGTERM)
        forward.wait(30)


def test_the_control_plane_runs_on_pycri(cluster: Cluster) -> None:
    node = f"{CLUSTER}-control-plane"
    for component in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        pod = f"{component}-{node}"
        poll(f"{pod} Running", lambda: cluster.jsonpath("-n", "kube-system", "get", "pod", pod,
                                                        path="{.status.phase}") == "Running")
    # in the scopes systemd made for pycri, in the pod slices kubelet made
    scopes = cluster.in_node(node, "systemctl", "list-units", "--type=scope", "--no-legend", "pycri-*").stdout
    assert scopes.count("pycri-") >= 4, scopes
    etcd = cluster.in_node(node, "sh", "-c", "cat /proc/$(pgrep -x etcd | head -1)/cgroup").stdout
    assert "kubepods" in etcd and ".slice/pycri-" in etcd and ".scope" in etcd, etcd


def test_restarting_pycri_on_a_worker_keeps_its_containers(cluster: Cluster, image: str) -> None:
    node = WORKERS[1]
    client = client_pod(cluster, image, "restart-probe", node)
    status = "{.status.containerStatuses[0].containerID} {.status.containerStatuses[0].restartCount}"
    before = cluster.jsonpath("get", "pod", client, path=status)
    cluster.in_node(node, "systemctl", "restart", "pycri")
    poll("pycri back", lambda: cluster.in_node(node, "crictl", "version", check=False).returncode == 0)
    assert cluster.jsonpath("get", "pod", client, path=status) == before
    # kubelet redials the socket with gRPC's backoff: exec works again once it has
    poll("exec after the restart", lambda: cluster.kubectl(
        "exec", client, "--", "echo", "back", check=False).stdout.strip() == "back", deadline_s=120)
