"""Kubelet at 110 pods on the local cluster, pycri against containerd: `python -m hack.bench.kubelet`
(root, from the repo; hack/bench-kubelet.sh builds or finds the binaries and runs this).

For each runtime in turn (alternating which goes first when --rounds > 1, and for each
--evented setting): a CRI daemon of its own (hack/bench/runtimes.py's PycriDaemon or
ContainerdDaemon, on paths, a bridge and a subnet of this command's own), the local cluster
(hack/local-cluster.sh: etcd, apiserver, controller-manager, scheduler, kubelet) on its own
directory, ports (PORT_OFFSET) and cgroup root, kubelet pointed at that daemon's socket with
the cgroupfs driver; then `--pods` busybox `sleep` pods (110: kubelet's default max-pods; the
local cluster runs no pod of its own: no kube-proxy, no CoreDNS, no static pods), and once all
are Running, a steady window of `--seconds`: the CPU time (utime + stime, and what the
process reaped: cutime + cstime, from /proc) of the runtime's own processes, split into the
daemon and its monitors (pycri: conmons; containerd: shims and pause processes), and of
kubelet, each as % of one core; and the runtime's memory (PSS) every `--sample-every`
seconds: start, end, max and the least-squares slope. Then the pods are deleted through the
API, the cluster and the daemon are taken down and nothing may be left: pods, sandboxes,
mounts, cgroups, network namespaces (pinned by mounts under the daemon's state), IP leases.

    python -m hack.bench.kubelet run [--runtime both|pycri|containerd] [--rounds 1] [--pods 110]
                                     [--seconds 120 | --minutes 60] [--evented off|on|both] ...
    python -m hack.bench.kubelet evented [--runtime pycri]   kubelet's EventedPLEG gate at work
    python -m hack.bench.kubelet table RESULTS.json          an earlier run's table again
    python -m hack.bench.kubelet cleanup [--instance N]      what an interrupted run left behind

`--instance N` (default 0) picks the paths, ports (+1000 (N+1)), cgroup root and subnets, so that
two runs can go side by side (a long memory run and a short comparison): none of them is the
default local cluster's (hack/conformance.sh's) or the default pycri's (/run/pycri).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import ssl
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from .runtimes import REPO, WORKLOAD, ContainerdDaemon, Daemon, PycriDaemon, pss_kib
from .table import Results, format_markdown, format_text

log = structlog.get_logger("bench.kubelet")

BASE_ROOT = Path(os.environ.get("PYCRI_KUBELET_BENCH_ROOT", "/var/lib/pycri-bench-kubelet"))
BASE_STATE = Path(os.environ.get("PYCRI_KUBELET_BENCH_STATE", "/run/pycri-bench-kubelet"))
DEFAULT_OUT = Path("/var/tmp/pycri-bench-kubelet/table.md")
IMAGE = "docker.io/library/busybox:latest"
SANDBOX_IMAGE = "registry.k8s.io/pause:3.10.2"
APP_LABEL = "pycri-kubelet-bench"
MIB = 1024.0
# the CRI runtime's own processes as the table names them
MONITORS = {"pycri": "conmons", "containerd": "shims + pause"}


# ------------------------------------------------------------------------------ instances
@dataclass(frozen=True)
class Instance:
    """Where one run of this command keeps everything: paths, ports, cgroup root, subnets."""

    number: int = 0

    @property
    def root(self) -> Path:
        return BASE_ROOT / f"i{self.number}"

    @property
    def state(self) -> Path:
        return BASE_STATE / f"i{self.number}"

    @property
    def cluster_dir(self) -> Path:
        return self.root / "cluster"

    @property
    def port_offset(self) -> int:
        return 1000 * (self.number + 1)

    @property
    def cgroup_root(self) -> str:
        return f"/pycri-bench-kubelet-{self.number}"

    def subnet(self, runtime: str) -> str:
        return f"10.{83 if runtime == 'pycri' else 84}.{self.number}.0/24"

    def bridge(self, runtime: str) -> str:
        return f"{'pycri' if runtime == 'pycri' else 'ctrd'}kbl{self.number}"


def relocate(daemon: Daemon, instance: Instance, runtime: str) -> None:
    """Move a bench daemon onto the instance's paths, bridge and subnet (as probe.py does)."""
    root = instance.root / runtime
    daemon.root = root / "root"
    daemon.state = instance.state / runtime
    daemon.socket = daemon.state / f"{runtime}.sock"
    daemon.subnet = instance.subnet(runtime)
    daemon.bridge = instance.bridge(runtime)
    daemon.work = root / "work"
    daemon.cni_conf_dir = root / "cni"
    daemon.log_file = root / f"{runtime}.log"
    daemon.crictl_config = daemon.work / "crictl.yaml"
    # kubelet gives every pod its cgroup parent: under the instance's cgroup root
    daemon.cgroup_parent = instance.cgroup_root
    # the default parents (/pycri, /k8s.io) are shared with other daemons on this machine:
    # kubelet's pods never go there, so they are not watched
    daemon.default_cgroup_parent = ""
    daemon.config = root / f"{runtime}.toml"  # type: ignore[attr-defined]


