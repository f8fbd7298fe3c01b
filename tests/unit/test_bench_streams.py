"""hack/bench/streams.py without a daemon: the kubelet-like configs, the checks of a row and
the table (a refused List reply, a failed stream), and the table printed again from a file."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from hack.bench import streams
from hack.bench.streams import CALLS, Outcome, Row


def test_kubelet_like_configs_carry_kubelets_labels_and_a_pod_cgroup_each(tmp_path: Path) -> None:
    daemon = SimpleNamespace(work=tmp_path, cgroup_parent="/bench")
    pods = [streams.pod_config(daemon, i) for i in (0, 1)]  # type: ignore[arg-type]
    assert {"io.kubernetes.pod.name", "io.kubernetes.pod.namespace", "io.kubernetes.pod.uid"} <= set(pods[0].labels)
    assert "kubernetes.io/config.seen" in pods[0].annotations and len(pods[0].annotations) >= 10
    assert pods[0].linux.cgroup_parent != pods[1].linux.cgroup_parent  # a pod cgroup each, as kubelet's
    assert pods[0].linux.cgroup_parent.startswith("/bench/")
    container = streams.container_config(pods[0], 3)
    assert set(container.labels) == {"io.kubernetes.pod.name", "io.kubernetes.pod.namespace",
                                      "io.kubernetes.pod.uid", "io.kubernetes.container.name"}
    assert container.labels["io.kubernetes.pod.uid"] == pods[0].metadata.uid
    assert json.loads(container.annotations["io.kubernetes.container.ports"])[0]["containerPort"] == 8083


def outcome(code: str = "OK", keys: list[str] | None = None, largest: int = 100) -> Outcome:
    keys = ["a", "b"] if keys is None else keys
    return Outcome(items=len(keys), messages=1, bytes=largest, largest=largest, ms=5.0, code=code,
                   details="" if code == "OK" else "Sent message larger than max", keys=keys)


def test_check_row_finds_a_failed_stream_a_big_message_and_an_item_twice() -> None:
    call = CALLS[0]
    assert streams.check_row(Row(call, [outcome()], [outcome()])) == []
    problems = streams.check_row(Row(call, [outcome("DEADLINE_EXCEEDED", []), outcome(keys=["a", "a"]),
                                            outcome(largest=streams.KUBELET_MAX_MSG + 1)],
                                     [outcome(), outcome(), outcome()]))
    assert len(problems) == 4  # the failure; the item twice (and so differing from the List's); the big message
    assert any("DEADLINE_EXCEEDED" in p for p in problems) and any("items twice" in p for p in problems)
    assert any("above kubelet's" in p for p in problems)


def test_the_table_says_refused_and_prints_again_from_its_file(tmp_path: Path) -> None:
    metrics = next(c for c in CALLS if c.stream == "StreamPodSandboxMetrics")
    rows = [Row(CALLS[0], [outcome(), outcome()], [outcome(), outcome()]),
            Row(metrics, [outcome(largest=4 << 20)], [outcome("RESOURCE_EXHAUSTED", [])])]
    text = streams.table(rows, 5000, "1.00 1.00 1.00")
    assert "| ListContainers | 2 |" in text and "fits (OK)" in text
    assert "**refused** (RESOURCE_EXHAUSTED" in text
    saved = tmp_path / "streams-5000.json"
    saved.write_text(json.dumps({"containers": 5000, "load": "1.00 1.00 1.00", "rows": streams.summary(rows)}))
    assert streams.table_from_file(saved) == text
