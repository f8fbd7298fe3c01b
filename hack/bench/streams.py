"""Issue 15 at N containers: every KEP-5825 Stream* list call beside its unary List call, as
kubelet's CRI client would make them, on pods and containers made as kubelet makes them.

- `run_kubelet_pod`: a pod with the labels and annotations kubelet gives a Deployment's pod
  (its own labels plus io.kubernetes.pod.{name,namespace,uid}; kubernetes.io/config.* and
  the usual chart annotations) and containers with kubelet's container labels
  (io.kubernetes.{pod.name,pod.namespace,pod.uid,container.name}) and annotations (hash,
  restartCount, termination message path and policy, grace period, ports, preStop), so that
  the replies have the size they have under kubelet.
- `measure_lists`: each Stream* call and its List counterpart on a channel with kubelet's
  limit (k8s.io/cri-client v0.37.2 pkg/utils.go: `maxMsgSize = 1024 * 1024 * 16`, set as
  `grpc.MaxCallRecvMsgSize` on both its runtime and image clients): items, bytes, the largest
  message, the time to EOF, and whether the List reply was refused (RESOURCE_EXHAUSTED).
- `churn_check`: the Stream* calls while another thread creates and removes pods: every
  call ends with OK, no item twice, and every item that lived through the whole run is in.
"""
from __future__ import annotations

import json
import statistics
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from pycri.api.cri import api_pb2 as cri
from pycri.api.cri import api_pb2_grpc as cri_grpc

from .measure import IMAGE, ms_since
from .runtimes import WORKLOAD, Daemon

# k8s.io/cri-client@v0.37.2 pkg/utils.go: const maxMsgSize = 1024 * 1024 * 16
KUBELET_MAX_MSG = 16 * 1024 * 1024
NAMESPACE = "team-payments"


def _uid(i: int) -> str:
    return f"6f1c2a4e-{i // 65536:04x}-4b7d-9c3e-{i:012x}"


def pod_labels(name: str, uid: str, app: str) -> dict[str, str]:
    """A Helm-made Deployment's pod labels, and the three kubelet adds (kuberuntime/labels.go newPodLabels)."""
    return {
        "app.kubernetes.io/name": app, "app.kubernetes.io/instance": f"{app}-prod",
        "app.kubernetes.io/component": "backend", "app.kubernetes.io/part-of": "payments-platform",
        "app.kubernetes.io/managed-by": "Helm", "app.kubernetes.io/version": "4.18.2",
        "helm.sh/chart": f"{app}-4.18.2", "pod-template-hash": "7d9f8b6c5",
        "io.kubernetes.pod.name": name, "io.kubernetes.pod.namespace": NAMESPACE, "io.kubernetes.pod.uid": uid,
    }


def pod_annotations(i: int) -> dict[str, str]:
    """The pod's annotations (kubelet passes them as they are, plus its kubernetes.io/config.*)."""
    return {
        "kubernetes.io/config.seen": "2026-12-06T14:58:03.512345678Z", "kubernetes.io/config.source": "api",
        "checksum/config": f"{i:064x}", "checksum/secret": f"{i * 7:064x}",
        "prometheus.io/scrape": "true", "prometheus.io/port": "9102", "prometheus.io/path": "/metrics",
        "kubectl.kubernetes.io/restartedAt": "2026-12-01T09:12:44Z",
        "cluster-autoscaler.kubernetes.io/safe-to-evict": "true",
        "kubectl.kubernetes.io/default-container": "c0",
    }


def container_labels(pod_name: str, uid: str, name: str) -> dict[str, str]:
    """kuberuntime/labels.go newContainerLabels: exactly these four."""
    return {"io.kubernetes.pod.name": pod_name, "io.kubernetes.pod.namespace": NAMESPACE,
            "io.kubernetes.pod.uid": uid, "io.kubernetes.container.name": name}


def container_annotations(j: int) -> dict[str, str]:
    """kuberuntime/labels.go newContainerAnnotations for a container with ports and a preStop hook."""
    ports = [{"name": "http", "containerPort": 8080 + j, "protocol": "TCP"},
             {"name": "metrics", "containerPort": 9102, "protocol": "TCP"}]
    return {
        "io.kubernetes.container.hash": f"{0x5c3a9f21 + j:x}", "io.kubernetes.container.restartCount": "0",
        "io.kubernetes.container.terminationMessagePath": "/dev/termination-log",
        "io.kubernetes.container.terminationMessagePolicy": "File",
        "io.kubernetes.pod.terminationGracePeriod": "30",
        "io.kubernetes.container.ports": json.dumps(ports, separators=(",", ":")),
        "io.kubernetes.container.preStopHandler": json.dumps(
            {"exec": {"command": ["/bin/sh", "-c", "sleep 5"]}}, separators=(",", ":")),
    }


