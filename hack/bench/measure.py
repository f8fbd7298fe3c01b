"""The measurements, each of one runtime at a time, each adding samples to `Results`.

- `critest_benchmark`: `critest -benchmark` (cri-tools' gRPC benchmarks: pod, container and
  image life cycles, image listing) with every count set to `samples`, one at a time; each
  operation's samples in ms, and per run the sum of the RunPodSandbox, CreateContainer and
  StartContainer medians (what starting one pod with one container costs).
- `crictl_start`: `samples` pods one after another, each `crictl runp`, `create`, `start`,
  timed from outside (crictl's own start-up, ~15 ms a call, included), then `stopp`+`rmp`.
- `memory_per_pod`: `pods` running pods of one busybox container each; the PSS of the
  runtime's own processes (daemon, monitors, infra or pause; not the workloads) minus the
  daemon's PSS before the pods, per pod, in MB (and the part of it that is not the daemon's:
  conmon and catatonit, or shim and pause). Once with a PID namespace per container
  (kubelet's default) and once with a pod-wide one (shareProcessNamespace).
- `list_latency`: `containers` running containers (10 a pod), then ListContainers and
  ListPodSandbox over gRPC, each called `calls` times, in ms.
- `steady_state`: `pods` running pods (110, kubelet's max-pods) polled as kubelet's generic
  PLEG and stats would (no kubelet runs): the runtime's CPU, and the daemon's PSS growth.
"""
from __future__ import annotations

import json
import math
import os
import statistics
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import grpc
import structlog

from pycri.api.cri import api_pb2 as cri
from pycri.api.cri import api_pb2_grpc as cri_grpc

from .runtimes import WORKLOAD, Daemon, pss_kib
from .table import Results

log = structlog.get_logger("bench")

IMAGE = "docker.io/library/busybox:latest"
# what critest's benchmarks pull or run (all served by the test registry, hack/testimages.py)
CRITEST_IMAGES = (
    "registry.k8s.io/e2e-test-images/busybox:1.29-2",
    "registry.k8s.io/e2e-test-images/nginx:1.14-2",
    "registry.k8s.io/e2e-test-images/httpd:2.4.39-4",
)
CRITEST_PULL_IMAGE = "public.ecr.aws/docker/library/busybox:1.35.0-glibc"
# critest's operation names -> CRI method names
CRITEST_NAMES = {
    "CreatePod": "RunPodSandbox", "StatusPod": "PodSandboxStatus", "StopPod": "StopPodSandbox",
    "RemovePod": "RemovePodSandbox", "StatusContainer": "ContainerStatus", "PullImage": "PullImage",
    "StatusImage": "ImageStatus", "RemoveImage": "RemoveImage",
}
CRITEST_ORDER = ("RunPodSandbox", "CreateContainer", "StartContainer", "ContainerStatus", "StopContainer",
                 "RemoveContainer", "PodSandboxStatus", "StopPodSandbox", "RemovePodSandbox",
                 "PullImage", "ImageStatus", "RemoveImage", "ListImages")
POD_NAMESPACE = "pycri-bench"
CRITEST_TIMEOUT = 1800  # seconds: a hung benchmark must not hold the run (and its cleanup) forever
MIB = 1024.0


def time_calls(method: Any, request: Any, calls: int) -> list[float]:
    """The round trip of `calls` gRPC calls in ms, one at a time, after one that warms the
    channel."""
    method(request, timeout=60)
    samples = []
    for _ in range(calls):
        t = time.monotonic()
        method(request, timeout=60)
        samples.append(ms_since(t))
    return samples


def ms_since(started: float) -> float:
    return (time.monotonic() - started) * 1000


# ------------------------------------------------------------------------------ critest
def critest_params(samples: int) -> str:
    """critest's benchmark parameters: every count `samples`, one at a time."""
    return "\n".join([
        f"containersNumber: {samples}", "containersNumberParallel: 1", "containerBenchmarkTimeoutSeconds: 300",
        f"podsNumber: {samples}", "podsNumberParallel: 1", "podBenchmarkTimeoutSeconds: 300",
        f"imagesNumber: {samples}", "imagesNumberParallel: 1", "imageBenchmarkTimeoutSeconds: 300",
        f"imagePullingBenchmarkImage: {CRITEST_PULL_IMAGE}",
        "imageListingBenchmarkImages:", *[f"- {i}" for i in CRITEST_IMAGES],
        "podContainerStartBenchmarkTimeoutSeconds: 60", "",
    ])


