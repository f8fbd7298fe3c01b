"""hack/bench/kubelet.py (hack/bench-kubelet.sh): /proc parsing, CPU and memory arithmetic, the
pods it creates and how it reads their phases, kubelet's metrics, the phases' order, the
paths and ports an instance uses, and hack/local-cluster.sh's knobs. No cluster runs here."""
from __future__ import annotations

import json
import subprocess
import tomllib
from collections import Counter
from pathlib import Path

import pytest

from hack.bench import kubelet as kb
from hack.bench.runtimes import BENCH_ROOT, BENCH_STATE, WORKLOAD

REPO = Path(__file__).resolve().parents[2]

# /proc/PID/stat of a process whose name holds a space and a parenthesis
STAT = ("4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 "
        "70 30 5 7 20 0 1 0 12345 1000000 200 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0")


def test_parse_stat_counts_fields_after_the_last_parenthesis() -> None:
    ticks = kb.parse_stat(STAT)
    assert ticks == kb.CpuTicks(own=100, children=12)
    assert ticks.total == 112


def test_ticks_used_counts_new_processes_from_zero_and_skips_ended_ones() -> None:
    before = {1: kb.CpuTicks(100, 0), 2: kb.CpuTicks(50, 10), 3: kb.CpuTicks(7, 0)}
    after = {1: kb.CpuTicks(130, 0), 2: kb.CpuTicks(50, 25), 4: kb.CpuTicks(3, 1)}
    assert kb.ticks_used(before, after, {1}) == 30
    assert kb.ticks_used(before, after, {2}) == 15  # what it reaped counts
    assert kb.ticks_used(before, after, {3}) == 0  # ended in between
    assert kb.ticks_used(before, after, {1, 2, 3, 4}) == 30 + 15 + 4


def test_percent_of_core() -> None:
    assert kb.percent_of_core(100, 10.0, 100) == pytest.approx(10.0)
    assert kb.percent_of_core(100, 0.0, 100) == 0.0


def test_slope_per_hour_is_least_squares() -> None:
    assert kb.slope_per_hour([(0, 10.0), (1800, 11.0), (3600, 12.0)]) == pytest.approx(2.0)
    assert kb.slope_per_hour([(0, 10.0), (60, 12.0), (120, 10.0)]) == pytest.approx(0.0)
    assert kb.slope_per_hour([(0, 10.0)]) == 0.0
    assert kb.slope_per_hour([(5, 1.0), (5, 2.0)]) == 0.0


def test_summarize_memory() -> None:
    s = kb.summarize([(0, 40.0), (30, 42.5), (60, 41.0)])
    assert (s.start, s.end, s.max) == (40.0, 41.0, 42.5)
    assert s.slope_per_hour == pytest.approx(1.0 / 60 * 3600)
    assert s.late_slope_per_hour == pytest.approx(-1.5 / 30 * 3600)  # (30, 42.5) and (60, 41.0)
    assert kb.summarize([]) == kb.MemorySummary(0.0, 0.0, 0.0, 0.0, 0.0)


def test_memory_sample_total() -> None:
    assert kb.MemorySample(0.0, 30000, 1000, 12).total_kib == 31000


def test_pods_are_busybox_sleeps_the_runtimes_tell_from_their_own_processes() -> None:
    pods = kb.pod_list(110)
    assert pods["kind"] == "List" and len(pods["items"]) == 110
    names = [p["metadata"]["name"] for p in pods["items"]]
    assert len(set(names)) == 110 and names[0] == "bench-000"
    spec = pods["items"][0]["spec"]
    # the workload's command line is what runtimes.workloads() excludes from the runtime's own
    assert spec["containers"][0]["command"] == WORKLOAD
    assert spec["containers"][0]["image"] == kb.IMAGE
    assert pods["items"][0]["metadata"]["labels"] == {"app": kb.APP_LABEL}
    crasher = kb.pod_manifest("c", command=["sh", "-c", "exit 1"])
    assert crasher["spec"]["containers"][0]["command"] == ["sh", "-c", "exit 1"]
    json.dumps(pods)  # what kubectl create -f - reads


def pod(phase: str, ready: bool = True, deleting: bool = False, restarts: int = 0) -> dict:
    meta = {"name": "p"}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-06T15:00:00Z"
    return {"metadata": meta, "status": {"phase": phase,
                                         "containerStatuses": [{"ready": ready, "restartCount": restarts}]}}


