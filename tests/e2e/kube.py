"""The real kubelet (built by hack/build-kube.sh) on a pycri daemon: its configuration, its
processes and what it reports, for the Kubernetes end-to-end tests."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.e2e.harness import REPO

KUBE_BIN = Path(os.environ.get("PYCRI_KUBE_BIN", "/usr/local/lib/pycri/kube/bin"))
READ_ONLY_PORT = 10255  # kubelet's unauthenticated read-only API: /pods, /stats/summary
HEALTHZ_PORT = 10248


def kube_bin() -> Path:
    """Build kubelet and friends if needed (seconds when cached) and return their directory."""
    out = subprocess.run([str(REPO / "hack/build-kube.sh")], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


def wait_until(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not seen in {timeout:.0f} s")
        time.sleep(interval)


def http_get(url: str) -> bytes | None:
    """The body at `url`, or None while nothing answers."""
    try:
        return urllib.request.urlopen(url, timeout=3).read()
    except OSError:
        return None


def kubelet_config(base: Path, endpoint: str, static_pods: Path | None, **extra: Any) -> dict[str, Any]:
    """A KubeletConfiguration for one node on 127.0.0.1 with the cgroupfs driver."""
    config: dict[str, Any] = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "containerRuntimeEndpoint": endpoint, "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,  # this host is cgroup v1 (hybrid): kubelet >= 1.35 refuses it otherwise
        "failSwapOn": False,
        "address": "127.0.0.1", "port": 10250, "readOnlyPort": READ_ONLY_PORT,
        "healthzBindAddress": "127.0.0.1", "healthzPort": HEALTHZ_PORT,
        "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
        "authorization": {"mode": "AlwaysAllow"},
        "podLogsDir": str(base / "pod-logs"),
        "enforceNodeAllocatable": [], "evictionHard": {}, "imageGCHighThresholdPercent": 100,
        "syncFrequency": "5s", "fileCheckFrequency": "1s", "nodeStatusUpdateFrequency": "5s",
        "resolvConf": "/etc/resolv.conf",
        "serializeImagePulls": False,
    }
    if static_pods is not None:
        config["staticPodPath"] = str(static_pods)
    config.update(extra)
    return config


class Kubelet:
    """One kubelet process; standalone (static pods) unless given a kubeconfig."""

    def __init__(self, base: Path, endpoint: str, bin_dir: Path, kubeconfig: Path | None = None,
                 node_name: str = "pycri-node", **config: Any) -> None:
        self.base = base
        self.root = base / "kubelet"
        self.manifests = base / "manifests"
        self.log = base / "kubelet.log"
        self.bin_dir = bin_dir
        self.node_name = node_name
        self.kubeconfig = kubeconfig
        for d in (self.root, self.manifests, base / "pod-logs"):
            d.mkdir(parents=True, exist_ok=True)
        self.config = base / "kubelet-config.json"  # YAML is a superset of JSON
        self.config.write_text(json.dumps(kubelet_config(base, endpoint, self.manifests, **config)))
        self.process: subprocess.Popen[bytes] | None = None

    def reconfigure(self, **config: Any) -> None:
        """Stop, change the KubeletConfiguration, start again."""
        self.stop()
        current = json.loads(self.config.read_text())
        current.update(config)
        self.config.write_text(json.dumps(current))
        self.start()

    def start(self) -> None:
        args = [str(self.bin_dir / "kubelet"), "--config", str(self.config), "--root-dir", str(self.root),
                "--hostname-override", self.node_name, "--v", os.environ.get("PYCRI_KUBELET_V", "2")]
        if self.kubeconfig is not None:
            args += ["--kubeconfig", str(self.kubeconfig)]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(self.healthy, 60, f"kubelet healthz (log {self.log})")

    def healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"kubelet exited with {self.process.returncode}:\n{self.log_tail()}")
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{HEALTHZ_PORT}/healthz", timeout=2).read() == b"ok"
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        # kubelet bind-mounts its root dir onto itself and mounts volumes below it
        mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
        for mount in sorted((m for m in mounts if m.startswith(str(self.root))), reverse=True):
            subprocess.run(["umount", "-l", mount], check=False)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{READ_ONLY_PORT}{path}", timeout=10) as response:
            return json.loads(response.read())

    def pods(self) -> list[dict[str, Any]]:
        """The pods kubelet runs, with their status (the read-only API's /pods)."""
        return list(self.get("/pods").get("items") or [])

    def pod(self, name: str) -> dict[str, Any] | None:
        full = f"{name}-{self.node_name}"  # static pods are named after the node
        return next((p for p in self.pods() if p["metadata"]["name"] in (name, full)), None)

    def write_manifest(self, name: str, pod: dict[str, Any]) -> Path:
        path = self.manifests / f"{name}.json"
        tmp = self.manifests / f".{name}.json"  # kubelet skips dot-files: no half-written manifest
        tmp.write_text(json.dumps(pod))
        os.replace(tmp, path)
        return path


def container_status(pod: dict[str, Any] | None, name: str) -> dict[str, Any]:
    if pod is None:
        return {}
    for status in pod.get("status", {}).get("containerStatuses") or []:
        if status["name"] == name:
            return dict(status)
    return {}


class Cluster:
    """hack/local-cluster.sh's cluster (etcd, apiserver, controller-manager, scheduler, kubelet)
    with its kubelet on the given pycri endpoint, and kubectl for it."""

    def __init__(self, base: Path, endpoint: str, bin_dir: Path) -> None:
        self.dir = base / "cluster"
        self.env = {**os.environ, "CLUSTER_DIR": str(self.dir), "PYCRI_ENDPOINT": endpoint,
                    "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}
        self.kubectl_path = str(bin_dir / "kubectl")
        self.kubeconfig = self.dir / "admin.kubeconfig"

    def script(self, command: str) -> None:
        result = subprocess.run([str(REPO / "hack/local-cluster.sh"), command], env=self.env,
                                capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            raise AssertionError(f"local-cluster.sh {command} failed:\n{result.stderr[-4000:]}")

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([self.kubectl_path, "--kubeconfig", str(self.kubeconfig), *args],
                                input=input, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def popen(self, *args: str, **kwargs: Any) -> subprocess.Popen[str]:
        return subprocess.Popen([self.kubectl_path, "--kubeconfig", str(self.kubeconfig), *args],
                                text=True, **kwargs)

    def apply(self, *objects: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)}))

    def get(self, kind: str, name: str = "", *args: str) -> Any:
        return json.loads(self.kubectl("get", kind, *([name] if name else []), "-o", "json", *args).stdout)

    def log(self, component: str) -> str:
        return (self.dir / "logs" / f"{component}.log").read_text(errors="replace")
