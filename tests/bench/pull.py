"""Benchmark: pull+unpack of the 100 MiB test image from the local registry, and pycri's RSS.

    .venv/bin/python -m tests.bench.pull [--runs N]

Needs the test registries with the test images (hack/setup.sh). Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from tests.e2e.harness import Pycri, rss_kib

IMAGE = "pycri/big"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pycri-bench-") as base:
        pycri = Pycri(Path(base))
        pycri.start()
        try:
            assert pycri.process is not None
            pid = pycri.process.pid
            time.sleep(1)
            idle = rss_kib(pid)
            times = []
            for _ in range(args.runs):
                started = time.monotonic()
                pycri.crictl("pull", IMAGE)
                times.append(time.monotonic() - started)
                pycri.crictl("rmi", IMAGE)
            after = rss_kib(pid)
            size = 105_922_777
            print(f"pull+unpack of {IMAGE} ({size / 1e6:.0f} MB compressed, 1 MiB + 100 MiB unpacked), "
                  f"{args.runs} runs through crictl:")
            print(f"  median {statistics.median(times):.2f} s, min {min(times):.2f} s, max {max(times):.2f} s "
                  f"({size / 1e6 / statistics.median(times):.0f} MB/s)")
            print(f"pycri RSS: idle {idle / 1024:.1f} MiB, after the pulls {after / 1024:.1f} MiB")
        finally:
            pycri.stop()


if __name__ == "__main__":
    main()
