#!/usr/bin/env bash
# critest's benchmarks (`critest -benchmark`) against pycri, and a table of their figures.
#
#   hack/critest-benchmark.sh [critest flags...]
#
# Runs through hack/critest.sh (critest, test images, pycri started if needed) with a params
# file that sets every benchmark's count, so all of them run: pod life cycle (run, status,
# stop, remove), container life cycle (create, start, status, stop, remove), image life cycle
# (pull, status, remove), image listing, and pod+container start. Then prints per operation
# the median, p90 and max over the samples from the JSON files critest writes.
#
# Environment (optional): BENCH_COUNT (samples per benchmark, default 20), BENCH_PARALLEL
# (samples run at once, default 1), BENCH_DIR (where params and results go), and the
# CRITEST_* variables of hack/critest.sh.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
COUNT=${BENCH_COUNT:-20}
PARALLEL=${BENCH_PARALLEL:-1}
DIR=${BENCH_DIR:-/var/lib/pycri-test/critest-benchmark/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$DIR/results"

cat >"$DIR/params.yaml" <<EOF
containersNumber: $COUNT
containersNumberParallel: $PARALLEL
containerBenchmarkTimeoutSeconds: 300
podsNumber: $COUNT
podsNumberParallel: $PARALLEL
podBenchmarkTimeoutSeconds: 300
imagesNumber: $COUNT
imagesNumberParallel: $PARALLEL
imageBenchmarkTimeoutSeconds: 300
imagePullingBenchmarkImage: public.ecr.aws/docker/library/busybox:1.35.0-glibc
imageListingBenchmarkImages:
- registry.k8s.io/e2e-test-images/busybox:1.29-2
- registry.k8s.io/e2e-test-images/nginx:1.14-2
- registry.k8s.io/e2e-test-images/httpd:2.4.39-4
podContainerStartBenchmarkTimeoutSeconds: 60
EOF

# the benchmarks measure one runtime: one ginkgo process, nothing else in parallel
CRITEST_PARALLEL=1 CRITEST_REPORT_DIR="$DIR" hack/critest.sh -benchmark \
  --benchmarking-params-file="$DIR/params.yaml" --benchmarking-output-dir="$DIR/results" "$@"

printf '\n== critest -benchmark figures (%s samples, %s at a time; ms)\n' "$COUNT" "$PARALLEL"
.venv/bin/python - "$DIR/results" <<'PY'
import json, statistics, sys
from pathlib import Path

print(f"{'benchmark':<34}{'operation':<22}{'median':>9}{'p90':>9}{'max':>9}")
for path in sorted(Path(sys.argv[1]).glob("*.json")):
    data = json.loads(path.read_text())
    names = data.get("operationsNames") or []
    points = data.get("datapoints") or []
    for i, name in enumerate(names):
        samples = sorted(p["operationsDurationsNs"][i] / 1e6 for p in points if len(p.get("operationsDurationsNs") or []) > i)
        if not samples:
            continue
        p90 = samples[min(len(samples) - 1, int(len(samples) * 0.9))]
        print(f"{path.stem.removesuffix('_benchmark_data'):<34}{name:<22}{statistics.median(samples):>9.1f}{p90:>9.1f}{samples[-1]:>9.1f}")
PY
echo "results in $DIR/results"
