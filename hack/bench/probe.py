"""Quick probes of one pycri on its own root, state, socket and network (not the bench's, not
the default daemon's; under /var/lib/pycri-probe and /run/pycri-probe, bridge pycriprobe0,
10.87.0.0/16): image call latency and memory per pod, each with a per-process breakdown.

    python -m hack.bench.probe images [--calls 30] [--tags 200]
    python -m hack.bench.probe memory [--pods 20] [--own-pid]
    python -m hack.bench.probe critest [--samples 30]

`images`: pulls IMAGES (about 20, from the test registry through hack/pycri.toml's mirrors),
then times ListImages, ImageStatus (by name) and ImageFsInfo `calls` times each from one Python
gRPC client (a first call warms the channel) and prints the medians in ms; then names busybox
`--tags` more times (pycri's admin tag) and times them again.
`memory`: `pods` running pods of one busybox container each (pod-wide PID namespace unless
--own-pid) and the PSS (smaps_rollup) of pycri's own processes minus the daemon's idle PSS,
per pod, with Pss_Anon/File/Shmem per kind of process (command name).
`critest`: critest -benchmark's image benchmarks only (PullImage, ImageStatus, RemoveImage,
ListImages; hack/bench/measure.py's parameters, every count `samples`), medians in ms.
Root only; needs the test registry (hack/registry.sh) and its images (hack/testimages.py).
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from pycri.api.cri import api_pb2 as cri
from pycri.api.cri import api_pb2_grpc as cri_grpc

from .measure import CRITEST_IMAGES, IMAGE, Client, critest_params, parse_critest_results, settle
from .runtimes import BENCH_ROOT, Daemon, PycriDaemon, processes

IMAGES = (
    "docker.io/library/busybox:latest", "docker.io/library/busybox:1.36", "docker.io/pycri/multiarch:latest",
    "docker.io/pycri/user-name:latest", "docker.io/pycri/user-uid:latest", "docker.io/pycri/user-uid-group:latest",
    "docker.io/pycri/whiteouts:latest", "docker.io/pycri/zstd:latest",
    "gcr.io/k8s-staging-cri-tools/test-image-1:latest", "gcr.io/k8s-staging-cri-tools/test-image-2:latest",
    "gcr.io/k8s-staging-cri-tools/test-image-3:latest", "gcr.io/k8s-staging-cri-tools/test-image-user-uid:latest",
    "gcr.io/k8s-staging-cri-tools/test-image-user-username:latest",
    "registry.k8s.io/e2e-test-images/busybox:1.29-2", "registry.k8s.io/e2e-test-images/nginx:1.14-2",
    "registry.k8s.io/e2e-test-images/httpd:2.4.39-4", "registry.k8s.io/e2e-test-images/nonroot:1.5",
    "registry.k8s.io/e2e-test-images/nonewprivs:1.4", "registry.k8s.io/pause:3.10.2", "k8s.gcr.io/pause:3.9",
)


PROBE = BENCH_ROOT.parent / "pycri-probe"  # root/ (removed after each run), work/, cni/, pycri.toml, pycri.log


class ProbePycri(PycriDaemon):
    """A PycriDaemon on paths, a bridge and a subnet of its own (the bench's may run meanwhile)."""

    def __init__(self) -> None:
        super().__init__()
        Daemon.__init__(self, "pycri-probe", PROBE / "root", Path("/run/pycri-probe"),
                        Path("/run/pycri-probe/pycri.sock"), subnet="10.87.0.0/16", bridge="pycriprobe0")
        self.work = PROBE / "work"
        self.cni_conf_dir = PROBE / "cni"
        self.crictl_config = self.work / "crictl.yaml"
        self.config = PROBE / "pycri.toml"
        self.log_file = PROBE / "pycri.log"
        self.cgroup_parent = "/pycri-probe"  # (not /pycri-bench-*: the bench checks that none is left)


def median_ms(call: Callable[[], object], calls: int) -> float:
    call()  # warm the channel and the daemon's first call of the kind
    samples = []
    for _ in range(calls):
        t = time.perf_counter()
        call()
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples)


def handler_ms(log_file: Path, offset: int) -> dict[str, float]:
    """method -> median duration_ms the daemon logged for its calls after `offset` in its log."""
    durations: dict[str, list[float]] = defaultdict(list)
    with open(log_file, "rb") as f:
        f.seek(offset)
        for line in f:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("event") == "cri call" and "duration_ms" in entry:
                durations[entry["method"]].append(float(entry["duration_ms"]))
    return {method: statistics.median(values) for method, values in durations.items()}