def pod_config(daemon: Daemon, i: int) -> cri.PodSandboxConfig:
    app = f"ledger-api-{i % 50}"
    name, uid = f"{app}-7d9f8b6c5-{i:05d}", _uid(i)
    return cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(name=name, namespace=NAMESPACE, uid=uid, attempt=0),
        hostname=name[:63], log_directory=str(daemon.work / "logs" / f"{NAMESPACE}_{name}_{uid}"),
        labels=pod_labels(name, uid, app), annotations=pod_annotations(i),
        # a cgroup of its own, as kubelet's /kubepods/besteffort/pod<uid> (the pod's stats and
        # metrics read it: one parent shared by every pod would make each read all pods' processes)
        linux=cri.LinuxPodSandboxConfig(cgroup_parent=f"{daemon.cgroup_parent}/besteffort/pod{uid}", security_context=cri.LinuxSandboxSecurityContext(
            namespace_options=cri.NamespaceOption(pid=cri.CONTAINER))))


def container_config(pod: cri.PodSandboxConfig, j: int) -> cri.ContainerConfig:
    name = f"c{j}"
    return cri.ContainerConfig(
        metadata=cri.ContainerMetadata(name=name, attempt=0), image=cri.ImageSpec(image=IMAGE),
        command=WORKLOAD, log_path=f"{name}/0.log",
        labels=container_labels(pod.metadata.name, pod.metadata.uid, name), annotations=container_annotations(j),
        envs=[cri.KeyValue(key="KUBERNETES_SERVICE_HOST", value=b"10.96.0.1"),
              cri.KeyValue(key="KUBERNETES_SERVICE_PORT", value=b"443")],
        linux=cri.LinuxContainerConfig(security_context=cri.LinuxContainerSecurityContext(
            namespace_options=cri.NamespaceOption(pid=cri.CONTAINER))))


def run_kubelet_pod(stub: Any, daemon: Daemon, i: int, containers: int) -> list[str]:
    """RunPodSandbox, then CreateContainer + StartContainer `containers` times; the ids, pod first."""
    pod = pod_config(daemon, i)
    Path(pod.log_directory).mkdir(parents=True, exist_ok=True)
    pod_id = stub.RunPodSandbox(cri.RunPodSandboxRequest(config=pod), timeout=300).pod_sandbox_id
    ids = [pod_id]
    for j in range(containers):
        cid = stub.CreateContainer(cri.CreateContainerRequest(
            pod_sandbox_id=pod_id, config=container_config(pod, j), sandbox_config=pod), timeout=300).container_id
        stub.StartContainer(cri.StartContainerRequest(container_id=cid), timeout=300)
        ids.append(cid)
    return ids


def remove_pod(stub: Any, pod_id: str) -> None:
    stub.StopPodSandbox(cri.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=300)
    stub.RemovePodSandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=300)


# ------------------------------------------------------------------------------ the calls
@dataclass(frozen=True)
class ListCall:
    """A Stream* call, its List counterpart, and where each keeps its items."""

    stream: str
    unary: str
    service: str  # "runtime" or "image"
    stream_request: Any
    unary_request: Any
    stream_field: str
    unary_field: str
    key: Callable[[Any], str]  # an item's identity (for "each item exactly once")


def _stats_id(s: Any) -> str:
    return str(s.attributes.id)


CALLS = (
    ListCall("StreamContainers", "ListContainers", "runtime", cri.StreamContainersRequest(),
             cri.ListContainersRequest(), "containers", "containers", lambda c: c.id),
    ListCall("StreamPodSandboxes", "ListPodSandbox", "runtime", cri.StreamPodSandboxesRequest(),
             cri.ListPodSandboxRequest(), "pod_sandboxes", "items", lambda p: p.id),
    ListCall("StreamContainerStats", "ListContainerStats", "runtime", cri.StreamContainerStatsRequest(),
             cri.ListContainerStatsRequest(), "container_stats", "stats", _stats_id),
    ListCall("StreamPodSandboxStats", "ListPodSandboxStats", "runtime", cri.StreamPodSandboxStatsRequest(),
             cri.ListPodSandboxStatsRequest(), "pod_sandbox_stats", "stats", _stats_id),
    ListCall("StreamPodSandboxMetrics", "ListPodSandboxMetrics", "runtime", cri.StreamPodSandboxMetricsRequest(),
             cri.ListPodSandboxMetricsRequest(), "pod_sandbox_metrics", "pod_metrics", lambda m: m.pod_sandbox_id),
    ListCall("StreamImages", "ListImages", "image", cri.StreamImagesRequest(), cri.ListImagesRequest(),
             "images", "images", lambda i: i.id),
)