def test_pod_phases() -> None:
    items = [pod("Running"), pod("Running"), pod("Running", ready=False), pod("Pending"),
             pod("Running", deleting=True)]
    assert kb.pod_phases({"items": items}) == Counter({"Running": 2, "Starting": 1, "Pending": 1, "Terminating": 1})
    assert kb.pod_phases({"items": []}) == Counter()
    assert dict(kb.pod_phases({"items": [{"metadata": {}, "status": {"phase": "Pending"}}]})) == {"Pending": 1}


def test_restart_count() -> None:
    assert kb.restart_count(pod("Running", restarts=3)) == 3
    assert kb.restart_count({"status": {}}) == 0


METRICS = """# HELP kubelet_evented_pleg_connection_success_count [ALPHA] The number of times ...
# TYPE kubelet_evented_pleg_connection_success_count counter
kubelet_evented_pleg_connection_success_count 1
kubelet_evented_pleg_connection_latency_seconds_bucket{le="0.005"} 40
kubelet_evented_pleg_connection_latency_seconds_sum 0.12
kubelet_evented_pleg_connection_latency_seconds_count 42
kubelet_runtime_operations_total{operation_type="list_containers"} 100
kubelet_runtime_operations_total{operation_type="list_podsandbox"} 50
"""


def test_metric_value_sums_label_sets_and_tells_absent_from_zero() -> None:
    assert kb.metric_value(METRICS, "kubelet_runtime_operations_total") == 150
    assert kb.metric_value(METRICS, "kubelet_evented_pleg_connection_success_count") == 1
    assert kb.metric_value(METRICS, "kubelet_evented_pleg_connection_error_count") is None
    # a name that is a prefix of another is not summed with it
    assert kb.metric_value(METRICS, "kubelet_evented_pleg_connection_latency_seconds") is None


def test_evented_metrics() -> None:
    m = kb.EventedMetrics.parse(METRICS)
    assert (m.connections, m.errors, m.events) == (1, None, 42)


def test_parse_gates() -> None:
    assert kb.parse_gates("EventedPLEG=true, Foo=False,") == {"EventedPLEG": True, "Foo": False}
    assert kb.parse_gates("") == {}
    with pytest.raises(ValueError):
        kb.parse_gates("EventedPLEG")


def test_plan_alternates_the_first_runtime_by_round_for_each_pleg_setting() -> None:
    assert kb.plan(["pycri", "containerd"], [False, True], 2) == [
        ("pycri", False), ("containerd", False), ("pycri", True), ("containerd", True),
        ("containerd", False), ("pycri", False), ("containerd", True), ("pycri", True)]
    assert kb.plan(["pycri"], [False], 1) == [("pycri", False)]


def test_instances_keep_apart_from_each_other_and_from_the_defaults() -> None:
    a, b = kb.Instance(0), kb.Instance(1)
    assert a.port_offset == 1000 and b.port_offset == 2000  # the default local cluster has 0
    assert a.cluster_dir != b.cluster_dir and a.cluster_dir != Path("/var/lib/pycri-cluster")
    assert a.cgroup_root != b.cgroup_root
    assert len({a.subnet("pycri"), a.subnet("containerd"), b.subnet("pycri"), b.subnet("containerd")}) == 4
    assert len({a.bridge("pycri"), a.bridge("containerd"), b.bridge("pycri"), b.bridge("containerd")}) == 4
    assert all(len(x.bridge(r)) <= 15 for x in (a, b) for r in ("pycri", "containerd"))  # IFNAMSIZ


@pytest.mark.parametrize("runtime", ["pycri", "containerd"])
def test_daemons_live_on_the_instance_not_on_the_side_by_side_bench(runtime: str) -> None:
    inst = kb.Instance(3)
    d = kb.make_daemon(runtime, inst, Path("/cache/bin"))
    assert d.name == runtime  # the table's column
    for path in (d.root, d.work, d.cni_conf_dir, d.log_file, d.crictl_config, d.config):
        assert str(path).startswith(str(inst.root)) and not str(path).startswith(str(BENCH_ROOT) + "/")
    assert str(d.socket).startswith(str(inst.state)) and not str(d.socket).startswith(str(BENCH_STATE) + "/")
    assert d.state == inst.state / runtime
    assert (d.subnet, d.bridge) == (inst.subnet(runtime), inst.bridge(runtime))
    assert d.cgroup_parent == inst.cgroup_root and d.default_cgroup_parent == ""