def make_daemon(runtime: str, instance: Instance, containerd_bin: Path) -> Daemon:
    daemon: Daemon
    if runtime == "pycri":
        daemon = PycriDaemon(runc=containerd_bin / "runc")
    else:
        daemon = ContainerdDaemon(containerd_bin, sandbox_image=SANDBOX_IMAGE)
        daemon.hosts_dir = instance.root / runtime / "certs.d"
    relocate(daemon, instance, runtime)
    return daemon


# ------------------------------------------------------------------------------ /proc
@dataclass(frozen=True)
class CpuTicks:
    """A process's CPU time in clock ticks: its own (utime + stime) and its reaped children's."""

    own: int
    children: int

    @property
    def total(self) -> int:
        return self.own + self.children


def parse_stat(text: str) -> CpuTicks:
    """/proc/PID/stat -> CpuTicks (fields 14-17: utime, stime, cutime, cstime). The command
    name (field 2) may hold spaces and parentheses: fields are counted after its last ')'."""
    fields = text[text.rindex(")") + 2:].split()
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return CpuTicks(utime + stime, cutime + cstime)


def read_ticks(pids: set[int]) -> dict[int, CpuTicks]:
    out = {}
    for pid in pids:
        try:
            out[pid] = parse_stat(Path(f"/proc/{pid}/stat").read_text())
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    return out


def ticks_used(before: dict[int, CpuTicks], after: dict[int, CpuTicks], pids: set[int]) -> int:
    """Ticks `pids` used between two readings, what they reaped included. A process that
    started in between counts from 0; one that ended in between is lost (with the part of its
    time its parent reaped counted in the parent's children)."""
    total = 0
    for pid in pids:
        if pid not in after:
            continue
        start = before.get(pid, CpuTicks(0, 0))
        total += max(0, after[pid].total - start.total)
    return total


def percent_of_core(ticks: int, seconds: float, hz: int) -> float:
    return ticks / hz / seconds * 100 if seconds > 0 else 0.0


