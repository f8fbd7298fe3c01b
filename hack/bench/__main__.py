"""pycri against containerd + runc, side by side: `python -m hack.bench` (root, from the repo).

hack/bench-vs-containerd.sh builds containerd and runc, starts the test registry and pushes
the test images, then runs this. See `--help` for what is measured.

    python -m hack.bench run --containerd-bin DIR [--rounds 3] [--samples 10] ...
    python -m hack.bench table RESULTS.json [--out TABLE.md]
    python -m hack.bench cleanup          what a killed run left: processes, mounts, cgroups
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import structlog

from .measure import (CRITEST_PULL_IMAGE, critest_benchmark, crictl_start, list_latency, memory_per_pod,
                      pull_images, steady_state)
from .runtimes import BENCH_ROOT, BENCH_STATE, ContainerdDaemon, Daemon, PycriDaemon
from .table import Results, format_markdown, format_text

log = structlog.get_logger("bench")

STEPS = ("critest", "crictl", "memory", "list", "steady")
DEFAULT_OUT = Path("/var/tmp/pycri-bench/table.md")


DESCRIPTION = ("Measure pycri side by side with containerd v2 + runc on this machine, alternating "
                    "between the two in rounds, and print one table: operation | pycri | containerd | ratio "
                    "(medians over all samples of all rounds; ratio = pycri / containerd, below 1 is better "
                    "for pycri). Steps: critest -benchmark (gRPC), runp+create+start through crictl, memory "
                    "per pod (PSS of the runtime's own processes) at --pods pods with a PID namespace per "
                    "container and with a pod-wide one, ListContainers/ListPodSandbox at --list-containers "
                    "containers, and the runtime's CPU at --steady-pods running pods polled as kubelet would "
                    "(relist every second, stats every 10 s; no kubelet runs). Both runtimes run as daemons of their own (/var/lib/pycri-bench, "
                    "/run/pycri-bench) and are stopped, with every pod they ran, at the end.")
EPILOG = ("Other commands: `table RESULTS.json [--out FILE.md]` prints an earlier run's table again; "
          "`cleanup` takes down what an interrupted run left behind (its daemons' processes, mounts, cgroups, "
          "bridges) and says whether anything is left.")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hack/bench-vs-containerd.sh", description=DESCRIPTION, epilog=EPILOG)
    sub = p.add_subparsers(dest="command")
    run = sub.add_parser("run", help="measure (the default)", description=DESCRIPTION, epilog=EPILOG)
    run.prog = "hack/bench-vs-containerd.sh"
    run.add_argument("--containerd-bin", type=Path, default=Path("/var/cache/pycri/bench/bin"),
                     help="directory with containerd, containerd-shim-runc-v2 and runc (default %(default)s)")
    run.add_argument("--rounds", type=int, default=3, help="rounds, alternating which runtime goes first (default 3)")
    run.add_argument("--samples", type=int, default=10,
                     help="samples per round of each critest benchmark and of crictl runp+create+start (default 10)")
    run.add_argument("--pods", type=int, default=20, help="running pods for the memory figures (default 20)")
    run.add_argument("--list-containers", type=int, default=500,
                     help="running containers (10 a pod) for the List latencies (default 500)")
    run.add_argument("--list-calls", type=int, default=30, help="List calls timed per round (default 30)")
    run.add_argument("--steady-pods", type=int, default=110,
                     help="running pods for the steady-state CPU figure (default 110, kubelet's max-pods)")
    run.add_argument("--steady-seconds", type=float, default=60,
                     help="how long the kubelet-like polling is measured per round (default 60)")
    run.add_argument("--skip", action="append", default=[], choices=STEPS, help="leave a step out (repeatable)")
    run.add_argument("--pycri-handler", default="",
                     help="pycri's default runtime handler (default: pycri's own default, `pycri`); `runc` "
                          "uses the runc built for containerd")
    run.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the table as markdown (default %(default)s); "
                     "the raw samples go next to it as results.json")
    run.add_argument("--keep", action="store_true", help="keep the daemons' roots (images, logs) after the run")
    table = sub.add_parser("table", help="print the table of an earlier run's results.json")
    table.add_argument("results", type=Path)
    table.add_argument("--out", type=Path)
    sub.add_parser("cleanup", help="stop what a killed run left behind and check that nothing is left")
    return p


def order(round_no: int, daemons: list[Daemon]) -> list[Daemon]:
    """Round 0: pycri first; round 1: containerd first; and so on."""
    return daemons if round_no % 2 == 0 else daemons[::-1]


def header_notes(args: argparse.Namespace, daemons: list[Daemon]) -> list[str]:
    version = subprocess.run([str(args.containerd_bin / "containerd"), "--version"], capture_output=True,
                             text=True).stdout.strip()
    runc = subprocess.run([str(args.containerd_bin / "runc"), "--version"], capture_output=True,
                          text=True).stdout.splitlines()
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2]).stdout.strip()
    load = os.getloadavg()
    return [
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
        f"{os.cpu_count()} CPUs, load average at start {load[0]:.1f}",
        f"pycri at {head or '?'} (handler: {args.pycri_handler or 'default'}); {version}; {runc[0] if runc else 'runc ?'}",
        f"{args.rounds} rounds alternating which runtime goes first; {args.samples} samples a round per "
        f"critest benchmark and crictl; memory at {args.pods} pods; List at {args.list_containers} containers, "
        f"{args.list_calls} calls a round; steady state at {args.steady_pods} pods for {args.steady_seconds:.0f} s",
        "figures are medians over all samples of all rounds; ratio = pycri / containerd",
    ]


def run(args: argparse.Namespace) -> int:
    for binary in ("containerd", "containerd-shim-runc-v2", "runc"):
        if not os.access(args.containerd_bin / binary, os.X_OK):
            sys.exit(f"{args.containerd_bin / binary} missing: run hack/bench/build-containerd.sh")
    cleanup_leftovers(quiet=True)
    pycri = PycriDaemon(handler=args.pycri_handler, runc=args.containerd_bin / "runc")
    containerd = ContainerdDaemon(args.containerd_bin)
    daemons: list[Daemon] = [pycri, containerd]
    results = Results()
    results_dir = args.out.parent
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    work = BENCH_ROOT / "runs" / stamp
    failed: list[str] = []

    def on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    try:
        for d in daemons:
            d.start()
        results.notes.extend(header_notes(args, daemons))
        for d in daemons:
            pull_images(d, extra=(containerd.sandbox_image,) if d is containerd else ())
        for r in range(args.rounds):
            log.info("round", round=r + 1, of=args.rounds, first=order(r, daemons)[0].name)
            for step in STEPS:
                if step in args.skip:
                    continue
                for d in order(r, daemons):
                    log.info("step", step=step, runtime=d.name, round=r + 1)
                    try:
                        if step == "critest":
                            d.crictl("rmi", CRITEST_PULL_IMAGE, check=False)
                            critest_benchmark(d, results, args.samples, work / f"critest-{d.name}-r{r}")
                        elif step == "crictl":
                            crictl_start(d, results, args.samples, r)
                        elif step == "memory":
                            memory_per_pod(d, results, args.pods, shared_pid=False, round_no=r)
                            memory_per_pod(d, results, args.pods, shared_pid=True, round_no=r)
                        elif step == "list":
                            list_latency(d, results, args.list_containers, args.list_calls, r)
                        elif step == "steady":
                            steady_state(d, results, args.steady_pods, args.steady_seconds, r)
                    except Exception as e:  # one step failing must not lose the others' figures
                        log.error("step failed", step=step, runtime=d.name, round=r + 1, error=str(e)[:2000])
                        failed.append(f"{step} on {d.name} in round {r + 1}: {str(e).splitlines()[0][:200]}")
                        d.remove_all()
            results.save(results_dir / "results.json")
    except KeyboardInterrupt as e:
        failed.append(f"interrupted ({e})")
    finally:
        leftovers = stop_all(daemons, keep=args.keep)
    results.notes.extend(f"FAILED: {f}" for f in failed)
    results.notes.extend(f"LEFT BEHIND: {x}" for x in leftovers)
    if not leftovers:
        results.notes.append("cleanup checked: no pods, processes, mounts, cgroups or IP leases of either runtime left")
    results.save(results_dir / "results.json")
    text = format_text(results.rows())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(format_markdown(results.rows(), results.notes))
    print()
    print(text)
    for note in results.notes:
        print(f"  {note}")
    print(f"\ntable: {args.out}; samples: {results_dir / 'results.json'}; critest logs: {work}")
    return 1 if failed or leftovers else 0


def stop_all(daemons: list[Daemon], keep: bool) -> list[str]:
    """Remove every pod, stop both daemons, take down what they leave; return what is still there."""
    for d in daemons:
        try:
            d.remove_all()
        except Exception as e:
            log.error("removing pods failed", runtime=d.name, error=str(e)[:500])
    for d in daemons:
        d.stop()
    for d in daemons:
        d.remove_cgroups()
        d.remove_bridge()
    leftovers = [f"{d.name}: {x}" for d in daemons for x in d.leftovers()]
    if not keep and not leftovers:
        for d in daemons:
            for path in (d.root, d.state, d.socket.parent):
                shutil.rmtree(path, ignore_errors=True)
    return leftovers


def cleanup_leftovers(quiet: bool = False) -> list[str]:
    """What an interrupted run may have left: its processes (found by this run's paths), mounts
    under its roots, cgroups, bridges. Returns what could not be removed."""
    daemons: list[Daemon] = [PycriDaemon(), ContainerdDaemon(Path("/nonexistent"))]
    for d in daemons:
        for entry in d.leftover_processes():
            pid = int(entry.split()[0])
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for mount in sorted(d.leftover_mounts(), key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], check=False, capture_output=True)
        d.remove_cgroups()
        d.remove_bridge()
    left = [f"{d.name}: {x}" for d in daemons for x in d.leftovers() if not x.startswith("ip lease")]
    if not quiet:
        print("\n".join(left) if left else f"nothing left under {BENCH_ROOT} / {BENCH_STATE}")
    return left


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("run", "table", "cleanup"):
        argv.insert(0, "run")  # so --help shows the run's options
    args = parser().parse_args(argv)
    if args.command == "table":
        results = Results.from_json(args.results.read_text())
        print(format_text(results.rows()))
        if args.out:
            args.out.write_text(format_markdown(results.rows(), results.notes))
        return 0
    if os.geteuid() != 0:
        sys.exit("must run as root")
    if args.command == "cleanup":
        return 1 if cleanup_leftovers() else 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