def parse_critest_results(results_dir: Path) -> dict[str, list[float]]:
    """critest's *_benchmark_data.json files -> CRI method name -> samples in ms."""
    out: dict[str, list[float]] = {}
    for path in sorted(results_dir.glob("*_benchmark_data.json")):
        data = json.loads(path.read_text())
        names = data.get("operationsNames") or []
        for point in data.get("datapoints") or []:
            durations = point.get("operationsDurationsNs") or []
            for i, name in enumerate(names[:len(durations)]):
                out.setdefault(CRITEST_NAMES.get(name, name), []).append(durations[i] / 1e6)
    return out


def add_critest(results: Results, runtime: str, samples: dict[str, list[float]]) -> None:
    for name in [n for n in CRITEST_ORDER if n in samples] + sorted(set(samples) - set(CRITEST_ORDER)):
        results.add(f"{name} (critest, ms)", runtime, samples[name])
    start = ("RunPodSandbox", "CreateContainer", "StartContainer")
    if all(samples.get(n) for n in start):
        results.add("runp + create + start (critest, sum of medians, ms)", runtime,
                    sum(statistics.median(samples[n]) for n in start))


def critest_benchmark(daemon: Daemon, results: Results, samples: int, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    # an earlier run's results must not pass for this run's (critest may fail before it writes any)
    shutil.rmtree(out_dir / "results", ignore_errors=True)
    (out_dir / "results").mkdir()
    (out_dir / "params.yaml").write_text(critest_params(samples))
    args = ["critest", "-benchmark", f"--runtime-endpoint={daemon.endpoint}", f"--image-endpoint={daemon.endpoint}",
            f"--benchmarking-params-file={out_dir / 'params.yaml'}",
            f"--benchmarking-output-dir={out_dir / 'results'}", "--ginkgo.no-color"]
    started = time.monotonic()
    with open(out_dir / "critest.log", "wb") as out:
        # from its own directory: critest also reads a crictl.yaml in the parent directory
        try:
            status = subprocess.run(args, cwd=out_dir, stdout=out, stderr=subprocess.STDOUT, check=False,
                                    timeout=CRITEST_TIMEOUT).returncode
        except subprocess.TimeoutExpired:  # (subprocess.run has killed it)
            status = -1
            results.notes.append(f"critest -benchmark against {daemon.name} killed after {CRITEST_TIMEOUT} s")
    parsed = parse_critest_results(out_dir / "results")
    log.info("critest -benchmark", runtime=daemon.name, status=status, seconds=round(ms_since(started) / 1000),
             operations=len(parsed), log=str(out_dir / "critest.log"))
    if status != 0:
        results.notes.append(f"critest -benchmark against {daemon.name} exited {status} (log {out_dir / 'critest.log'})")
    add_critest(results, daemon.name, parsed)


# ------------------------------------------------------------------------------ configs
def pod_config(daemon: Daemon, name: str, shared_pid: bool) -> dict[str, Any]:
    """A pod like kubelet's: its own cgroup parent (checked at the end), a log directory."""
    pid = cri.POD if shared_pid else cri.CONTAINER
    return {
        "metadata": {"name": name, "namespace": POD_NAMESPACE, "uid": f"uid-{daemon.name}-{name}", "attempt": 0},
        "hostname": name[:63], "log_directory": str(daemon.work / "logs" / name),
        "linux": {"cgroup_parent": daemon.cgroup_parent,
                  "security_context": {"namespace_options": {"pid": pid}}},
    }


def container_config(name: str, shared_pid: bool) -> dict[str, Any]:
    pid = cri.POD if shared_pid else cri.CONTAINER
    return {"metadata": {"name": name}, "image": {"image": IMAGE}, "command": WORKLOAD, "log_path": f"{name}.log",
            "linux": {"security_context": {"namespace_options": {"pid": pid}}}}


def pod_message(config: dict[str, Any]) -> cri.PodSandboxConfig:
    ns = cri.NamespaceOption(pid=config["linux"]["security_context"]["namespace_options"]["pid"])
    return cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(**config["metadata"]), hostname=config["hostname"],
        log_directory=config["log_directory"],
        linux=cri.LinuxPodSandboxConfig(cgroup_parent=config["linux"]["cgroup_parent"],
                                        security_context=cri.LinuxSandboxSecurityContext(namespace_options=ns)))


def container_message(config: dict[str, Any]) -> cri.ContainerConfig:
    ns = cri.NamespaceOption(pid=config["linux"]["security_context"]["namespace_options"]["pid"])
    return cri.ContainerConfig(
        metadata=cri.ContainerMetadata(name=config["metadata"]["name"]), image=cri.ImageSpec(image=IMAGE),
        command=config["command"], log_path=config["log_path"],
        linux=cri.LinuxContainerConfig(security_context=cri.LinuxContainerSecurityContext(namespace_options=ns)))


