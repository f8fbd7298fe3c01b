#!/usr/bin/env python3
"""List the failed specs of a critest run from ginkgo's JSON report (--ginkgo.json-report).

    python3 hack/critest/failures.py REPORT.json [--counts] [--grpc] [--skips]

One line per failed spec: its full name, the node that failed (It, BeforeEach, ...), the
validate source line, and the error, shortened: for gRPC errors "rpc error: code = X desc = Y",
else the first meaningful line of gomega's message.  --counts also prints how many specs
passed, failed and were skipped; --grpc groups the failed specs by gRPC code and description
(with ids and long names blanked), a first cut of a failure analysis.  --skips prints the
skipped specs grouped by the reason critest gave (specs left out by --ginkgo.skip or focus
have none).  Standard library only.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter, defaultdict

FAILED = {"failed", "panicked", "interrupted", "aborted", "timedout"}
GRPC = re.compile(r"rpc error: code = (\w+) desc = ([^\n]*)")


def spec_name(spec: dict) -> str:
    return " ".join([*(spec.get("ContainerHierarchyTexts") or []), spec.get("LeafNodeText", "")]).strip()


def short_error(message: str, width: int = 220) -> str:
    if match := GRPC.search(message):
        text = f"rpc error: code = {match[1]} desc = {match[2]}"
        # gomega puts the explanation ("failed to create container") before the error
        first = message.split("\n", 1)[0].strip()
        if first and "rpc error" not in first:
            text = f"{first}: {text}"
    else:
        lines = [line.strip() for line in message.splitlines() if line.strip()]
        text = " | ".join(lines[:3])
    return text if len(text) <= width else text[: width - 3] + "..."


def grpc_key(message: str) -> str:
    match = GRPC.search(message)
    if not match:
        return "(no gRPC error) " + message.split("\n", 1)[0][:100]
    desc = re.sub(r"[0-9a-f]{32,}", "<id>", match[2])
    desc = re.sub(r"'[^']{20,}'", "'<name>'", desc)
    desc = re.sub(r"[0-9a-f-]{36}", "<uuid>", desc)
    return f"{match[1]}: {desc[:160]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report")
    parser.add_argument("--counts", action="store_true")
    parser.add_argument("--grpc", action="store_true")
    parser.add_argument("--skips", action="store_true")
    args = parser.parse_args(argv)
    specs = [s for suite in json.load(open(args.report)) for s in suite.get("SpecReports") or []
             if s.get("LeafNodeType") == "It"]
    failed = sorted((s for s in specs if s.get("State") in FAILED), key=spec_name)
    if args.counts:
        states = Counter(s.get("State") for s in specs)
        print(", ".join(f"{k}: {v}" for k, v in sorted(states.items())))
    for spec in failed:
        failure = spec.get("Failure") or {}
        location = failure.get("Location") or {}
        where = f"{location.get('FileName', '').rsplit('/', 1)[-1]}:{location.get('LineNumber', '')}"
        print(f"- {spec_name(spec)}\n    [{failure.get('FailureNodeType', '?')} {where}] "
              f"{short_error(failure.get('Message', ''))}")
    if args.skips:
        reasons: dict[str, list[str]] = defaultdict(list)
        for spec in specs:
            if spec.get("State") == "skipped":
                message = ((spec.get("Failure") or {}).get("Message") or "").strip().split("\n", 1)[0]
                reasons[message or "not selected by this run (--ginkgo.skip, or the benchmark focus)"].append(
                    spec_name(spec))
        print("skipped:")
        for reason, names in sorted(reasons.items(), key=lambda kv: -len(kv[1])):
            groups = Counter(" ".join(name.split()[:2]) for name in names)
            print(f"{len(names):4d}  {reason}  [{', '.join(f'{g} {n}' for g, n in sorted(groups.items()))}]")
    if args.grpc:
        groups: dict[str, list[str]] = defaultdict(list)
        for spec in failed:
            groups[grpc_key((spec.get("Failure") or {}).get("Message", ""))].append(spec_name(spec))
        print()
        for key, names in sorted(groups.items(), key=lambda kv: -len(kv[1])):
            print(f"{len(names):3d}  {key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