# ------------------------------------------------------------------------------ memory
@dataclass
class MemorySample:
    t: float  # seconds since the window began
    daemon_kib: int
    monitors_kib: int
    processes: int

    @property
    def total_kib(self) -> int:
        return self.daemon_kib + self.monitors_kib


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per hour (0 with fewer than 2 times)."""
    if len(points) < 2:
        return 0.0
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx * 3600


@dataclass
class MemorySummary:
    start: float
    end: float
    max: float
    slope_per_hour: float
    late_slope_per_hour: float  # over the second half of the window: after start-up's garbage is collected


def summarize(values: list[tuple[float, float]]) -> MemorySummary:
    """(seconds, MB) samples -> start, end, max, and the slope in MB/h over the whole window
    and over its second half."""
    if not values:
        return MemorySummary(0.0, 0.0, 0.0, 0.0, 0.0)
    half = values[-1][0] / 2
    return MemorySummary(values[0][1], values[-1][1], max(v for _, v in values), slope_per_hour(values),
                         slope_per_hour([v for v in values if v[0] >= half]))


# ------------------------------------------------------------------------------ pods
def pod_manifest(name: str, image: str = IMAGE, command: list[str] | None = None,
                 restart_policy: str = "Always") -> dict[str, Any]:
    """A busybox pod as a user would write it (one container, no requests: BestEffort)."""
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": APP_LABEL}},
        "spec": {
            "restartPolicy": restart_policy,
            "terminationGracePeriodSeconds": 2,  # sleep as PID 1 ignores SIGTERM
            "enableServiceLinks": False,
            "containers": [{"name": "sleep", "image": image, "imagePullPolicy": "IfNotPresent",
                            "command": command or list(WORKLOAD)}],
        },
    }


def pod_list(count: int, prefix: str = "bench") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "List", "items": [pod_manifest(f"{prefix}-{i:03d}") for i in range(count)]}


def pod_phases(pods_json: dict[str, Any]) -> Counter[str]:
    """`kubectl get pods -o json` -> phase counts; a pod being deleted counts as Terminating,
    a Running pod whose containers are not all ready as Starting."""
    phases: Counter[str] = Counter()
    for pod in pods_json.get("items", []):
        if pod.get("metadata", {}).get("deletionTimestamp"):
            phases["Terminating"] += 1
            continue
        status = pod.get("status", {})
        phase = status.get("phase", "Unknown")
        if phase == "Running" and not all(c.get("ready") for c in status.get("containerStatuses") or [{}]):
            phase = "Starting"
        phases[phase] += 1
    return phases


def restart_count(pod_json: dict[str, Any]) -> int:
    return sum(c.get("restartCount", 0) for c in pod_json.get("status", {}).get("containerStatuses") or [])


# ------------------------------------------------------------------------------ metrics
def metric_value(text: str, name: str) -> float | None:
    """The sum over every label set of a Prometheus text-format metric (None if absent)."""
    total, seen = 0.0, False
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{[^}}]*\}})?\s+(\S+)")
    for line in text.splitlines():
        match = pattern.match(line)
        if match:
            total += float(match.group(1))
            seen = True
    return total if seen else None


@dataclass
class EventedMetrics:
    """kubelet's EventedPLEG counters: streams obtained, stream errors, events received."""

    connections: float | None
    errors: float | None
    events: float | None

    @classmethod
    def parse(cls, text: str) -> "EventedMetrics":
        return cls(metric_value(text, "kubelet_evented_pleg_connection_success_count"),
                   metric_value(text, "kubelet_evented_pleg_connection_error_count"),
                   metric_value(text, "kubelet_evented_pleg_connection_latency_seconds_count"))


def runtime_operations(text: str) -> dict[str, float]:
    """kubelet_runtime_operations_total by operation type: the CRI calls kubelet made."""
    out = {}
    for match in re.finditer(r'^kubelet_runtime_operations_total\{operation_type="([^"]+)"\}\s+(\S+)', text, re.M):
        out[match.group(1)] = float(match.group(2))
    return out


def calls_per_second(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
    """CRI calls a second by operation type between two readings (types with none left out)."""
    if seconds <= 0:
        return {}
    rates = {op: (after[op] - before.get(op, 0.0)) / seconds for op in after}
    return {op: rate for op, rate in sorted(rates.items()) if rate > 0}


def parse_gates(text: str) -> dict[str, bool]:
    """"EventedPLEG=true,Foo=false" -> {"EventedPLEG": True, "Foo": False}."""
    gates = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, _, value = item.partition("=")
        if value.lower() not in ("true", "false"):
            raise ValueError(f"feature gate {item!r}: want NAME=true or NAME=false")
        gates[name] = value.lower() == "true"
    return gates


def pleg_label(evented: bool) -> str:
    return "EventedPLEG on" if evented else "generic PLEG"


# ------------------------------------------------------------------------------ cluster
@dataclass
class Cluster:
    """hack/local-cluster.sh on the instance's directory, ports and cgroup root."""

    instance: Instance
    endpoint: str
    feature_gates: str = ""
    kubelet_args: list[str] = field(default_factory=list)

    @property
    def dir(self) -> Path:
        return self.instance.cluster_dir

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "admin.kubeconfig"

    def env(self) -> dict[str, str]:
        return {**os.environ, "CLUSTER_DIR": str(self.dir), "PYCRI_ENDPOINT": self.endpoint,
                "PORT_OFFSET": str(self.instance.port_offset), "CGROUP_ROOT": self.instance.cgroup_root,
                "FEATURE_GATES": self.feature_gates, "KUBELET_EXTRA_ARGS": " ".join(self.kubelet_args)}

    def script(self, command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(REPO / "hack" / "local-cluster.sh"), command], env=self.env(),
                                capture_output=True, text=True, timeout=600)
        if check and result.returncode != 0:
            raise RuntimeError(f"local-cluster.sh {command} failed ({result.returncode}):\n{result.stderr[-3000:]}")
        return result

    def start(self) -> None:
        self.script("start")

    def down(self) -> None:
        self.script("down", check=False)

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True,
                timeout: float = 900) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["kubectl", "--kubeconfig", str(self.kubeconfig), *args], input=stdin,
                                capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()[-2000:]}")
        return result

    def pid(self, component: str) -> int:
        return int((self.dir / "run" / f"{component}.pid").read_text())

    def kubelet_log(self) -> Path:
        return self.dir / "logs" / "kubelet.log"

    def kubelet_metrics(self) -> str:
        """kubelet's /metrics, asked directly with the apiserver's kubelet client certificate
        (the apiserver's node proxy refuses a loopback node address)."""
        pki = self.dir / "pki"
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        context.load_cert_chain(str(pki / "apiserver-kubelet-client.crt"), str(pki / "apiserver-kubelet-client.key"))
        url = f"https://127.0.0.1:{10250 + self.instance.port_offset}/metrics"
        try:
            with urllib.request.urlopen(url, context=context, timeout=30) as reply:
                return reply.read().decode()
        except OSError as e:
            log.warning("kubelet metrics", error=str(e))
            return ""

    def pods(self) -> dict[str, Any]:
        out = self.kubectl("get", "pods", "-l", f"app={APP_LABEL}", "-o", "json", check=False)
        return json.loads(out.stdout) if out.returncode == 0 and out.stdout else {"items": []}

    def wait_pods(self, want: dict[str, int], timeout: float, what: str) -> float:
        """Poll until the app's pods' phases are `want` (e.g. {"Running": 110}, or {} for none);
        returns the seconds it took."""
        started = time.monotonic()
        last: Counter[str] = Counter()
        while time.monotonic() - started < timeout:
            last = pod_phases(self.pods())
            if dict(last) == want:
                return time.monotonic() - started
            time.sleep(2)
        raise RuntimeError(f"{what}: pods {dict(last)} after {timeout:.0f} s, want {want}")


