"""Load that must not knock pycri over: many pods created and removed at once, and a container
that writes hundreds of megabytes of logs. After each, the daemon answers, its memory has not
grown with the load, and nothing is left behind."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.e2e.harness import Pycri, rss_kib
from tests.e2e.test_pods import leftovers, wait_for

PODS = int(os.environ.get("PYCRI_CONCURRENT_PODS", "100"))


def test_many_pods_at_once(pycri: Pycri) -> None:
    assert pycri.process is not None
    pycri.crictl("pull", "busybox")

    def one(n: int) -> str:
        pod = pycri.run_pod(f"many{n}")
        pycri.crictl("create", pod, str(_ctr(pycri, n)), str(pycri.base / f"pod-many{n}.json"))
        return pod

    with ThreadPoolExecutor(max_workers=16) as pool:
        pods = list(pool.map(one, range(PODS)))
    assert len(set(pods)) == PODS
    listed = pycri.crictl_json("pods")["items"]
    assert {p["id"] for p in listed} == set(pods) and all(p["state"] == "SANDBOX_READY" for p in listed)
    ips = [pycri.crictl_json("inspectp", p)["status"]["network"]["ip"] for p in pods]
    assert len(set(ips)) == PODS, "two pods got one address"

    def gone(pod: str) -> None:
        pycri.crictl("stopp", pod)
        pycri.crictl("rmp", pod)

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(gone, pods))
    assert pycri.crictl_json("pods")["items"] == [] and pycri.crictl_json("ps", "-a")["containers"] == []
    assert leftovers(pycri, pods, ips) == []


def _ctr(pycri: Pycri, n: int) -> Path:
    from tests.e2e.harness import container_config
    return container_config(pycri.base, f"many{n}", ["sleep", "1000"])


def test_hundreds_of_megabytes_of_logs(pycri: Pycri) -> None:
    assert pycri.process is not None
    pod = pycri.run_pod("loud")
    before = rss_kib(pycri.process.pid)
    ctr = pycri.run(pod, "loud", "main", ["sh", "-c", "yes 0123456789abcdefghijklmnopqrstuvwxyz | head -c 200000000; "
                                                      "echo the-end; sleep 1000"])
    log = Path(pycri.crictl_json("inspect", ctr)["status"]["logPath"])
    wait_for(lambda: "the-end" in pycri.crictl("logs", "--tail", "1", ctr).stdout, timeout=600)
    assert log.stat().st_size > 200_000_000
    assert pycri.crictl_json("inspect", ctr)["status"]["state"] == "CONTAINER_RUNNING"
    pycri.crictl("exec", "-s", ctr, "true")  # still answers for the container
    assert rss_kib(pycri.process.pid) - before < 64 * 1024, "pycri grew with the container's logs"
    pycri.crictl("stopp", pod)
    pycri.crictl("rmp", pod)