class KubeletClient:
    """Runtime and image stubs on one channel with kubelet's receive limit (16 MiB a message)."""

    def __init__(self, daemon: Daemon, max_receive: int = KUBELET_MAX_MSG) -> None:
        self.channel = grpc.insecure_channel(daemon.endpoint, options=[("grpc.max_receive_message_length", max_receive)])
        self.runtime = cri_grpc.RuntimeServiceStub(self.channel)
        self.image = cri_grpc.ImageServiceStub(self.channel)

    def stub(self, service: str) -> Any:
        return self.runtime if service == "runtime" else self.image

    def close(self) -> None:
        self.channel.close()


@dataclass
class Outcome:
    """One call's result: its messages' item counts and sizes, its time, its status."""

    items: int = 0
    messages: int = 0
    bytes: int = 0
    largest: int = 0
    ms: float = 0.0
    code: str = "OK"
    details: str = ""
    keys: list[str] = field(default_factory=list)


def call_stream(client: KubeletClient, call: ListCall, timeout: float = 120) -> Outcome:
    """The whole stream, as kubelet's client collects it (Recv until EOF)."""
    out = Outcome()
    t = time.monotonic()
    try:
        for reply in getattr(client.stub(call.service), call.stream)(call.stream_request, timeout=timeout):
            size = reply.ByteSize()
            items = getattr(reply, call.stream_field)
            out.messages += 1
            out.items += len(items)
            out.bytes += size
            out.largest = max(out.largest, size)
            out.keys.extend(call.key(i) for i in items)
    except grpc.RpcError as e:
        out.code, out.details = e.code().name, (e.details() or "")[:200]
    out.ms = ms_since(t)
    return out


def call_unary(client: KubeletClient, call: ListCall, timeout: float = 120) -> Outcome:
    out = Outcome()
    t = time.monotonic()
    try:
        reply = getattr(client.stub(call.service), call.unary)(call.unary_request, timeout=timeout)
        items = getattr(reply, call.unary_field)
        out.messages, out.items, out.bytes = 1, len(items), reply.ByteSize()
        out.largest = out.bytes
        out.keys = [call.key(i) for i in items]
    except grpc.RpcError as e:
        out.code, out.details = e.code().name, (e.details() or "")[:200]
    out.ms = ms_since(t)
    return out


@dataclass
class Row:
    call: ListCall
    stream: list[Outcome]
    unary: list[Outcome]

    @staticmethod
    def median_ms(outcomes: list[Outcome]) -> float:
        return statistics.median(o.ms for o in outcomes)


def measure_lists(client: KubeletClient, repeats: int = 3) -> list[Row]:
    """Each Stream* call and its List call, alternating, `repeats` times each (after one
    untimed pair, which warms the channel and the daemon's caches)."""
    rows = []
    for call in CALLS:
        call_stream(client, call), call_unary(client, call)
        streams, unaries = [], []
        for _ in range(repeats):
            streams.append(call_stream(client, call))
            unaries.append(call_unary(client, call))
        rows.append(Row(call, streams, unaries))
    return rows


def check_row(row: Row) -> list[str]:
    """What is wrong with a row: a failed stream, a message above kubelet's limit, an item twice,
    a stream that does not carry the List call's items (when that fits)."""
    problems = []
    for s in row.stream:
        if s.code != "OK":
            problems.append(f"{row.call.stream}: {s.code} {s.details}")
        if s.largest > KUBELET_MAX_MSG:
            problems.append(f"{row.call.stream}: a message of {s.largest} bytes, above kubelet's {KUBELET_MAX_MSG}")
        if len(set(s.keys)) != len(s.keys):
            problems.append(f"{row.call.stream}: {len(s.keys) - len(set(s.keys))} items twice")
    for s, u in zip(row.stream, row.unary):
        if u.code == "OK" and s.code == "OK" and sorted(s.keys) != sorted(u.keys):
            problems.append(f"{row.call.stream}: items differ from {row.call.unary}'s "
                            f"({len(set(s.keys) ^ set(u.keys))} not in both)")
    return problems


def _mib(n: float) -> str:
    return f"{n / (1 << 20):.2f}"


def _codes(outcomes: list[Outcome]) -> str:
    codes = [o.code for o in outcomes]
    return codes[0] if len(set(codes)) == 1 else ", ".join(codes)


