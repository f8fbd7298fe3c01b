"""Benchmark: pod start latency and memory, through crictl, like containerd's and CRI-O's figures.

    .venv/bin/python -m tests.bench.pods [--pods 20] [--handler runc|pycri]

For each of N pods created one after another: RunPodSandbox, CreateContainer and
StartContainer timed through crictl (median and p95 of each and of their sum); then
pycri's RSS idle and with N running pods, and the RSS of each container's monitor
(conmon). Needs hack/setup.sh to have run. Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from tests.e2e.harness import Pycri, container_config, pod_config, rss_kib


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def timed(pycri: Pycri, *args: str) -> tuple[float, str]:
    started = time.monotonic()
    out = pycri.crictl(*args).stdout.strip()
    return (time.monotonic() - started) * 1000, out


def conmon_rss(pycri: Pycri) -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    pids = [int(line.split()[0]) for line in out.splitlines()[1:]
            if "conmon" in line.split()[1] and str(pycri.root) in line]
    return [rss_kib(pid) for pid in pids]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pods", type=int, default=20)
    parser.add_argument("--handler", default="runc")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pycri-bench-") as tmp:
        base = Path(tmp)
        pycri = Pycri(base)
        pycri.start()
        try:
            assert pycri.process is not None
            pycri.crictl("pull", "busybox")
            time.sleep(1)
            idle = rss_kib(pycri.process.pid)
            runp, create, start, total = [], [], [], []
            for i in range(args.pods):
                pod_file = pod_config(base, f"bench{i}")
                ctr_file = container_config(base, f"c{i}", ["sleep", "3600"])
                t1, pod = timed(pycri, "runp", "--runtime", args.handler, str(pod_file))
                t2, ctr = timed(pycri, "create", pod, str(ctr_file), str(pod_file))
                t3, _ = timed(pycri, "start", ctr)
                runp.append(t1), create.append(t2), start.append(t3), total.append(t1 + t2 + t3)
            busy = rss_kib(pycri.process.pid)
            monitors = conmon_rss(pycri)
            print(f"{args.pods} pods, one after another, handler {args.handler}, through crictl (ms):")
            for name, values in (("RunPodSandbox", runp), ("CreateContainer", create),
                                 ("StartContainer", start), ("sum of the three", total)):
                print(f"  {name:18} median {statistics.median(values):7.1f}   p95 {percentile(values, 0.95):7.1f}")
            print(f"pycri RSS: idle {idle / 1024:.1f} MiB, with {args.pods} running pods {busy / 1024:.1f} MiB")
            if monitors:
                print(f"conmon RSS per container: median {statistics.median(monitors) / 1024:.2f} MiB "
                      f"(min {min(monitors) / 1024:.2f}, max {max(monitors) / 1024:.2f}) over {len(monitors)}")
        finally:
            pycri.remove_everything()
            pycri.stop()
            pycri.unmount_pin_root()


if __name__ == "__main__":
    main()