# ------------------------------------------------------------------------------ a phase
@dataclass
class Phase:
    """One runtime under one kubelet configuration: start, fill, measure, empty, tear down."""

    runtime: str
    evented: bool
    instance: Instance
    containerd_bin: Path
    pods: int
    seconds: float
    sample_every: float
    kubelet_args: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    memory: list[MemorySample] = field(default_factory=list)
    left: list[str] = field(default_factory=list)  # what teardown found left behind

    def run(self, results: Results) -> None:
        """Measure into `results`; `left` says what was left behind (empty: all clean)."""
        daemon = make_daemon(self.runtime, self.instance, self.containerd_bin)
        cluster = Cluster(self.instance, daemon.endpoint, "EventedPLEG=true" if self.evented else "",
                          self.kubelet_args)
        label = f"{self.pods} pods, {pleg_label(self.evented)}"
        try:
            cluster.down()  # whatever an interrupted run left
            daemon.start()
            for image in (IMAGE, SANDBOX_IMAGE) if self.runtime == "containerd" else (IMAGE,):
                daemon.crictl("pull", image)
            cluster.start()
            log.info("cluster up", runtime=self.runtime, evented=self.evented, kubelet=cluster.pid("kubelet"))
            t = time.monotonic()
            cluster.kubectl("create", "-f", "-", stdin=json.dumps(pod_list(self.pods)))
            started = cluster.wait_pods({"Running": self.pods}, 1800, "starting the pods")
            log.info("pods running", runtime=self.runtime, pods=self.pods, seconds=round(time.monotonic() - t))
            results.add(f"{self.pods} pods created to all Running, {pleg_label(self.evented)} (s)", self.runtime,
                        started)
            time.sleep(min(30.0, self.seconds / 4))  # let the start-up's last calls and GC settle
            self.measure(daemon, cluster, results, label)
            if self.evented:
                self.evented_notes(cluster, results)
            t = time.monotonic()
            cluster.kubectl("delete", "pods", "-l", f"app={APP_LABEL}", "--wait=false")
            deleted = cluster.wait_pods({}, 1200, "deleting the pods")
            results.add(f"{self.pods} pods deleted to gone from the API, {pleg_label(self.evented)} (s)",
                        self.runtime, deleted)
            left = self.wait_runtime_empty(daemon, 180)
            if left:
                self.notes.append(f"{self.runtime}: {left} sandboxes still in the runtime 180 s after kubelet "
                                  "deleted their pods (removed over crictl)")
        finally:
            self.left = self.teardown(daemon, cluster)

    def measure(self, daemon: Daemon, cluster: Cluster, results: Results, label: str) -> None:
        hz = os.sysconf("SC_CLK_TCK")
        kubelet = cluster.pid("kubelet")
        daemon_pid = daemon.daemon_pid()
        own = daemon.own_pids()
        ops_before = runtime_operations(cluster.kubelet_metrics())
        before = read_ticks(own | {kubelet})
        t0 = time.monotonic()
        self.memory = []
        next_sample = 0.0
        while True:
            elapsed = time.monotonic() - t0
            if elapsed >= next_sample:
                pids = daemon.own_pids()
                monitors = pids - {daemon_pid}
                self.memory.append(MemorySample(round(elapsed, 1), pss_kib(daemon_pid),
                                                sum(pss_kib(p) for p in monitors), len(pids)))
                next_sample += self.sample_every
            if elapsed >= self.seconds:
                break
            time.sleep(max(0.0, min(next_sample, self.seconds) - (time.monotonic() - t0)))
        own_after = daemon.own_pids()
        after = read_ticks(own_after | {kubelet})
        window = time.monotonic() - t0
        rates = calls_per_second(ops_before, runtime_operations(cluster.kubelet_metrics()), window)
        monitors = (own | own_after) - {daemon_pid}
        d = percent_of_core(ticks_used(before, after, {daemon_pid}), window, hz)
        m = percent_of_core(ticks_used(before, after, monitors), window, hz)
        k = percent_of_core(ticks_used(before, after, {kubelet}), window, hz)
        results.add(f"runtime CPU, daemon + monitors, {label} (% of a core)", self.runtime, d + m)
        results.add(f"  daemon CPU, {label} (% of a core)", self.runtime, d)
        results.add(f"  monitors CPU (conmons | shims + pause), {label} (% of a core)", self.runtime, m)
        results.add(f"kubelet CPU, {label} (% of a core)", self.runtime, k)
        results.add(f"kubelet's CRI calls, {label} (per s)", self.runtime, sum(rates.values()))
        total = summarize([(s.t, s.total_kib / MIB) for s in self.memory])
        daemon_mem = summarize([(s.t, s.daemon_kib / MIB) for s in self.memory])
        minutes = f"{window / 60:.0f} min" if window >= 120 else f"{window:.0f} s"
        results.add(f"runtime PSS at start of the {minutes} window, {label} (MB)", self.runtime, total.start)
        results.add(f"runtime PSS at end, {label} (MB)", self.runtime, total.end)
        results.add(f"runtime PSS max, {label} (MB)", self.runtime, total.max)
        results.add(f"runtime PSS slope, {label} (MB/h)", self.runtime, total.slope_per_hour)
        results.add(f"runtime PSS slope over the window's second half, {label} (MB/h)", self.runtime,
                    total.late_slope_per_hour)
        results.add(f"  daemon PSS start -> end, {label} (MB growth)", self.runtime, daemon_mem.end - daemon_mem.start)
        results.add(f"  daemon PSS slope, {label} (MB/h)", self.runtime, daemon_mem.slope_per_hour)
        log.info("steady window", runtime=self.runtime, evented=self.evented, seconds=round(window),
                 daemon_cpu=round(d, 2), monitors_cpu=round(m, 2), kubelet_cpu=round(k, 2),
                 pss_start=round(total.start, 1), pss_end=round(total.end, 1), pss_max=round(total.max, 1),
                 slope_mb_h=round(total.slope_per_hour, 2), processes=self.memory[-1].processes)
        self.notes.append(f"{self.runtime} ({pleg_label(self.evented)}): {len(own_after)} runtime processes at "
                          f"{self.pods} pods; load average at the end of the window {os.getloadavg()[0]:.1f}; "
                          "kubelet's CRI calls a second: "
                          + ", ".join(f"{op} {rate:.2f}" for op, rate in rates.items()))

    def evented_notes(self, cluster: Cluster, results: Results) -> None:
        metrics = EventedMetrics.parse(cluster.kubelet_metrics())
        self.notes.append(f"{self.runtime} with EventedPLEG: kubelet's event streams opened {metrics.connections}, "
                          f"stream errors {metrics.errors}, container events received {metrics.events}")

    def wait_runtime_empty(self, daemon: Daemon, timeout: float) -> int:
        """kubelet removes a deleted pod's sandbox in its garbage collection (every minute):
        wait for it; then remove what is left over crictl. Returns how many were left."""
        deadline = time.monotonic() + timeout
        pods: list[str] = []
        while time.monotonic() < deadline:
            pods = daemon.crictl("pods", "-q", check=False).stdout.split()
            if not pods:
                return 0
            time.sleep(5)
        daemon.remove_pods()
        return len(pods)

    def teardown(self, daemon: Daemon, cluster: Cluster) -> list[str]:
        """The cluster down (kubelet's mounts undone), every pod gone, the daemon stopped, its
        and kubelet's cgroups and the bridge removed; returns what is still there."""
        try:
            cluster.down()
        except Exception as e:  # the rest must still run
            self.notes.append(f"local-cluster.sh down failed: {e}")
        try:
            daemon.remove_all()
        except Exception as e:
            self.notes.append(f"{self.runtime}: removing pods failed: {str(e)[:300]}")
        daemon.stop()
        daemon.remove_cgroups()
        daemon.remove_bridge()
        left = [f"{self.runtime}: {x}" for x in daemon.leftovers()]
        left += [f"kubelet mount {m}" for m in leftover_mounts(self.instance.cluster_dir)]
        if not left:
            for path in (daemon.root.parent, daemon.state):
                shutil.rmtree(path, ignore_errors=True)
            for path in (self.instance.root, self.instance.state):  # if nothing else is left in them
                try:
                    path.rmdir()
                except OSError:
                    pass
        return left


