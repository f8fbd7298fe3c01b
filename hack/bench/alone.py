"""pycri alone, on a daemon of its own (issue 15): ListContainers and ListPodSandbox latency
at N running containers, and critest -benchmark's medians; no containerd is needed.

    python -m hack.bench.alone run [--containers 500] [--calls 30]   fill, measure, take down
    python -m hack.bench.alone fill [--containers 500]                a daemon with N running containers, left running
    python -m hack.bench.alone measure [--calls 30]                   the List medians, from the running daemon
    python -m hack.bench.alone restart                                stop the daemon (containers stay), start it again, measure
    python -m hack.bench.alone down                                   remove every pod, stop the daemon, clean up
    python -m hack.bench.alone critest [--samples 20]                 a fresh daemon: critest -benchmark's medians, then down
    python -m hack.bench.alone steady [--pods 110] [--seconds 60]     a fresh daemon: hack/bench's steady-state step, then down
    python -m hack.bench.alone streams [--containers 5000] [--churn 60] [--keep]
                                         every Stream* call beside its List call at N kubelet-like
                                         containers (fills a fresh daemon unless one runs), then a
                                         check of the streams while pods come and go; then down
                                         unless --keep (hack/bench/streams.py)
    --instance NAME (any command): a second daemon beside the first, under BASE-NAME and
    STATE-NAME with a bridge and subnet of its own

The daemon is hack/bench's `PycriDaemon` (hack/pycri.toml's registry settings) with its own
root (/var/lib/pycri-list-bench), state (/run/pycri-list-bench), bridge and subnet, so it runs
beside the default pycri and a `hack/bench-vs-containerd.sh` run. The containers are busybox
`sleep`, 10 a pod, each with a PID namespace of its own; the calls come from one Python gRPC
client on one channel (the first call of each kind, which warms the channel, is not counted).
critest runs as hack/bench runs it (`measure.critest_benchmark`). `critest` and `steady` use a daemon of
their own (/var/lib/pycri-fresh-bench, /run/pycri-fresh-bench, bridge pycrilist1), one run at a time
(a lock), so they can run beside a filled daemon; critest's output goes under its root/critest.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import math
import os
import signal
import statistics
import sys
import time
from pathlib import Path

import grpc

from pycri.api.cri import api_pb2 as cri

from .measure import (CRITEST_ORDER, IMAGE, Client, critest_benchmark, ms_since, pull_images, settle, steady_state,
                      time_calls)
from . import streams
from .runtimes import PycriDaemon
from .table import Results

BASE = Path(os.environ.get("PYCRI_LIST_BENCH_ROOT", "/var/lib/pycri-list-bench"))
STATE = Path(os.environ.get("PYCRI_LIST_BENCH_STATE", "/run/pycri-list-bench"))
# `critest` and `steady` make a daemon of their own, beside a filled one (`fill`): other dirs,
# bridge and subnet; one such run at a time on the machine (they wait for each other's lock)
FRESH_LOCK = Path("/run/pycri-fresh-bench.lock")
PER_POD = 10
# --instance NAME: a filled daemon beside the default one (suffix of its dirs and cgroup
# parent, bridge, subnet); the default's is 10.93, the fresh run's 10.94
INSTANCES = {name: (f"-{name}", f"pycrilist{name}", f"10.{100 + n}.0.0/16") for n, name in enumerate("abcdefgh")}


class ListDaemon(PycriDaemon):
    """A PycriDaemon under BASE and STATE, remembered by a pid file between commands."""

    def __init__(self, fresh_run: bool = False, instance: str = "") -> None:
        super().__init__()
        base, state, suffix = (BASE, STATE, "") if not fresh_run else (
            Path("/var/lib/pycri-fresh-bench"), Path("/run/pycri-fresh-bench"), "-fresh")
        self.subnet, self.bridge = ("10.94.0.0/16", "pycrilist1") if fresh_run else ("10.93.0.0/16", "pycrilist0")
        if instance and not fresh_run:
            suffix, self.bridge, self.subnet = INSTANCES[instance]
            base, state = Path(f"{BASE}{suffix}"), Path(f"{STATE}{suffix}")
        self.name = "pycri"  # (the name hack/bench's results know; every path below is this daemon's own)
        self.base = base
        self.root, self.state = base / "root", state
        self.socket = state / "pycri.sock"
        self.work, self.cni_conf_dir, self.log_file = base / "work", base / "cni", base / "pycri.log"
        self.crictl_config, self.config = self.work / "crictl.yaml", base / "pycri.toml"
        self.cgroup_parent = "/pycri-list-bench" + suffix
        self.pid_file = base / "daemon.pid"

    def start(self, fresh: bool = True) -> None:
        if fresh:
            super().start()
        else:  # the same root: what a restarted daemon recovers
            self.prepare = lambda: None  # type: ignore[method-assign]
            super().start()
        assert self.process is not None
        self.pid_file.write_text(str(self.process.pid))

    def running_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def stop_by_pid(self, take_down: bool = True) -> None:
        """SIGTERM the daemon and wait for it; with `take_down`, unmount what outlives it by
        design (its namespace pins: a restart keeps them, as a restarted service does)."""
        pid = self.running_pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                try:  # our child when started by this process
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
                time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        if take_down:
            self.after_stop()


def fill(daemon: ListDaemon, containers: int, kubelet_like: bool = False) -> None:
    """A fresh daemon with `containers` running containers, PER_POD a pod; `kubelet_like`:
    with the labels and annotations kubelet gives them (hack/bench/streams.py)."""
    daemon.start()
    daemon.crictl("pull", IMAGE)
    client = Client(daemon)
    started = time.monotonic()
    try:
        made = 0
        for i in range(math.ceil(containers / PER_POD)):
            n = min(PER_POD, containers - made)
            if kubelet_like:
                streams.run_kubelet_pod(client.stub, daemon, i, n)
            else:
                client.run_pod(f"list-{i}", shared_pid=False, containers=n)
            made += n
            if (i + 1) % 50 == 0:
                print(f"{made} containers in {ms_since(started) / 1000:.0f} s", flush=True)
    finally:
        client.close()
    print(f"{containers} containers in {math.ceil(containers / PER_POD)} pods in {ms_since(started) / 1000:.0f} s",
          flush=True)
    settle()


def measure(daemon: ListDaemon, calls: int) -> dict[str, float]:
    client = Client(daemon)
    medians = {}
    try:
        count = len(client.stub.ListContainers(cri.ListContainersRequest(), timeout=60).containers)
        running = len(client.stub.ListContainers(cri.ListContainersRequest(filter=cri.ContainerFilter(
            state=cri.ContainerStateValue(state=cri.CONTAINER_RUNNING))), timeout=60).containers)
        for method, request, name in (
            (client.stub.ListContainers, cri.ListContainersRequest(), "ListContainers"),
            (client.stub.ListPodSandbox, cri.ListPodSandboxRequest(), "ListPodSandbox"),
        ):
            samples = time_calls(method, request, calls)
            medians[name] = statistics.median(samples)
            print(f"{name} at {count} containers ({running} running): median {medians[name]:.2f} ms, "
                  f"min {min(samples):.2f}, max {max(samples):.2f} ({calls} calls)", flush=True)
    finally:
        client.close()
    return medians


def critest(daemon: ListDaemon, samples: int) -> None:
    daemon.start()
    try:
        pull_images(daemon)
        results = Results()
        critest_benchmark(daemon, results, samples, daemon.base / "critest")
        for note in results.notes:
            print(note, flush=True)
        for name in CRITEST_ORDER:
            row = results.samples.get(f"{name} (critest, ms)", {}).get(daemon.name)
            if row:
                print(f"{name}: median {statistics.median(row):.2f} ms ({len(row)} samples)", flush=True)
    finally:
        down(daemon)


def steady(daemon: ListDaemon, pods: int, seconds: float) -> None:
    daemon.start()
    try:
        daemon.crictl("pull", IMAGE)
        results = Results()
        steady_state(daemon, results, pods, seconds, 0)
        for operation, per_runtime in results.samples.items():
            print(f"{operation}: {statistics.median(per_runtime[daemon.name]):.2f}", flush=True)
        for note in results.notes:
            print(note, flush=True)
    finally:
        down(daemon)


def measure_streams(daemon: ListDaemon, repeats: int, churn_seconds: float) -> bool:
    """Every Stream* call beside its List call (streams.measure_lists), then the streams while
    pods come and go (streams.churn_check); prints the table, saves the figures under BASE;
    False when a check failed."""
    client = streams.KubeletClient(daemon)
    try:
        count = len(list(streams.call_stream(client, streams.CALLS[0]).keys))
        load_before = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        rows = streams.measure_lists(client, repeats)
        load = f"{load_before} before, " + " ".join(Path("/proc/loadavg").read_text().split()[:3]) + " after"
        print(streams.table(rows, count, load), flush=True)
        problems = [p for row in rows for p in streams.check_row(row)]
        report = None
        if churn_seconds > 0:
            report = streams.churn_check(daemon, client, churn_seconds, first_index=100_000)
            print(f"churn: {report.calls} Stream* calls while {report.pods_made} pods of {PER_POD} containers were "
                  f"made and {report.pods_removed} removed: " + ("; ".join(report.problems) or "every stream OK, "
                  "no item twice, none of the items there before missing"), flush=True)
            problems += report.problems
        out = daemon.base / f"streams-{count}.json"
        out.write_text(json.dumps({"containers": count, "load": load, "rows": streams.summary(rows),
                                   "churn": vars(report) if report else None, "problems": problems}, indent=1))
        print(f"figures in {out}; " + ("problems: " + "; ".join(problems) if problems else "no problems"), flush=True)
        return not problems
    finally:
        client.close()


def remove_pods(daemon: ListDaemon) -> None:
    """Stop and remove every pod over gRPC, one call each (one `crictl stopp` of 500 pods of
    10 containers runs past crictl's timeout); then crictl's sweep for whatever is left."""
    client = Client(daemon)
    started = time.monotonic()
    try:
        pods = client.stub.ListPodSandbox(cri.ListPodSandboxRequest(), timeout=300).items
        for n, pod in enumerate(pods, 1):
            try:
                streams.remove_pod(client.stub, pod.id)
            except grpc.RpcError as e:
                print(f"pod {pod.id[:12]}: {e.code().name} {e.details()}", flush=True)
            if n % 100 == 0:
                print(f"{n} of {len(pods)} pods removed in {ms_since(started) / 1000:.0f} s", flush=True)
    finally:
        client.close()
    daemon.remove_pods()


def down(daemon: ListDaemon) -> None:
    if daemon.running_pid() is not None:
        remove_pods(daemon)
    daemon.stop_by_pid()
    daemon.remove_cgroups()
    daemon.remove_bridge()
    left = daemon.leftovers()
    print("left behind: " + ("; ".join(left) if left else "nothing"), flush=True)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m hack.bench.alone", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=("run", "fill", "measure", "restart", "down", "critest", "steady", "streams"))
    p.add_argument("--containers", type=int, default=500)
    p.add_argument("--instance", choices=sorted(INSTANCES), default="",
                   help="a daemon beside the default one (own dirs, bridge, subnet)")
    p.add_argument("--kubelet-like", action="store_true", help="fill: kubelet's labels and annotations")
    p.add_argument("--repeats", type=int, default=3, help="streams: timed calls of each kind")
    p.add_argument("--churn", type=float, default=60, help="streams: seconds of Stream* calls while pods come and go")
    p.add_argument("--keep", action="store_true", help="streams: leave the daemon running")
    p.add_argument("--calls", type=int, default=30)
    p.add_argument("--samples", type=int, default=20, help="critest: samples of each benchmark")
    p.add_argument("--pods", type=int, default=110, help="steady: running pods (one container each)")
    p.add_argument("--seconds", type=float, default=60, help="steady: how long the polling is measured")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root", file=sys.stderr)
        return 2
    if args.command in ("critest", "steady"):
        daemon = ListDaemon(fresh_run=True)
        with open(FRESH_LOCK, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another helper's fresh run: wait for it
            if daemon.running_pid() is not None:  # one whose run was killed: take it down first
                down(daemon)
            daemon.base.mkdir(parents=True, exist_ok=True)
            if args.command == "critest":
                critest(daemon, args.samples)
            else:
                steady(daemon, args.pods, args.seconds)
        return 0
    daemon = ListDaemon(instance=args.instance)
    if args.command == "streams":
        daemon.base.mkdir(parents=True, exist_ok=True)
        ok = False
        try:
            if daemon.running_pid() is None:
                fill(daemon, args.containers, kubelet_like=True)
            ok = measure_streams(daemon, args.repeats, args.churn)
        finally:
            if not args.keep:
                down(daemon)
        return 0 if ok else 1
    if args.command in ("run", "fill"):
        if daemon.running_pid() is not None:
            print(f"a daemon already runs (pid file {daemon.pid_file}): `down` first", file=sys.stderr)
            return 1
        daemon.base.mkdir(parents=True, exist_ok=True)
        fill(daemon, args.containers, args.kubelet_like)
    if args.command == "restart":
        daemon.stop_by_pid(take_down=False)
        t = time.monotonic()
        daemon.start(fresh=False)
        print(f"restarted in {ms_since(t):.0f} ms", flush=True)
    if args.command in ("run", "measure", "restart"):
        measure(daemon, args.calls)
    if args.command in ("run", "down"):
        down(daemon)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