def table(rows: list[Row], containers: int, load: str) -> str:
    """Markdown: per call, items, bytes, largest message (of the last call that ended OK),
    median time, and each call's status; for a List call, whether its reply fits."""
    lines = [f"At {containers} running containers (kubelet-like labels and annotations); "
             f"kubelet's receive limit {_mib(KUBELET_MAX_MSG)} MiB a message; load average {load}.", "",
             "| call | items | MiB in all | messages | largest message (MiB) | median ms | status of each call |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        ok = [o for o in row.stream if o.code == "OK"]
        s = ok[-1] if ok else row.stream[-1]
        lines.append(f"| {row.call.stream} | {s.items} | {_mib(s.bytes)} | {s.messages} | {_mib(s.largest)} | "
                     f"{Row.median_ms(row.stream):.1f} | {_codes(row.stream)} |")
        fitting = [o for o in row.unary if o.code == "OK"]
        u = fitting[-1] if fitting else row.unary[-1]
        if u.code == "OK":
            lines.append(f"| {row.call.unary} | {u.items} | {_mib(u.bytes)} | 1 | {_mib(u.bytes)} | "
                         f"{Row.median_ms(row.unary):.1f} | fits ({_codes(row.unary)}) |")
        else:
            lines.append(f"| {row.call.unary} | - | ~{_mib(s.bytes)} | 1 | ~{_mib(s.bytes)} | "
                         f"{Row.median_ms(row.unary):.1f} | **refused** ({_codes(row.unary)}: {u.details[:90]}) |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ churn
@dataclass
class ChurnReport:
    calls: int = 0
    pods_made: int = 0
    pods_removed: int = 0
    problems: list[str] = field(default_factory=list)


def churn_check(daemon: Daemon, client: KubeletClient, seconds: float, first_index: int,
                per_pod: int = 10) -> ChurnReport:
    """The Stream* calls (but images) over and over for `seconds` while another thread, on its
    own channel, runs pods of `per_pod` containers and removes them. Every stream must end
    OK, carry no item twice, and carry every item that was there before the churn began (the
    churn removes only its own pods)."""
    report = ChurnReport()
    stop = threading.Event()
    maker_channel = grpc.insecure_channel(daemon.endpoint)
    maker = cri_grpc.RuntimeServiceStub(maker_channel)

    def churn() -> None:
        i = first_index
        live: list[str] = []
        try:
            while not stop.is_set():
                live.append(run_kubelet_pod(maker, daemon, i, per_pod)[0])
                report.pods_made += 1
                i += 1
                if len(live) > 2:
                    remove_pod(maker, live.pop(0))
                    report.pods_removed += 1
        except grpc.RpcError as e:
            report.problems.append(f"churn: {e.code().name} {e.details()}")
        finally:
            for pod_id in live:
                try:
                    remove_pod(maker, pod_id)
                    report.pods_removed += 1
                except grpc.RpcError as e:
                    report.problems.append(f"churn cleanup: {e.code().name} {e.details()}")

    baseline = {call.stream: set(call_stream(client, call).keys) for call in CALLS[:-1]}  # before any churn
    thread = threading.Thread(target=churn, name="churn", daemon=True)
    thread.start()
    started = time.monotonic()
    try:
        while time.monotonic() - started < seconds and not report.problems:
            for call in CALLS[:-1]:
                out = call_stream(client, call)
                report.calls += 1
                if out.code != "OK":
                    report.problems.append(f"{call.stream}: {out.code} {out.details}")
                if len(set(out.keys)) != len(out.keys):
                    report.problems.append(f"{call.stream}: {len(out.keys) - len(set(out.keys))} items twice")
                missing = baseline[call.stream] - set(out.keys)
                if missing:
                    report.problems.append(f"{call.stream}: {len(missing)} of the items there before the churn missing")
    finally:
        stop.set()
        thread.join(timeout=600)
        maker_channel.close()
    return report


def summary(rows: Iterable[Row]) -> dict[str, Any]:
    """The rows as JSON-able data (for results files)."""
    return {r.call.stream: {"stream": [vars(o) | {"keys": len(o.keys)} for o in r.stream],
                            "unary": [vars(o) | {"keys": len(o.keys)} for o in r.unary]} for r in rows}


def table_from_file(path: Path) -> str:
    """The table of a run's figures file (BASE/streams-N.json), printed again."""
    data = json.loads(path.read_text())
    by_name = {c.stream: c for c in CALLS}

    def outcomes(raw: list[dict[str, Any]]) -> list[Outcome]:
        return [Outcome(**{k: v for k, v in o.items() if k != "keys"}) for o in raw]

    rows = [Row(by_name[name], outcomes(r["stream"]), outcomes(r["unary"])) for name, r in data["rows"].items()]
    return table(rows, data["containers"], data["load"])


if __name__ == "__main__":
    import sys

    print(table_from_file(Path(sys.argv[1])))