def test_pycri_config_listens_on_the_instance_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kb, "BASE_ROOT", tmp_path / "root")
    monkeypatch.setattr(kb, "BASE_STATE", tmp_path / "state")
    d = kb.make_daemon("pycri", kb.Instance(0), Path("/cache/bin"))
    d.config.parent.mkdir(parents=True)
    d.write_config()
    config = tomllib.loads(d.config.read_text())
    assert config["listen"] == d.endpoint and config["root"] == str(d.root) and config["state"] == str(d.state)
    assert config["network"]["cni_conf_dir"] == str(d.cni_conf_dir)
    assert config["runtime"]["handlers"]["runc"]["path"] == "/cache/bin/runc"


def test_containerd_config_and_mirrors_stay_on_the_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kb, "BASE_ROOT", tmp_path / "root")
    d = kb.make_daemon("containerd", kb.Instance(0), Path("/cache/bin"))
    d.config.parent.mkdir(parents=True)
    d.write_config()
    config = tomllib.loads(d.config.read_text())
    assert config["grpc"]["address"] == str(d.socket)
    assert config["plugins"]["io.containerd.cri.v1.images"]["registry"]["config_path"] == str(d.hosts_dir)
    assert str(d.hosts_dir).startswith(str(tmp_path))
    assert (d.hosts_dir / "docker.io" / "hosts.toml").exists()


def test_cluster_env_passes_the_instance_to_local_cluster() -> None:
    c = kb.Cluster(kb.Instance(1), "unix:///run/x.sock", "EventedPLEG=true", ["--v", "4"])
    env = c.env()
    assert env["CLUSTER_DIR"] == str(kb.Instance(1).cluster_dir)
    assert env["PYCRI_ENDPOINT"] == "unix:///run/x.sock"
    assert env["PORT_OFFSET"] == "2000" and env["CGROUP_ROOT"] == "/pycri-bench-kubelet-1"
    assert env["FEATURE_GATES"] == "EventedPLEG=true" and env["KUBELET_EXTRA_ARGS"] == "--v 4"
    assert c.kubeconfig == kb.Instance(1).cluster_dir / "admin.kubeconfig"


def test_pleg_label() -> None:
    assert kb.pleg_label(True) == "EventedPLEG on" and kb.pleg_label(False) == "generic PLEG"


def shell_function(name: str, env: dict[str, str]) -> str:
    """Run one function of hack/local-cluster.sh (extracted, not the script) and return stdout."""
    text = (REPO / "hack" / "local-cluster.sh").read_text()
    start = text.index(f"{name}() {{")
    body = text[start:text.index("\n}\n", start) + 3]
    return subprocess.run(["bash", "-euc", f"{body}\n{name}"], env={"PATH": "/usr/bin:/bin", **env},
                          capture_output=True, text=True, check=True).stdout


def test_local_cluster_feature_gates_become_a_kubelet_config_map() -> None:
    assert shell_function("feature_gates", {"FEATURE_GATES": "EventedPLEG=true,Foo=false"}) == (
        "featureGates:\n  EventedPLEG: true\n  Foo: false\n")
    assert shell_function("feature_gates", {"FEATURE_GATES": ""}) == ""


def test_local_cluster_ports_move_with_the_offset() -> None:
    text = (REPO / "hack" / "local-cluster.sh").read_text()
    # every port the script listens on goes through a variable that adds OFFSET
    for port in ("2379", "2380", "2381", "6443", "10250", "10255", "10248", "10257", "10259"):
        assert f"$(({port} + OFFSET))" in text, port
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    for literal in ("127.0.0.1:2379", "127.0.0.1:6443", "port: 10250", "--secure-port 6443"):
        assert literal not in code


def test_runtime_operations_and_their_rates() -> None:
    before = kb.runtime_operations(METRICS)
    assert before == {"list_containers": 100, "list_podsandbox": 50}
    after = {"list_containers": 160.0, "list_podsandbox": 110.0, "container_status": 6.0}
    assert kb.calls_per_second(before, after, 60) == {"container_status": 0.1, "list_containers": 1.0,
                                                     "list_podsandbox": 1.0}
    assert kb.calls_per_second(before, before, 60) == {}
    assert kb.calls_per_second(before, after, 0) == {}