def images(daemon: ProbePycri, calls: int, tags: int) -> None:
    from pycri.criserver import admin_client

    for image in IMAGES:
        daemon.crictl("pull", image)
    client = Client(daemon)
    stub = cri_grpc.ImageServiceStub(client.channel)
    try:
        def measure(label: str) -> None:
            listed = stub.ListImages(cri.ListImagesRequest(), timeout=60).images
            offset = daemon.log_file.stat().st_size
            row = {
                "ListImages": median_ms(lambda: stub.ListImages(cri.ListImagesRequest(), timeout=60), calls),
                "ImageStatus": median_ms(lambda: stub.ImageStatus(
                    cri.ImageStatusRequest(image=cri.ImageSpec(image=IMAGE)), timeout=60), calls),
                "ImageFsInfo": median_ms(lambda: stub.ImageFsInfo(cri.ImageFsInfoRequest(), timeout=60), calls),
            }
            names = sum(len(i.repo_tags) for i in listed)
            print(f"{label}: {len(listed)} images, {names} tags: "
                  + ", ".join(f"{k} {v:.3f} ms" for k, v in row.items()), flush=True)
            handler = handler_ms(daemon.log_file, offset)
            print("  in the daemon (call interceptor's duration_ms): "
                  + ", ".join(f"{k} {v:.3f} ms" for k, v in handler.items() if k in row), flush=True)

        measure("pulled")
        for i in range(tags):
            admin_client.tag(daemon.socket, IMAGE, f"localhost/probe/tag-{i}:v{i}")
        measure(f"+{tags} tags")
    finally:
        client.close()


def pss_parts(pid: int) -> dict[str, int]:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return {}
    return {k: int(v) for k, v in re.findall(r"^(Pss\w*):\s+(\d+) kB", text, re.M)}


def breakdown(daemon: ProbePycri) -> dict[str, dict[str, int]]:
    """command name -> count and summed Pss parts of pycri's own processes."""
    comms = {p.pid: p.comm for p in processes()}
    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for pid in daemon.own_pids():
        name = "daemon" if pid == daemon.daemon_pid() else comms.get(pid, "?")
        out[name]["n"] += 1
        for key, value in pss_parts(pid).items():
            out[name][key] += value
    return out


def memory(daemon: ProbePycri, pods: int, shared_pid: bool) -> None:
    daemon.crictl("pull", IMAGE)
    settle()
    idle = breakdown(daemon)
    client = Client(daemon)
    try:
        for i in range(pods):
            client.run_pod(f"probe-{i}", shared_pid, containers=1)
        settle()
        busy = breakdown(daemon)
    finally:
        client.close()
        daemon.remove_all()
    total = sum(v.get("Pss", 0) for v in busy.values()) - sum(v.get("Pss", 0) for v in idle.values())
    mode = "pod-wide PID ns" if shared_pid else "PID ns per container"
    print(f"{mode}, {pods} pods: {total / pods / 1024:.3f} MB PSS per pod (own processes minus the idle daemon)")
    for name, parts in sorted(busy.items()):
        per = {k: v / pods for k, v in parts.items() if k != "n"}
        print(f"  {name:12} n={parts['n']:3}  per pod: " + "  ".join(f"{k} {v:7.1f} kB" for k, v in per.items()))


def critest_images(daemon: ProbePycri, samples: int) -> None:
    for image in CRITEST_IMAGES:
        daemon.crictl("pull", image)
    out = daemon.work / "critest"
    (out / "results").mkdir(parents=True, exist_ok=True)
    (out / "params.yaml").write_text(critest_params(samples))
    subprocess.run(["critest", "-benchmark", f"--runtime-endpoint={daemon.endpoint}",
                    f"--image-endpoint={daemon.endpoint}", f"--benchmarking-params-file={out / 'params.yaml'}",
                    f"--benchmarking-output-dir={out / 'results'}", "--ginkgo.no-color",
                    "--ginkgo.focus=[Ii]mage", "--ginkgo.skip=PodSandbox|Container"],
                   cwd=out, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, check=False, timeout=1800)
    for name, values in parse_critest_results(out / "results").items():
        print(f"{name} (critest, {len(values)} samples): median {statistics.median(values):.3f} ms")


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m hack.bench.probe")
    sub = p.add_subparsers(dest="command", required=True)
    i = sub.add_parser("images")
    i.add_argument("--calls", type=int, default=30)
    i.add_argument("--tags", type=int, default=200)
    m = sub.add_parser("memory")
    m.add_argument("--pods", type=int, default=20)
    m.add_argument("--own-pid", action="store_true")
    c = sub.add_parser("critest")
    c.add_argument("--samples", type=int, default=30)
    args = p.parse_args()
    daemon = ProbePycri()
    try:
        daemon.start()
        # the default pycri (another daemon, running pods) shares the default cgroup parent:
        # nothing of it is this probe's to check or remove (Daemon.remove_cgroups would rmdir
        # its new, empty cgroups)
        daemon.cgroups_before = None
        if args.command == "images":
            images(daemon, args.calls, args.tags)
        elif args.command == "critest":
            critest_images(daemon, args.samples)
        else:
            memory(daemon, args.pods, not args.own_pid)
    finally:
        daemon.remove_all()
        daemon.stop()
        daemon.remove_cgroups()  # (its own parent's only: cgroups_before is None)
        daemon.remove_bridge()
        subprocess.run(["rm", "-rf", str(daemon.root), str(daemon.state)], check=False)
        left = daemon.leftovers()
        if left:
            print("left behind:", *left, sep="\n  ")


if __name__ == "__main__":
    main()
