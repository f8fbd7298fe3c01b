"""hack/bench (hack/bench-vs-containerd.sh): the table, critest's result files, the configs the
two daemons are started with. No daemon runs here."""
from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from hack.bench import measure, runtimes
from hack.bench.table import Results, Row, figure, format_markdown, format_text


def results() -> Results:
    r = Results()
    r.add("RunPodSandbox (critest, ms)", "pycri", [50.0, 52.0, 48.0])
    r.add("RunPodSandbox (critest, ms)", "containerd", [100.0, 110.0])
    r.add("memory per pod (MB PSS)", "pycri", 0.41)
    r.add("memory per pod (MB PSS)", "containerd", 5.5)
    r.add("only pycri (ms)", "pycri", [1.0])
    return r


def test_rows_are_medians_of_pooled_samples_in_first_added_order() -> None:
    rows = results().rows()
    assert [r.operation for r in rows] == ["RunPodSandbox (critest, ms)", "memory per pod (MB PSS)", "only pycri (ms)"]
    assert rows[0] == Row("RunPodSandbox (critest, ms)", 50.0, 105.0, (3, 2))
    assert rows[0].ratio == pytest.approx(50 / 105)
    assert rows[2].containerd is None and rows[2].ratio is None


def test_more_rounds_add_to_the_same_row() -> None:
    r = results()
    r.add("RunPodSandbox (critest, ms)", "pycri", [10.0, 11.0])
    assert r.rows()[0].pycri == 48.0
    assert r.rows()[0].samples == (5, 2)


def test_unknown_runtime_is_refused() -> None:
    with pytest.raises(ValueError):
        Results().add("x", "crio", 1.0)


def test_figures_keep_three_significant_digits() -> None:
    assert [figure(v) for v in (1234.4, 116.6, 50.55, 1.834, 0.41, None)] == ["1234", "117", "50.5", "1.83", "0.41", "-"]


