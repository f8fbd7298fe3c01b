"""The real kubelet, standalone (static pods from a manifest directory, cgroupfs driver), on a
pycri daemon of the test's own: pods start, crash and restart with back-off, report stats, and
stop when their manifest goes."""
from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.harness import Pycri
from tests.e2e.kube import Kubelet, container_status, http_get, kube_bin, wait_until

BUSYBOX = "registry.k8s.io/e2e-test-images/busybox:1.29-2"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, registries: Any) -> Iterator[tuple[Pycri, Kubelet]]:
    bin_dir = kube_bin()
    base = tmp_path_factory.mktemp("kubelet")
    (base / "pycri").mkdir()
    pycri = Pycri(base / "pycri")
    pycri.start()
    kubelet = Kubelet(base, f"unix://{pycri.socket}", bin_dir)
    try:
        kubelet.start()
        yield pycri, kubelet
    finally:
        for manifest in kubelet.manifests.iterdir():
            manifest.unlink()
        try:
            wait_until(lambda: not pycri.crictl("ps", "-q").stdout.split(), 60, "kubelet stopped every container")
        finally:
            kubelet.stop()
            pycri.remove_everything()
            pycri.stop()
            pycri.unmount_pin_root()


def static_pod(name: str, command: list[str], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "main", "image": BUSYBOX, "command": command}],
                     "terminationGracePeriodSeconds": 2, **spec}}


def running(kubelet: Kubelet, name: str) -> dict[str, Any] | None:
    pod = kubelet.pod(name)
    return pod if pod and "running" in container_status(pod, "main").get("state", {}) else None


def test_static_pod_serves_and_is_removed_with_its_manifest(node: tuple[Pycri, Kubelet]) -> None:
    pycri, kubelet = node
    manifest = kubelet.write_manifest("web", static_pod(
        "web", ["sh", "-c", "mkdir /www && echo from-a-static-pod > /www/index.html && exec httpd -f -p 8080 -h /www"]))
    pod = wait_until(lambda: running(kubelet, "web"), 90, "static pod web running")
    ip = pod["status"]["podIP"]
    body = wait_until(lambda: http_get(f"http://{ip}:8080/"), 20, "the web server answers")
    assert body == b"from-a-static-pod\n"
    sandboxes = pycri.crictl_json("pods", "--name", "web")["items"]
    assert len(sandboxes) == 1 and sandboxes[0]["state"] == "SANDBOX_READY"
    assert sandboxes[0]["labels"]["io.kubernetes.pod.namespace"] == "default"

    summary = kubelet.get("/stats/summary")  # kubelet's node view, from pycri's CRI stats
    stats = next(p for p in summary["pods"] if p["podRef"]["name"].startswith("web"))
    main = next(c for c in stats["containers"] if c["name"] == "main")
    assert main["memory"]["workingSetBytes"] > 0 and "usageCoreNanoSeconds" in main["cpu"]
    assert summary["node"]["nodeName"] == kubelet.node_name
    image_fs = summary["node"]["runtime"]["imageFs"]  # pycri's ImageFsInfo
    assert image_fs["usedBytes"] > 0 and image_fs["capacityBytes"] > image_fs["usedBytes"]

    manifest.unlink()
    wait_until(lambda: not pycri.crictl("ps", "-q", "--pod", sandboxes[0]["id"]).stdout.split(), 60,
               "web's container stopped")
    wait_until(lambda: kubelet.pod("web") is None, 60, "kubelet forgot web")


def test_crashing_static_pod_restarts_with_back_off(node: tuple[Pycri, Kubelet]) -> None:
    pycri, kubelet = node
    written = time.monotonic()
    manifest = kubelet.write_manifest("crash", static_pod("crash", ["sh", "-c", "echo run-$(date +%s); exit 3"]))
    seen: dict[int, float] = {}  # restart count -> when kubelet first reported it

    def restarted_twice() -> bool:
        count = container_status(kubelet.pod("crash"), "main").get("restartCount", 0)
        seen.setdefault(count, time.monotonic())
        return count >= 2

    wait_until(restarted_twice, 150, "two restarts", interval=0.2)
    assert 1 in seen
    # back-off: the wait before the second restart is longer than everything before the first
    assert seen[2] - seen[1] > seen[1] - written
    status = container_status(kubelet.pod("crash"), "main")
    last = status.get("lastState", {}).get("terminated") or status["state"].get("terminated")
    assert last["exitCode"] == 3
    # each restart is a new container with the next attempt number (kubelet removes older dead ones)
    containers = [c for c in pycri.crictl_json("ps", "-a", "--name", "^main$")["containers"]
                  if c["labels"].get("io.kubernetes.pod.name", "").startswith("crash")]
    assert max(int(c["metadata"]["attempt"]) for c in containers) >= 2
    manifest.unlink()
    wait_until(lambda: kubelet.pod("crash") is None, 60, "kubelet forgot crash")


def test_disk_pressure_garbage_collects_unused_images(node: tuple[Pycri, Kubelet]) -> None:
    pycri, kubelet = node
    unused = "registry.k8s.io/e2e-test-images/nginx:1.14-2"
    pycri.crictl("pull", unused)
    kubelet.write_manifest("keeper", static_pod("keeper", ["sleep", "3600"]))
    wait_until(lambda: running(kubelet, "keeper"), 90, "keeper running")
    # every filesystem looks full: kubelet's eviction manager reclaims through pycri's
    # ImageFsInfo and RemoveImage (static pods are critical, never evicted)
    kubelet.reconfigure(evictionHard={"nodefs.available": "99%", "imagefs.available": "99%"},
                        evictionPressureTransitionPeriod="5s", imageMinimumGCAge="1s")  # 0 means the default, 2 min
    try:
        wait_until(lambda: not pycri.crictl("images", "-q", unused).stdout.strip(), 120, "nginx image removed")
        assert pycri.crictl("images", "-q", BUSYBOX).stdout.strip()  # the image in use stays
        assert running(kubelet, "keeper")
    finally:
        (kubelet.manifests / "keeper.json").unlink()
        kubelet.reconfigure(evictionHard={})
    wait_until(lambda: kubelet.pod("keeper") is None, 60, "kubelet forgot keeper")


def test_nothing_left_after_the_pods_are_gone(node: tuple[Pycri, Kubelet]) -> None:
    pycri, kubelet = node
    wait_until(lambda: not pycri.crictl("ps", "-q").stdout.split(), 60, "no running container")
    wait_until(lambda: kubelet.pods() == [], 60, "kubelet has no pod left")
