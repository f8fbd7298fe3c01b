"""kind node image whose runtime is pycri (issue 13): groundwork tests.

Opt-in, not run by default: they install and start dockerd (hack/docker.sh) and build the node
image (hack/kind-node-image.sh, ~2 min warm). Run them with

    PYCRI_KIND_E2E=1 .venv/bin/python -m pytest tests/e2e/test_kind.py -q -p no:cacheprovider

PYCRI_KIND_REBUILD=1 rebuilds the image even if docker has it. A node is started the way kind
starts one (kind v0.33.0, pkg/cluster/internal/providers/docker/provision.go: --privileged,
private cgroup namespace, tmpfs /tmp and /run, a volume on /var), without kind itself.
"""
from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("PYCRI_KIND_IMAGE", "pycri.local/node:v1.37.2")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.environ.get("PYCRI_KIND_E2E") != "1", reason="kind tests are opt-in: PYCRI_KIND_E2E=1"),
]


def run(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=timeout)


def forward_policy() -> str:
    out = run("iptables", "-S", "FORWARD").stdout
    return next(line.split()[2] for line in out.splitlines() if line.startswith("-P FORWARD"))


def poll(what: str, check, deadline_s: float = 120.0, every_s: float = 0.5):
    """check() until it returns something true; its last value, or fail with `what`."""
    end = time.monotonic() + deadline_s
    last = None
    while time.monotonic() < end:
        last = check()
        if last:
            return last
        time.sleep(every_s)
    pytest.fail(f"{what}: not after {deadline_s}s (last: {last!r})")


@pytest.fixture(scope="module")
def docker() -> str:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    before = forward_policy()
    sock = run(str(REPO / "hack/docker.sh")).stdout.strip()
    assert forward_policy() == before, "dockerd changed the iptables FORWARD policy"
    return sock


@pytest.fixture(scope="module")
def node_image(docker: str) -> str:
    present = run("docker", "image", "inspect", IMAGE, check=False).returncode == 0
    if not present or os.environ.get("PYCRI_KIND_REBUILD") == "1":
        run(str(REPO / "hack/kind-node-image.sh"), timeout=3600)
    return IMAGE


@pytest.fixture(scope="module")
def node(node_image: str) -> Iterator[str]:
    name = f"pycri-kind-test-{uuid.uuid4().hex[:8]}"
    run("docker", "run", "-d", "--name", name, "--hostname", name,
        "--privileged", "--cgroupns=private",
        "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
        "--tmpfs", "/tmp", "--tmpfs", "/run", "--volume", "/var",
        "-e", "container=docker", node_image)
    try:
        yield name
    finally:
        run("docker", "rm", "-f", "-v", name, check=False)