def leftover_mounts(under: Path) -> list[str]:
    return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if line.split()[4].startswith(str(under))]


# ------------------------------------------------------------------------------ EventedPLEG
def evented_demo(args: argparse.Namespace) -> int:
    """With the gate on: a pod that runs, a pod whose container exits every few seconds
    (kubelet restarts it), both deleted; then what shows that kubelet used the event stream."""
    instance = Instance(args.instance)
    daemon = make_daemon(args.runtime, instance, args.containerd_bin)
    cluster = Cluster(instance, daemon.endpoint, "EventedPLEG=true", ["--v", "4"])
    report: list[str] = []
    ok = True
    try:
        cluster.down()
        daemon.start()
        daemon.crictl("pull", IMAGE)
        if args.runtime == "containerd":
            daemon.crictl("pull", SANDBOX_IMAGE)
        cluster.start()
        pods = {"apiVersion": "v1", "kind": "List", "items": [
            pod_manifest("evented-sleeper"),
            pod_manifest("evented-crasher", command=["sh", "-c", "sleep 3; exit 1"]),
        ]}
        cluster.kubectl("create", "-f", "-", stdin=json.dumps(pods))
        t = time.monotonic()
        while True:
            sleeper = json.loads(cluster.kubectl("get", "pod", "evented-sleeper", "-o", "json").stdout)
            crasher = json.loads(cluster.kubectl("get", "pod", "evented-crasher", "-o", "json").stdout)
            if sleeper["status"].get("phase") == "Running" and restart_count(crasher) >= args.restarts:
                break
            if time.monotonic() - t > 600:
                raise RuntimeError(f"after 600 s: sleeper {sleeper['status'].get('phase')}, "
                                   f"crasher restarted {restart_count(crasher)} times")
            time.sleep(2)
        report.append(f"sleeper Running; crasher's container exited and was restarted by kubelet "
                      f"{restart_count(crasher)} times, in {time.monotonic() - t:.0f} s")
        metrics = EventedMetrics.parse(cluster.kubelet_metrics())
        t = time.monotonic()
        cluster.kubectl("delete", "pods", "-l", f"app={APP_LABEL}", "--wait=false")
        cluster.wait_pods({}, 300, "deleting the pods")
        report.append(f"both pods deleted and gone from the API in {time.monotonic() - t:.0f} s")
        after = EventedMetrics.parse(cluster.kubelet_metrics())
        report.append(f"kubelet metrics before deletion: event streams opened {metrics.connections}, stream errors "
                      f"{metrics.errors}, events received {metrics.events}; after deletion: events received "
                      f"{after.events}")
        text = cluster.kubelet_log().read_text(errors="replace")
        relists = [line for line in text.splitlines() if "Evented PLEG: requested pod relist" in line]
        disabled = [line for line in text.splitlines() if "Evented PLEG: disabling" in line]
        retries = [line for line in text.splitlines() if "Evented PLEG: failed to get container events" in line]
        gate_lines = [line for line in text.splitlines() if "EventedPLEG" in line][:3]
        report.append(f"kubelet log: {len(relists)} 'Evented PLEG: requested pod relist after container "
                      f"termination', {len(retries)} stream retries, {len(disabled)} 'disabling' lines")
        if relists:
            report.append(f"  e.g. {relists[-1][:400]}")
        report.extend(f"  gate: {g[:300]}" for g in gate_lines)
        runtime_log = daemon.log_file.read_text(errors="replace")
        joined = sum(1 for line in runtime_log.splitlines() if "container events subscriber joined" in line)
        if args.runtime == "pycri":
            report.append(f"pycri log: {joined} 'container events subscriber joined'")
        ok = bool(after.connections) and not after.errors and bool(after.events) and bool(relists) and not disabled
    except Exception as e:
        report.append(f"FAILED: {e}")
        ok = False
    finally:
        phase = Phase(args.runtime, True, instance, args.containerd_bin, 0, 0, 0)
        left = phase.teardown(daemon, cluster)
    report.extend(f"LEFT BEHIND: {x}" for x in left)
    if not left:
        report.append("cleanup checked: no pods, processes, mounts, cgroups or IP leases left")
    print(f"\nkubelet EventedPLEG gate against {args.runtime}: {'works' if ok and not left else 'FAILED'}")
    for line in report:
        print(f"  {line}")
    return 0 if ok and not left else 1