class Client:
    """A CRI RuntimeService client on one channel (the same Python client for both runtimes)."""

    def __init__(self, daemon: Daemon) -> None:
        self.channel = grpc.insecure_channel(daemon.endpoint, options=[("grpc.max_receive_message_length", 64 << 20)])
        self.stub = cri_grpc.RuntimeServiceStub(self.channel)
        self.daemon = daemon

    def close(self) -> None:
        self.channel.close()

    def run_pod(self, name: str, shared_pid: bool, containers: int) -> list[str]:
        config = pod_config(self.daemon, name, shared_pid)
        Path(config["log_directory"]).mkdir(parents=True, exist_ok=True)
        pod = pod_message(config)
        pod_id = self.stub.RunPodSandbox(cri.RunPodSandboxRequest(config=pod), timeout=300).pod_sandbox_id
        ids = [pod_id]
        for i in range(containers):
            ctr = container_message(container_config(f"c{i}", shared_pid))
            cid = self.stub.CreateContainer(cri.CreateContainerRequest(
                pod_sandbox_id=pod_id, config=ctr, sandbox_config=pod), timeout=300).container_id
            self.stub.StartContainer(cri.StartContainerRequest(container_id=cid), timeout=300)
            ids.append(cid)
        return ids


def write_json(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


# ------------------------------------------------------------------------------ crictl
def crictl_start(daemon: Daemon, results: Results, samples: int, round_no: int) -> None:
    runp, create, start, total, remove = [], [], [], [], []
    for i in range(samples):
        name = f"crictl-r{round_no}-{i}"
        pod = pod_config(daemon, name, shared_pid=False)
        Path(pod["log_directory"]).mkdir(parents=True, exist_ok=True)
        pod_file = write_json(daemon.work / f"pod-{name}.json", pod)
        ctr_file = write_json(daemon.work / f"ctr-{name}.json", container_config("c0", shared_pid=False))
        t = time.monotonic()
        pod_id = daemon.crictl("runp", str(pod_file)).stdout.strip()
        t1 = ms_since(t)
        t = time.monotonic()
        cid = daemon.crictl("create", pod_id, str(ctr_file), str(pod_file)).stdout.strip()
        t2 = ms_since(t)
        t = time.monotonic()
        daemon.crictl("start", cid)
        t3 = ms_since(t)
        runp.append(t1), create.append(t2), start.append(t3), total.append(t1 + t2 + t3)
        t = time.monotonic()
        daemon.crictl("stopp", pod_id)
        daemon.crictl("rmp", pod_id)
        remove.append(ms_since(t))
    results.add("runp + create + start (crictl, ms)", daemon.name, total)
    results.add("crictl runp (ms)", daemon.name, runp)
    results.add("crictl create (ms)", daemon.name, create)
    results.add("crictl start (ms)", daemon.name, start)
    results.add("crictl stopp + rmp (ms)", daemon.name, remove)


# ------------------------------------------------------------------------------ memory
def own_pss_kib(daemon: Daemon) -> tuple[int, int, int]:
    """PSS of the runtime's own processes, of those but the daemon (and what it keeps for its life:
    pycri's warm infra launcher), and how many there are."""
    pids = daemon.own_pids()
    pss = {p: pss_kib(p) for p in pids}
    fixed = daemon.daemon_pids()
    return sum(pss.values()), sum(v for p, v in pss.items() if p not in fixed), len(pids)


def settle(seconds: float = 2.0) -> None:
    """Let the runtime's short-lived helpers (CNI plugins, runtime calls) end before a reading."""
    time.sleep(seconds)


def memory_per_pod(daemon: Daemon, results: Results, pods: int, shared_pid: bool, round_no: int) -> None:
    settle()
    idle, _, idle_n = own_pss_kib(daemon)
    client = Client(daemon)
    try:
        for i in range(pods):
            client.run_pod(f"mem-{'shared' if shared_pid else 'own'}-r{round_no}-{i}", shared_pid, containers=1)
        settle()
        busy, monitors, busy_n = own_pss_kib(daemon)
    finally:
        client.close()
        daemon.remove_all()
    per_pod = (busy - idle) / pods / MIB
    mode = "pod-wide PID ns" if shared_pid else "PID ns per container"
    log.info("memory", runtime=daemon.name, mode=mode, idle_mib=round(idle / MIB, 1), busy_mib=round(busy / MIB, 1),
             processes=f"{idle_n}->{busy_n}", per_pod_mib=round(per_pod, 2))
    results.add(f"memory per pod, {mode} (MB PSS, {pods} pods)", daemon.name, per_pod)
    results.add(f"memory per pod, {mode}: monitors + infra/pause only (MB PSS)", daemon.name, monitors / pods / MIB)
    if shared_pid:  # (after the other rows: the table's rows come in the order first added)
        results.add("runtime daemon idle (MB PSS)", daemon.name, idle / MIB)


# ------------------------------------------------------------------------------ list
def list_latency(daemon: Daemon, results: Results, containers: int, calls: int, round_no: int) -> None:
    per_pod = 10
    client = Client(daemon)
    try:
        made = 0
        for i in range(math.ceil(containers / per_pod)):
            n = min(per_pod, containers - made)
            client.run_pod(f"list-r{round_no}-{i}", shared_pid=False, containers=n)
            made += n
        settle()
        for method, request, name in (
            (client.stub.ListContainers, cri.ListContainersRequest(), "ListContainers"),
            (client.stub.ListPodSandbox, cri.ListPodSandboxRequest(), "ListPodSandbox"),
        ):
            samples = time_calls(method, request, calls)
            results.add(f"{name} at {containers} containers (gRPC, ms)", daemon.name, samples)
    finally:
        client.close()
        daemon.remove_all()


# ------------------------------------------------------------------------------ steady state
def cpu_ticks(pids: set[int]) -> int:
    """utime + stime of `pids` (clock ticks); a process gone counts 0."""
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total


def kubelet_like_poll(client: Client, seconds: float) -> int:
    """What kubelet asks of an idle node's runtime, without kubelet: the generic PLEG's relist
    (ListPodSandbox and ListContainers every second) and CRI stats (ListContainerStats and
    ListPodSandboxStats every 10 s). Returns the number of failed calls."""
    failed = 0
    started = time.monotonic()
    tick = 0
    while time.monotonic() - started < seconds:
        calls = [(client.stub.ListPodSandbox, cri.ListPodSandboxRequest()),
                 (client.stub.ListContainers, cri.ListContainersRequest())]
        if tick % 10 == 0:
            calls += [(client.stub.ListContainerStats, cri.ListContainerStatsRequest()),
                      (client.stub.ListPodSandboxStats, cri.ListPodSandboxStatsRequest())]
        for method, request in calls:
            try:
                method(request, timeout=30)
            except grpc.RpcError:
                failed += 1
        tick += 1
        time.sleep(max(0.0, started + tick - time.monotonic()))
    return failed


def steady_state(daemon: Daemon, results: Results, pods: int, seconds: float, round_no: int) -> None:
    """`pods` running pods under a kubelet-like poll for `seconds`: the CPU of the runtime's
    own processes (% of one core; and of those but the daemon) and how much the daemon's PSS
    grew over the window."""
    client = Client(daemon)
    try:
        for i in range(pods):
            client.run_pod(f"steady-r{round_no}-{i}", shared_pid=False, containers=1)
        settle()
        kubelet_like_poll(client, 5)  # warm-up: the first calls of a kind may allocate
        pids = daemon.own_pids()
        monitors = pids - daemon.daemon_pids()
        pss_before = pss_kib(daemon.daemon_pid())
        ticks_before, monitor_ticks_before = cpu_ticks(pids), cpu_ticks(monitors)
        t = time.monotonic()
        failed = kubelet_like_poll(client, seconds)
        elapsed = time.monotonic() - t
        ticks, monitor_ticks = cpu_ticks(pids) - ticks_before, cpu_ticks(monitors) - monitor_ticks_before
        pss_after = pss_kib(daemon.daemon_pid())
    finally:
        client.close()
        daemon.remove_all()
    hz = os.sysconf("SC_CLK_TCK")
    label = f"at {pods} pods, kubelet-like polling, {seconds:.0f} s"
    results.add(f"runtime CPU {label} (% of a core)", daemon.name, ticks / hz / elapsed * 100)
    results.add(f"runtime CPU {label}: monitors only (% of a core)", daemon.name, monitor_ticks / hz / elapsed * 100)
    results.add(f"daemon PSS growth over those {seconds:.0f} s (MB)", daemon.name, (pss_after - pss_before) / MIB)
    log.info("steady state", runtime=daemon.name, cpu_pct=round(ticks / hz / elapsed * 100, 2),
             monitors_cpu_pct=round(monitor_ticks / hz / elapsed * 100, 2),
             daemon_pss_growth_mib=round((pss_after - pss_before) / MIB, 2), failed_calls=failed)
    if failed:
        results.notes.append(f"{daemon.name}: {failed} polling calls failed in round {round_no + 1}")


# ------------------------------------------------------------------------------ images
def pull_images(daemon: Daemon, extra: tuple[str, ...] = ()) -> None:
    """Everything the measurements run, pulled once before the first timing."""
    for image in (IMAGE, *CRITEST_IMAGES, *extra):
        daemon.crictl("pull", image)