def in_node(node: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run("docker", "exec", node, *args, check=check, timeout=120)


def test_docker_keeps_the_forward_policy(docker: str) -> None:
    # pycri's own suite (bridge pycri0) needs it as it was: hack/docker.sh runs dockerd without iptables
    assert forward_policy() == "ACCEPT"


def test_node_boots_systemd_as_pid_1(node: str) -> None:
    def settled() -> str:
        state = in_node(node, "systemctl", "is-system-running", check=False).stdout.strip()
        return state if state in ("running", "degraded") else ""

    state = poll("systemd up", settled)
    assert state == "running", in_node(node, "systemctl", "--failed", "--no-pager", check=False).stdout
    assert in_node(node, "cat", "/proc/1/comm").stdout.strip() == "systemd"


def test_pycri_answers_on_containerds_socket(node: str) -> None:
    poll("pycri.service active", lambda: in_node(node, "systemctl", "is-active", "pycri", check=False).stdout.strip() == "active")
    out = poll("crictl version", lambda: in_node(node, "crictl", "version", check=False).stdout)
    assert "RuntimeName:  pycri" in out
    assert in_node(node, "test", "-S", "/run/containerd/containerd.sock", check=False).returncode == 0


def test_pycri_runtime_launcher_runs_on_the_nodes_python(node: str) -> None:
    launcher = in_node(node, "head", "-1", "/opt/pycri/venv/bin/pycri-runtime").stdout.strip()
    assert launcher.startswith("#!/usr/bin/python3") and launcher.endswith("-IS")
    assert in_node(node, "/opt/pycri/venv/bin/pycri-runtime", "--version", check=False).returncode == 0


def test_node_has_kinds_layout_and_no_containerd(node: str) -> None:
    version = in_node(node, "cat", "/kind/version").stdout.strip()
    assert version == in_node(node, "kubeadm", "version", "-o", "short").stdout.strip()
    for binary in ("kubeadm", "kubelet", "kubectl", "crictl", "conmon", "catatonit"):
        assert in_node(node, "sh", "-c", f"command -v {binary}", check=False).returncode == 0, binary
    # no containerd: /usr/local/bin/containerd is pycri's front end (hack/kind/containerd), which
    # answers `config dump` for kind load and refuses the rest
    refused = in_node(node, "containerd", "--version", check=False)
    assert refused.returncode != 0 and "runs pycri" in refused.stderr
    assert in_node(node, "systemctl", "is-enabled", "kubelet").stdout.strip() == "enabled"
    assert "pycri.service" in in_node(node, "cat", "/etc/default/kubelet").stdout


KUBECTL = Path(os.environ.get("PYCRI_KUBE_BIN", "/usr/local/lib/pycri/kube/bin")) / "kubectl"
CLUSTER = "pycri-e2e"
PROBE_POD = """
apiVersion: v1
kind: Pod
metadata: {name: etcd-probe}
spec:
  tolerations: [{key: node-role.kubernetes.io/control-plane, effect: NoSchedule}]
  nodeSelector: {node-role.kubernetes.io/control-plane: ""}
  containers:
  - name: etcd
    image: %s
    imagePullPolicy: Never
    command: [etcd, --data-dir=/tmp/etcd, --listen-client-urls=http://0.0.0.0:2379,
              --advertise-client-urls=http://127.0.0.1:2379]
"""


@pytest.fixture(scope="module")
def cluster(node_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """`kind create cluster` with hack/kind/cluster.yaml and the pod network hack/kind/flannel.yaml
    (as hack/kind.sh up); its kubeconfig in a temporary file."""
    kind = run(str(REPO / "hack/build-kind.sh")).stdout.strip()
    kubeconfig = tmp_path_factory.mktemp("kind") / "kubeconfig"
    run(kind, "delete", "cluster", "--name", CLUSTER, "--kubeconfig", str(kubeconfig), check=False)
    try:
        run(kind, "create", "cluster", "--name", CLUSTER, "--image", node_image, "--kubeconfig", str(kubeconfig),
            "--config", str(REPO / "hack/kind/cluster.yaml"), timeout=900)
        run(str(KUBECTL), "--kubeconfig", str(kubeconfig), "apply", "-f", str(REPO / "hack/kind/flannel.yaml"))
        yield kind, kubeconfig
    finally:
        run(kind, "delete", "cluster", "--name", CLUSTER, "--kubeconfig", str(kubeconfig), check=False)
        left = run("docker", "ps", "-a", "--filter", f"label=io.x-k8s.kind.cluster={CLUSTER}", "-q").stdout
        assert not left.strip(), f"kind left containers: {left}"
        # kind keeps its `kind` network for the next cluster; as hack/kind.sh down, remove it if unused
        attached = run("docker", "network", "inspect", "kind", "-f", "{{len .Containers}}", check=False)
        if attached.returncode == 0 and attached.stdout.strip() == "0":
            run("docker", "network", "rm", "kind", check=False)


def kubectl(kubeconfig: Path, *args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(KUBECTL), "--kubeconfig", str(kubeconfig), *args],
                          capture_output=True, text=True, timeout=180, input=stdin)
    if check and done.returncode:
        pytest.fail(f"kubectl {' '.join(args)}: exit {done.returncode}: {done.stderr.strip()}")
    return done


def test_kind_node_is_ready_on_pycri(cluster: tuple[str, Path]) -> None:
    _, kubeconfig = cluster
    node = f"{CLUSTER}-control-plane"
    poll("node Ready", lambda: kubectl(kubeconfig, "get", "node", node, "-o",
                                       "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
                                       check=False).stdout == "True", deadline_s=180)
    runtime = kubectl(kubeconfig, "get", "node", node, "-o",
                      "jsonpath={.status.nodeInfo.containerRuntimeVersion}").stdout
    assert runtime.startswith("pycri://")
    assert "cgroupDriver: cgroupfs" in in_node(node, "cat", "/var/lib/kubelet/config.yaml").stdout


def test_kind_control_plane_runs_on_pycri(cluster: tuple[str, Path]) -> None:
    _, kubeconfig = cluster
    for component in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        pod = f"{component}-{CLUSTER}-control-plane"
        poll(f"{pod} Running", lambda: kubectl(kubeconfig, "-n", "kube-system", "get", "pod", pod, "-o",
                                               "jsonpath={.status.phase}", check=False).stdout == "Running",
             deadline_s=180)


def test_kind_pod_logs_exec_and_pycri_restart(cluster: tuple[str, Path]) -> None:
    _, kubeconfig = cluster
    node = f"{CLUSTER}-control-plane"
    version = in_node(node, "cat", "/kind/version").stdout.strip()
    listed = in_node(node, "kubeadm", "config", "images", "list", "--kubernetes-version", version).stdout
    image = next(line for line in listed.split() if "/etcd:" in line)  # in the node's store since its build
    # the controller-manager makes the namespace's service account some seconds after start-up
    poll("serviceaccount default", lambda: kubectl(kubeconfig, "get", "serviceaccount", "default",
                                                   check=False).returncode == 0, deadline_s=120)
    kubectl(kubeconfig, "apply", "-f", "-", stdin=PROBE_POD % image)
    kubectl(kubeconfig, "wait", "--for=condition=Ready", "pod/etcd-probe", "--timeout=120s")
    poll("etcd-probe logs", lambda: "added member" in kubectl(kubeconfig, "logs", "etcd-probe", check=False).stdout)
    assert "etcd Version:" in kubectl(kubeconfig, "exec", "etcd-probe", "--", "etcd", "--version").stdout
    status = "jsonpath={.status.containerStatuses[0].containerID} {.status.containerStatuses[0].restartCount}"
    before = kubectl(kubeconfig, "get", "pod", "etcd-probe", "-o", status).stdout
    in_node(node, "systemctl", "restart", "pycri")
    poll("pycri back", lambda: in_node(node, "crictl", "version", check=False).returncode == 0)
    assert kubectl(kubeconfig, "get", "pod", "etcd-probe", "-o", status).stdout == before
    # the kubelet redials the socket with gRPC's backoff: exec works again once it has
    poll("exec after the restart", lambda: "etcd Version:" in kubectl(
        kubeconfig, "exec", "etcd-probe", "--", "etcd", "--version", check=False).stdout, deadline_s=120)


def test_kind_service_by_dns_name_from_a_pod(cluster: tuple[str, Path]) -> None:
    """kube-proxy and CoreDNS (images built with the node image) run on pycri: a pod resolves
    the kubernetes Service by name and connects to its ClusterIP."""
    _, kubeconfig = cluster
    node = f"{CLUSTER}-control-plane"
    version = in_node(node, "cat", "/kind/version").stdout.strip()
    listed = in_node(node, "kubeadm", "config", "images", "list", "--kubernetes-version", version).stdout
    image = next(line for line in listed.split() if "/kube-proxy:" in line)  # Debian: bash, getent
    poll("CoreDNS Ready", lambda: kubectl(kubeconfig, "-n", "kube-system", "get", "pods", "-l", "k8s-app=kube-dns", "-o",
                                          "jsonpath={.items[*].status.conditions[?(@.type=='Ready')].status}",
                                          check=False).stdout.split() == ["True", "True"], deadline_s=240)
    kubectl(kubeconfig, "run", "dns-probe", f"--image={image}", "--image-pull-policy=Never", "--restart=Never",
            '--overrides={"spec":{"tolerations":[{"operator":"Exists"}]}}', "--command", "--", "sleep", "600")
    kubectl(kubeconfig, "wait", "--for=condition=Ready", "pod/dns-probe", "--timeout=120s")
    resolved = poll("kubernetes.default resolved", lambda: kubectl(
        kubeconfig, "exec", "dns-probe", "--", "getent", "hosts", "kubernetes.default.svc.cluster.local",
        check=False).stdout.split())
    assert resolved[0] == kubectl(kubeconfig, "get", "service", "kubernetes", "-o", "jsonpath={.spec.clusterIP}").stdout
    connect = f"exec 3<>/dev/tcp/{resolved[0]}/443 && echo connected"
    assert "connected" in kubectl(kubeconfig, "exec", "dns-probe", "--", "timeout", "10", "bash", "-c", connect).stdout