# ------------------------------------------------------------------------------ the command
def plan(runtimes: list[str], evented: list[bool], rounds: int) -> list[tuple[str, bool]]:
    """The phases in order: per round, per PLEG setting, each runtime (the first alternating
    by round)."""
    out = []
    for r in range(rounds):
        order = runtimes if r % 2 == 0 else runtimes[::-1]
        for ev in evented:
            out.extend((rt, ev) for rt in order)
    return out


def header_notes(args: argparse.Namespace) -> list[str]:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=REPO).stdout.strip()
    kubelet = subprocess.run(["kubelet", "--version"], capture_output=True, text=True).stdout.strip()
    version = subprocess.run([str(args.containerd_bin / "containerd"), "--version"], capture_output=True,
                             text=True).stdout.strip()
    window = f"{args.seconds / 60:.0f} min" if args.seconds >= 120 else f"{args.seconds:.0f} s"
    return [
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
        f"{os.cpu_count()} CPUs, load average at start {os.getloadavg()[0]:.1f}",
        f"pycri at {head or '?'}; {version}; {kubelet} (cgroupfs, kubelet flags: "
        f"{' '.join(args.kubelet_arg) or 'none'}); local cluster instance {args.instance}",
        f"{args.pods} busybox sleep pods (the cluster runs no other pod), steady window {window} after all are "
        f"Running, PSS every {args.sample_every:.0f} s; {args.rounds} round(s)",
        "CPU: utime+stime+cutime+cstime from /proc over the window, % of one core; runtime = daemon + monitors "
        "(pycri: conmons; containerd: shims and pause processes), the workloads (sleep) excluded",
        "figures are medians over the rounds; ratio = pycri / containerd",
    ]


