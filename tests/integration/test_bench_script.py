"""hack/bench-vs-containerd.sh, the side-by-side benchmark against containerd + runc.

`--help` and `table` run everywhere (no daemon, no build). The smoke run (one round, two
samples, two pods) builds containerd and runc if the cache has none, starts both daemons and
measures every step: opt-in with PYCRI_BENCH=1 (root, the test registry, ~3 minutes once
built). Nothing here asserts a timing: only that every row has both figures and that the run
cleaned up after itself.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "hack" / "bench-vs-containerd.sh"


def test_help_names_every_option() -> None:
    out = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True, check=True).stdout
    for option in ("--rounds", "--samples", "--pods", "--list-containers", "--steady-pods", "--skip", "--out", "--keep"):
        assert option in out
    assert "containerd" in out and "ratio" in out


def test_table_prints_an_earlier_run_again(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"samples": {"RunPodSandbox (critest, ms)": {
        "pycri": [50.0, 51.0, 52.0], "containerd": [100.0, 104.0]}}, "notes": ["a smoke run"]}))
    out = subprocess.run([str(SCRIPT), "table", str(results), "--out", str(tmp_path / "t.md")],
                         capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[2].split()[-3:] == ["51.0", "102", "0.50"]
    md = (tmp_path / "t.md").read_text()
    assert "| RunPodSandbox (critest, ms) | 51.0 | 102 | 0.50 |" in md and "- a smoke run" in md


@pytest.mark.e2e
@pytest.mark.skipif(os.environ.get("PYCRI_BENCH") != "1", reason="the benchmark smoke run is opt-in: PYCRI_BENCH=1")
def test_smoke_run_measures_every_step_and_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "table.md"
    run = subprocess.run(
        ["nice", "-n", "10", str(SCRIPT), "--rounds", "1", "--samples", "2", "--pods", "2",
         "--list-containers", "20", "--list-calls", "3", "--steady-pods", "2", "--steady-seconds", "3",
         "--out", str(out)],
        capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    data = json.loads((tmp_path / "results.json").read_text())
    operations = set(data["samples"])
    for expected in ("RunPodSandbox (critest, ms)", "runp + create + start (critest, sum of medians, ms)",
                     "runp + create + start (crictl, ms)", "ListContainers at 20 containers (gRPC, ms)",
                     "memory per pod, PID ns per container (MB PSS, 2 pods)",
                     "memory per pod, pod-wide PID ns (MB PSS, 2 pods)",
                     "runtime CPU at 2 pods, kubelet-like polling, 3 s (% of a core)"):
        assert expected in operations
    for operation, per_runtime in data["samples"].items():
        assert per_runtime["pycri"] and per_runtime["containerd"], operation
    assert any(n.startswith("cleanup checked") for n in data["notes"])
    assert not [n for n in data["notes"] if n.startswith(("FAILED", "LEFT BEHIND"))]
    assert "| operation | pycri | containerd | ratio |" in out.read_text()
    assert not list(Path("/sys/fs/cgroup").glob("*/pycri-bench-*"))
    assert "/run/pycri-bench" not in Path("/proc/self/mountinfo").read_text()


def test_a_fresh_start_refuses_a_root_with_mounts_in_it(tmp_path: Path) -> None:
    """A root whose containers are still mounted is not wiped (the wipe deleted their rows and
    went on through the overlays into their files): the run stops and says so."""
    from hack.bench import runtimes

    root = tmp_path / "root"
    merged = root / "containers" / "c1" / "rootfs" / "merged"
    merged.mkdir(parents=True)
    (root / "pycri.db").write_text("rows")
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(merged)], check=True)
    try:
        (merged / "a-file").write_text("in the container")
        daemon = runtimes.Daemon("mounted-test", root, tmp_path / "state", tmp_path / "state" / "sock",
                                 subnet="10.250.0.0/24", bridge="none0")
        assert runtimes.mounts_under(root) == [str(merged)]
        with pytest.raises(SystemExit, match="still has 1 mounts"):
            daemon.prepare()
        assert (root / "pycri.db").read_text() == "rows" and (merged / "a-file").exists()
    finally:
        subprocess.run(["umount", str(merged)], check=True)
    assert runtimes.mounts_under(root) == []