def test_text_table_is_aligned() -> None:
    text = format_text(results().rows())
    lines = text.splitlines()
    assert lines[0].split() == ["operation", "pycri", "containerd", "ratio"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert lines[2].split()[-3:] == ["50.0", "105", "0.48"]
    assert lines[4].split()[-3:] == ["1.00", "-", "-"]
    # the figure columns end at the same place on every line
    assert len({len(line) for line in lines[:4]}) == 1


def test_markdown_table_and_notes() -> None:
    r = results()
    md = format_markdown(r.rows(), ["smoke run", "busy machine"])
    lines = md.splitlines()
    assert lines[0] == "| operation | pycri | containerd | ratio |"
    assert lines[1] == "|---|---:|---:|---:|"
    assert lines[2] == "| RunPodSandbox (critest, ms) | 50.0 | 105 | 0.48 |"
    assert lines[3] == "| memory per pod (MB PSS) | 0.41 | 5.50 | 0.07 |"
    assert lines[-2:] == ["- smoke run", "- busy machine"]


def test_results_round_trip_through_json(tmp_path: Path) -> None:
    r = results()
    r.notes.append("a note")
    r.save(tmp_path / "sub" / "results.json")
    again = Results.from_json((tmp_path / "sub" / "results.json").read_text())
    assert again.rows() == r.rows() and again.notes == ["a note"]


def critest_file(path: Path, names: list[str], points: list[list[int]]) -> None:
    path.write_text(json.dumps({"operationsNames": names, "numParallel": 1,
                                "datapoints": [{"operationsDurationsNs": p} for p in points]}))


def test_critest_results_are_read_with_cri_method_names(tmp_path: Path) -> None:
    critest_file(tmp_path / "pod_benchmark_data.json", ["CreatePod", "StatusPod", "StopPod", "RemovePod"],
                 [[50_000_000, 1_000_000, 80_000_000, 9_000_000], [52_000_000, 2_000_000, 82_000_000, 8_000_000]])
    critest_file(tmp_path / "container_benchmark_data.json",
                 ["CreateContainer", "StartContainer", "StatusContainer", "StopContainer", "RemoveContainer"],
                 [[40_000_000, 15_000_000, 1_000_000, 60_000_000, 17_000_000],
                  [42_000_000, 17_000_000]])  # a short datapoint counts for what it has
    critest_file(tmp_path / "image_listing_benchmark_data.json", ["ListImages"], [[1_300_000]])
    parsed = measure.parse_critest_results(tmp_path)
    assert parsed["RunPodSandbox"] == [50.0, 52.0]
    assert parsed["PodSandboxStatus"] == [1.0, 2.0]
    assert parsed["StartContainer"] == [15.0, 17.0]
    assert parsed["ContainerStatus"] == [1.0]
    assert parsed["ListImages"] == [1.3]
    r = Results()
    measure.add_critest(r, "pycri", parsed)
    ops = [row.operation for row in r.rows()]
    assert ops[:3] == ["RunPodSandbox (critest, ms)", "CreateContainer (critest, ms)", "StartContainer (critest, ms)"]
    assert ops[-1] == "runp + create + start (critest, sum of medians, ms)"
    assert r.rows()[-1].pycri == pytest.approx(51 + 41 + 16)


def test_critest_params_set_every_count() -> None:
    params = measure.critest_params(7)
    for key in ("containersNumber", "podsNumber", "imagesNumber"):
        assert f"{key}: 7\n" in params
        assert f"{key}Parallel: 1\n" in params
    assert "- registry.k8s.io/e2e-test-images/busybox:1.29-2" in params


@pytest.mark.parametrize("shared, mode", [(False, 1), (True, 0)])
def test_pod_and_container_configs_set_the_pid_mode(shared: bool, mode: int) -> None:
    daemon = runtimes.ContainerdDaemon(Path("/bin"))
    pod = measure.pod_config(daemon, "p", shared_pid=shared)
    assert pod["linux"]["security_context"]["namespace_options"]["pid"] == mode
    assert pod["linux"]["cgroup_parent"] == "/pycri-bench-containerd"
    ctr = measure.container_config("c", shared_pid=shared)
    assert ctr["linux"]["security_context"]["namespace_options"]["pid"] == mode
    assert ctr["command"] == runtimes.WORKLOAD
    message = measure.pod_message(pod)
    assert message.linux.security_context.namespace_options.pid == mode
    assert measure.container_message(ctr).linux.security_context.namespace_options.pid == mode


def test_containerd_config(tmp_path: Path) -> None:
    daemon = runtimes.ContainerdDaemon(Path("/cache/bin"))
    daemon.config, daemon.hosts_dir = tmp_path / "containerd.toml", tmp_path / "certs.d"
    daemon.write_config()
    config = tomllib.loads(daemon.config.read_text())
    assert config["version"] == 3
    assert config["grpc"]["address"] == str(daemon.socket)
    cri_runtime = config["plugins"]["io.containerd.cri.v1.runtime"]
    assert cri_runtime["restrict_oom_score_adj"] is True
    assert cri_runtime["cni"] == {"bin_dirs": ["/usr/lib/cni"], "conf_dir": str(daemon.cni_conf_dir)}
    assert cri_runtime["containerd"]["runtimes"]["runc"]["options"]["BinaryName"] == "/cache/bin/runc"
    assert config["plugins"]["io.containerd.cri.v1.images"]["registry"]["config_path"] == str(daemon.hosts_dir)
    assert config["plugins"]["io.containerd.transfer.v1.local"]["config_path"] == str(daemon.hosts_dir)
    hosts = tomllib.loads((daemon.hosts_dir / "registry.k8s.io" / "hosts.toml").read_text())
    assert hosts["host"] == {"http://127.0.0.1:5000/v2/registry.k8s.io": {
        "capabilities": ["pull", "resolve"], "override_path": True}}


def test_pycri_config_keeps_the_mirrors_and_has_its_own_paths(tmp_path: Path) -> None:
    daemon = runtimes.PycriDaemon(handler="runc", runc=Path("/cache/bin/runc"))
    daemon.config = tmp_path / "pycri.toml"
    daemon.write_config()
    config = tomllib.loads(daemon.config.read_text())
    assert config["listen"] == f"unix://{daemon.socket}"
    assert (config["root"], config["state"]) == (str(daemon.root), str(daemon.state))
    assert config["registry"]["mirrors"]["docker.io"] == ["http://127.0.0.1:5000/docker.io"]
    assert config["network"]["cni_conf_dir"] == str(daemon.cni_conf_dir)
    assert config["runtime"]["default_handler"] == "runc"
    assert config["runtime"]["handlers"]["runc"]["path"] == "/cache/bin/runc"


def test_the_two_networks_differ_from_each_other_and_from_pycris_default() -> None:
    pycri, containerd = runtimes.PycriDaemon(), runtimes.ContainerdDaemon(Path("/bin"))
    nets = {pycri.subnet, containerd.subnet, "10.88.0.0/16"}
    assert len(nets) == 3 and pycri.bridge != containerd.bridge
    conflist = json.loads(runtimes.bridge_conflist("n", "b0", "10.89.0.0/16", Path("/x")))
    assert conflist["plugins"][0]["ipam"]["ranges"] == [[{"subnet": "10.89.0.0/16"}]]
    assert conflist["plugins"][0]["ipam"]["dataDir"] == "/x"


def test_workloads_and_their_children_are_not_the_runtimes_own() -> None:
    procs = [runtimes.Proc(10, 1, "containerd", ["containerd"]),
             runtimes.Proc(11, 1, "containerd-shim", ["containerd-shim-runc-v2"]),
             runtimes.Proc(12, 11, "pause", ["/pause"]),
             runtimes.Proc(13, 11, "sleep", list(runtimes.WORKLOAD)),
             runtimes.Proc(14, 13, "sh", ["sh"])]
    assert runtimes.descendants(procs, {10, 11}) == {10, 11, 12, 13, 14}
    assert runtimes.workloads(procs) == {13, 14}


def test_pss_of_this_process_and_of_none() -> None:
    import os
    assert runtimes.pss_kib(os.getpid()) > 0
    assert runtimes.pss_kib(2 ** 30) == 0


def test_cgroups_left_are_the_pods_parent_and_what_is_new_under_the_default_parent(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtimes, "CGROUP_V1_ROOT", tmp_path)
    daemon = runtimes.ContainerdDaemon(Path("/bin"))
    (tmp_path / "memory" / "k8s.io" / "before").mkdir(parents=True)
    daemon.cgroups_before = daemon.shared_cgroups()
    assert daemon.leftover_cgroups() == []
    (tmp_path / "memory" / "k8s.io" / "critest-pod").mkdir()
    (tmp_path / "pids" / "k8s.io").mkdir(parents=True)
    (tmp_path / "memory" / "pycri-bench-containerd" / "pod").mkdir(parents=True)
    assert sorted(daemon.leftover_cgroups()) == sorted(
        str(tmp_path / p) for p in ("memory/pycri-bench-containerd", "memory/k8s.io/critest-pod", "pids/k8s.io"))
    daemon.remove_cgroups()
    assert daemon.leftover_cgroups() == []
    # what was there before the run stays
    assert (tmp_path / "memory" / "k8s.io" / "before").is_dir()


def test_cpu_ticks_of_this_process_grow_and_a_gone_process_counts_nothing() -> None:
    import os
    import time
    before = measure.cpu_ticks({os.getpid()})
    deadline = time.process_time() + 0.2  # spin on CPU time, not wall time: no timing assert
    while time.process_time() < deadline:
        pass
    assert measure.cpu_ticks({os.getpid()}) > before
    assert measure.cpu_ticks({2 ** 30}) == 0


def test_the_bench_knows_the_warm_launcher_by_its_command_line() -> None:
    """The warm infra launcher counts with the daemon (it is not per pod): found by its -c program."""
    from pycri.sandbox.pause import serve_bootstrap

    assert runtimes.WARM_LAUNCHER in serve_bootstrap("/src", 3, 1)