def run(args: argparse.Namespace) -> int:
    runtimes = ["pycri", "containerd"] if args.runtime == "both" else [args.runtime]
    evented = {"off": [False], "on": [True], "both": [False, True]}[args.evented]
    results = Results()
    results.notes.extend(header_notes(args))
    failed: list[str] = []
    leftovers: list[str] = []
    memory: dict[str, list[dict[str, Any]]] = {}

    def on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    out_dir = args.out.parent
    try:
        for n, (runtime, ev) in enumerate(plan(runtimes, evented, args.rounds)):
            log.info("phase", n=n + 1, runtime=runtime, evented=ev)
            phase = Phase(runtime, ev, Instance(args.instance), args.containerd_bin, args.pods, args.seconds,
                          args.sample_every, list(args.kubelet_arg))
            try:
                phase.run(results)
            except Exception as e:
                log.error("phase failed", runtime=runtime, evented=ev, error=str(e)[:2000])
                failed.append(f"{runtime} ({pleg_label(ev)}): {str(e).splitlines()[0][:300] if str(e) else e!r}")
            leftovers += phase.left
            results.notes.extend(phase.notes)
            memory[f"{n}-{runtime}-{pleg_label(ev)}"] = [s.__dict__ for s in phase.memory]
            results.save(out_dir / "results.json")
            (out_dir / "memory.json").write_text(json.dumps(memory))
    except KeyboardInterrupt as e:
        failed.append(f"interrupted ({e})")
    results.notes.extend(f"FAILED: {f}" for f in failed)
    results.notes.extend(f"LEFT BEHIND: {x}" for x in leftovers)
    if not leftovers and not failed:
        results.notes.append("cleanup checked after each phase: no pods, sandboxes, processes, mounts, cgroups, "
                             "network namespaces or IP leases left")
    results.save(out_dir / "results.json")
    args.out.write_text(format_markdown(results.rows(), results.notes))
    print()
    print(format_text(results.rows()))
    for note in results.notes:
        print(f"  {note}")
    print(f"\ntable: {args.out}; samples: {out_dir / 'results.json'}; PSS samples: {out_dir / 'memory.json'}")
    return 1 if failed or leftovers else 0


