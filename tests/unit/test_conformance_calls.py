"""hack/conformance/cri_calls.py: the --ci spec list as ginkgo focus expressions, and the CRI
calls read back from pycri's JSON log. No cluster runs here; the last test asks e2e.test (if
hack/build-e2e.sh has built it) that each focus expression selects exactly one spec."""
from __future__ import annotations

import json
import os
import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from hack.conformance import cri_calls

REPO = Path(__file__).resolve().parents[2]
SPECS = REPO / "hack/conformance/ci-specs.txt"
E2E_TEST = Path(os.environ.get("PYCRI_E2E_BIN", "/usr/local/lib/pycri/kube/e2e")) / "e2e.test"


def log_line(method: str, event: str = "cri call") -> str:
    return json.dumps({"method": method, "duration_ms": 1.0, "code": "OK", "event": event}) + "\n"


def test_focus_escapes_only_re2_metacharacters_and_ends_at_the_tags() -> None:
    [pattern] = cri_calls.focus_patterns(['# a comment', '', '[sig-node] Probing a "cat /tmp/x" probe'])
    assert pattern == r'\[sig-node\] Probing a "cat /tmp/x" probe( \[|$)'
    assert re.search(pattern, '[sig-node] Probing a "cat /tmp/x" probe [Conformance]')
    assert not re.search(pattern, '[sig-node] Probing a "cat /tmp/x" probe with slashes [Conformance]')


def test_every_ci_spec_line_is_a_sig_node_spec() -> None:
    patterns = cri_calls.focus_patterns(SPECS.read_text().splitlines())
    assert len(patterns) >= 10
    assert all(p.startswith(r"\[sig-node\] ") for p in patterns)


def test_calls_after_counts_cri_calls_past_the_offset_only(tmp_path: Path) -> None:
    log = tmp_path / "pycri.log"
    log.write_text(log_line("Version") + "not json\n")
    offset = log.stat().st_size
    with log.open("a") as f:
        f.write(log_line("Exec") + log_line("Exec") + log_line("Status", event="other") + "{broken\n")
    assert cri_calls.calls_after(log, offset) == Counter({"Exec": 2})


def test_calls_after_reads_a_replaced_log_whole(tmp_path: Path) -> None:
    log = tmp_path / "pycri.log"
    log.write_text(log_line("Version"))
    assert cri_calls.calls_after(log, 10_000) == Counter({"Version": 1})


def test_missing_accepts_a_stream_call_for_its_list_call() -> None:
    counts = Counter({name: 1 for group in cri_calls.REQUIRED for name in group[:1]})
    assert cri_calls.missing(counts) == []
    del counts["ListContainers"]
    counts["StreamContainers"] = 1
    assert cri_calls.missing(counts) == []
    del counts["UpdateContainerResources"]
    assert cri_calls.missing(counts) == [("UpdateContainerResources",)]
    assert "MISSING: kubelet made no UpdateContainerResources call" in cri_calls.report(counts)


def test_check_exits_1_only_when_required_and_missing(tmp_path: Path) -> None:
    log = tmp_path / "pycri.log"
    log.write_text(log_line("Version"))
    assert cri_calls.main(["check", str(log), "0"]) == 0
    assert cri_calls.main(["check", str(log), "0", "--require"]) == 1
    assert cri_calls.main(["check", str(log)]) == 2


@pytest.mark.skipif(not E2E_TEST.exists(), reason=f"{E2E_TEST} not built (hack/build-e2e.sh)")
def test_each_ci_focus_selects_exactly_one_conformance_spec_of_e2e_test() -> None:
    """Asked of ginkgo itself (a dry run per expression), whose matcher sees a text that is
    not quite the name it prints."""
    for pattern in cri_calls.focus_patterns(SPECS.read_text().splitlines()):
        listed = subprocess.run(
            [str(E2E_TEST), "--ginkgo.dry-run", "--ginkgo.v", "--ginkgo.no-color",
             f"--ginkgo.focus={pattern}", "--provider=skeleton"],
            capture_output=True, text=True, timeout=300).stdout
        assert "Will run 1 of " in listed, (pattern, listed[-1500:])
        [name] = [line for line in listed.splitlines() if line.startswith("[sig-node] ")]
        assert "[Conformance]" in name, name
