"""The CRI calls pycri served during a conformance run, read from its JSON log, and the
hack/conformance.sh --ci spec list turned into ginkgo focus expressions.

    cri_calls.py focus SPECS_FILE            one Go regexp per line, for ginkgo --focus
    cri_calls.py check LOG OFFSET [--require] the calls logged after byte OFFSET of LOG

`check` prints each CRI method kubelet called with its count and, with --require, exits 1 if a
call kubelet makes in normal operation (REQUIRED) was not made, so that the CI subset keeps
touching every one of them. The calls kubelet makes only on request or behind a feature gate
are listed in NOT_REQUIRED with the reason, and reported if seen.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

# Each entry: the calls of which at least one must be made (kubelet uses a KEP-5825 Stream*
# call instead of its List* call where the runtime has it).
REQUIRED: tuple[tuple[str, ...], ...] = (
    ("Version",), ("Status",),
    ("RunPodSandbox",), ("PodSandboxStatus",), ("ListPodSandbox", "StreamPodSandboxes"),
    ("StopPodSandbox",), ("RemovePodSandbox",),
    ("CreateContainer",), ("StartContainer",), ("ContainerStatus",),
    ("ListContainers", "StreamContainers"), ("StopContainer",), ("RemoveContainer",),
    ("UpdateContainerResources",), ("ExecSync",), ("Exec",),
    ("ListContainerStats", "StreamContainerStats"),
    ("ImageStatus",), ("PullImage",), ("ListImages", "StreamImages"), ("ImageFsInfo",),
)

NOT_REQUIRED: dict[str, str] = {
    "Attach": "only for `kubectl attach`, which no [sig-node] Conformance spec runs "
              "(critest's attach specs and tests/e2e cover it)",
    "PortForward": "only for `kubectl port-forward`, which no [sig-node] Conformance spec runs "
                   "(critest and tests/e2e cover it)",
    "ReopenContainerLog": "kubelet rotates a log only past containerLogMaxSize (10 MiB)",
    "RemoveImage": "kubelet's image GC runs only above its disk-usage threshold",
    "ContainerStats": "kubelet's stats provider asks with ListContainerStats",
    "PodSandboxStats": "kubelet's stats provider asks with ListPodSandboxStats",
    "ListPodSandboxStats": "asked with the summary API's pod network stats; not every run",
    "ListMetricDescriptors": "behind kubelet's PodAndContainerStatsFromCRI gate (off)",
    "ListPodSandboxMetrics": "behind kubelet's PodAndContainerStatsFromCRI gate (off)",
    "GetContainerEvents": "behind kubelet's EventedPLEG gate (off)",
    "UpdateRuntimeConfig": "once, when kubelet starts with a pod CIDR",
    "RuntimeConfig": "once, when kubelet starts",
    "CheckpointContainer": "behind kubelet's ContainerCheckpoint API, no Conformance spec",
    "UpdatePodSandboxResources": "pod-level in-place resize only",
}


def go_escape(text: str) -> str:
    """text as a literal in a Go (RE2) regexp: RE2 refuses escapes of letters, digits and
    spaces, so only its metacharacters are escaped."""
    return "".join("\\" + c if c in r"\.+*?()|[]{}^$" else c for c in text)


def focus_patterns(lines: Iterable[str]) -> list[str]:
    """A ginkgo --focus regexp per spec line: the name followed by its tags (` [`) or nothing,
    so that `should support sysctls` does not also pick `should support sysctls with slashes
    as separator`. Not anchored at the start: the text ginkgo matches does not begin with the
    name e2e.test prints."""
    return [f"{go_escape(line)}( \\[|$)" for line in (raw.strip() for raw in lines)
            if line and not line.startswith("#")]


def calls_after(log: Path, offset: int) -> Counter[str]:
    """The CRI methods logged ("event": "cri call") after byte offset of log; the whole file
    if it is now shorter (it was replaced)."""
    counts: Counter[str] = Counter()
    with log.open("rb") as f:
        f.seek(0, 2)
        f.seek(offset if offset <= f.tell() else 0)
        for raw in f:
            if b'"cri call"' not in raw:
                continue
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("event") == "cri call":
                counts[str(record.get("method"))] += 1
    return counts


def missing(counts: Counter[str]) -> list[tuple[str, ...]]:
    return [group for group in REQUIRED if not any(counts[name] for name in group)]


def report(counts: Counter[str]) -> list[str]:
    lines = [f"=== CRI calls pycri served during the run ({sum(counts.values())} in all)"]
    lines += [f"  {name:28} {n}" for name, n in sorted(counts.items())]
    for group in missing(counts):
        lines.append(f"MISSING: kubelet made no {' or '.join(group)} call")
    unseen = [name for name in NOT_REQUIRED if not counts[name]]
    if unseen:
        lines.append("not made, and not expected to be:")
        lines += [f"  {name:28} {NOT_REQUIRED[name]}" for name in unseen]
    return lines


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "focus":
        print("\n".join(focus_patterns(Path(argv[1]).read_text().splitlines())))
        return 0
    if len(argv) in (3, 4) and argv[0] == "check" and argv[3:] in ([], ["--require"]):
        counts = calls_after(Path(argv[1]), int(argv[2]))
        print("\n".join(report(counts)))
        return 1 if argv[3:] and missing(counts) else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