def cleanup(instance: Instance) -> int:
    """Take down what an interrupted run of this instance left: cluster, daemons, mounts, cgroups."""
    left = []
    for runtime in ("pycri", "containerd"):
        daemon = make_daemon(runtime, instance, Path("/nonexistent"))
        Cluster(instance, daemon.endpoint).down()
        for entry in daemon.leftover_processes():
            try:
                os.kill(int(entry.split()[0]), signal.SIGKILL)
            except ProcessLookupError:
                pass
        if runtime == "containerd":
            daemon.after_stop()
        for mount in sorted(daemon.leftover_mounts(), key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], check=False, capture_output=True)
        daemon.remove_cgroups()
        daemon.remove_bridge()
        left += [f"{runtime}: {x}" for x in daemon.leftovers()]
    left += [f"kubelet mount {m}" for m in leftover_mounts(instance.cluster_dir)]
    print("\n".join(left) if left else f"nothing left of instance {instance.number}")
    return 1 if left else 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hack/bench-kubelet.sh", description=__doc__.split("\n\n")[1])
    sub = p.add_subparsers(dest="command")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--containerd-bin", type=Path, default=Path("/var/cache/pycri/bench/bin"),
                        help="containerd, containerd-shim-runc-v2 and runc (default %(default)s)")
    common.add_argument("--instance", type=int, default=0,
                        help="which paths, ports (+1000 (N+1)), cgroup root and subnets to use (default 0); "
                             "two runs side by side need two")
    r = sub.add_parser("run", parents=[common], help="measure (the default)")
    r.add_argument("--runtime", choices=("both", "pycri", "containerd"), default="both")
    r.add_argument("--rounds", type=int, default=1, help="rounds, alternating which runtime goes first (default 1)")
    r.add_argument("--pods", type=int, default=110, help="busybox pods (default 110, kubelet's max-pods)")
    r.add_argument("--seconds", type=float, default=120, help="the steady window (default 120)")
    r.add_argument("--minutes", type=float, help="the steady window in minutes (instead of --seconds)")
    r.add_argument("--sample-every", type=float, default=10, help="PSS sampling period in seconds (default 10)")
    r.add_argument("--evented", choices=("off", "on", "both"), default="off",
                   help="kubelet's EventedPLEG feature gate: off, on, or each in turn (default off)")
    r.add_argument("--kubelet-arg", action="append", default=[],
                   help="an extra kubelet flag, e.g. --kubelet-arg=--sync-frequency=1m (repeatable)")
    r.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help="the table as markdown (default %(default)s); results.json and memory.json beside it")
    e = sub.add_parser("evented", parents=[common], help="show kubelet's EventedPLEG gate at work")
    e.add_argument("--runtime", choices=("pycri", "containerd"), default="pycri")
    e.add_argument("--restarts", type=int, default=2, help="restarts of the exiting container to wait for")
    t = sub.add_parser("table", help="print an earlier run's table")
    t.add_argument("results", type=Path)
    sub.add_parser("cleanup", parents=[common], help="take down what an interrupted run left")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("run", "evented", "table", "cleanup", "-h", "--help"):
        argv.insert(0, "run")
    args = parser().parse_args(argv)
    if args.command == "table":
        results = Results.from_json(args.results.read_text())
        print(format_text(results.rows()))
        for note in results.notes:
            print(f"  {note}")
        return 0
    if os.geteuid() != 0:
        sys.exit("must run as root")
    kube_bin = os.environ.get("PYCRI_KUBE_BIN", "/usr/local/lib/pycri/kube/bin")
    os.environ["PATH"] = f"{kube_bin}:/usr/local/bin:{os.environ['PATH']}"
    if args.command == "cleanup":
        return cleanup(Instance(args.instance))
    for binary in ("containerd", "containerd-shim-runc-v2", "runc"):
        if not os.access(args.containerd_bin / binary, os.X_OK):
            sys.exit(f"{args.containerd_bin / binary} missing: run hack/bench/build-containerd.sh")
    if args.command == "evented":
        return evented_demo(args)
    if args.minutes is not None:
        args.seconds = args.minutes * 60
    args.out.parent.mkdir(parents=True, exist_ok=True)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
