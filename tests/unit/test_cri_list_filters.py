"""ListPodSandbox's and ListContainers' filters as tests of a record (criserver/pods.py): every
condition that is set must hold; an empty filter keeps everything without testing anything."""
from __future__ import annotations

from types import SimpleNamespace

from pycri.api.cri import api_pb2 as cri
from pycri.criserver import pods
from pycri.sandbox.records import READY


def sandbox(id: str, state: str = READY, **labels: str) -> SimpleNamespace:
    return SimpleNamespace(id=id, state=state, labels=labels)


def test_an_empty_selector_matches_and_a_set_one_must_hold() -> None:
    assert pods.matches_labels({"a": "1"}, cri.PodSandboxFilter().label_selector)
    assert pods.matches_labels({"a": "1"}, {}) and pods.matches_labels({}, {})
    assert pods.matches_labels({"a": "1", "b": "2"}, {"a": "1"}) and not pods.matches_labels({"a": "2"}, {"a": "1"})
    assert not pods.matches_labels({}, cri.PodSandboxFilter(label_selector={"a": "1"}).label_selector)


def test_sandbox_filter() -> None:
    assert pods._sandbox_filter(cri.PodSandboxFilter()) is None
    records = [sandbox("abc1", app="web"), sandbox("abc2", state="notready", app="web"), sandbox("xyz", app="db")]

    def kept(**fields: object) -> list[str]:
        keep = pods._sandbox_filter(cri.PodSandboxFilter(**fields))  # type: ignore[arg-type]
        assert keep is not None
        return [r.id for r in records if keep(r)]

    assert kept(id="abc") == ["abc1", "abc2"]
    assert kept(state=cri.PodSandboxStateValue(state=cri.SANDBOX_READY)) == ["abc1", "xyz"]
    assert kept(state=cri.PodSandboxStateValue(state=cri.SANDBOX_NOTREADY)) == ["abc2"]
    assert kept(label_selector={"app": "web"}) == ["abc1", "abc2"]
    assert kept(id="abc", state=cri.PodSandboxStateValue(state=cri.SANDBOX_READY), label_selector={"app": "web"}) == ["abc1"]
    assert kept(id="abc", label_selector={"app": "db"}) == []


def test_container_filter() -> None:
    assert pods.container_filter(cri.ContainerFilter()) is pods._everything
    records = [SimpleNamespace(id="c1", pod_id="p1", labels={"n": "web"}),
               SimpleNamespace(id="c2", pod_id="p2", labels={"n": "web"}),
               SimpleNamespace(id="d3", pod_id="p1", labels={"n": "db"})]

    def kept(**fields: object) -> list[str]:
        keep = pods.container_filter(cri.ContainerFilter(**fields))  # type: ignore[arg-type]
        return [r.id for r in records if keep(r)]

    assert kept(id="c") == ["c1", "c2"]
    assert kept(pod_sandbox_id="p1") == ["c1", "d3"]
    assert kept(label_selector={"n": "web"}) == ["c1", "c2"]
    assert kept(pod_sandbox_id="p1", label_selector={"n": "web"}, id="c") == ["c1"]
    # ListContainerStats' filter has the same fields, and goes through the same test
    stats_keep = pods.container_filter(cri.ContainerStatsFilter(pod_sandbox_id="p1", label_selector={"n": "web"}))
    assert [r.id for r in records if stats_keep(r)] == ["c1"]
    assert pods.container_filter(cri.ContainerStatsFilter()) is pods._everything
