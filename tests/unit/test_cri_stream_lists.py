"""The KEP-5825 Stream* list calls at the servicer level (on new_test_cri_service's
fake-backed RuntimeServicer): the same items as the List call, each once and in order, in
messages of at least one item, none above the bound; filters as the List call's; no message
for an empty list."""
from __future__ import annotations

from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

import grpc
import pytest

from pycri.api.cri import api_pb2 as cri
from pycri.common.errors import NotFound
from pycri.criserver import list_streams
from pycri.criserver.errors import CallInterceptor
from pycri.criserver.image_servicer import ImageServicer
from tests.unit.test_cri_service import (  # noqa: F401 (t is a fixture)
    IMAGE, RUNNING, Aborted, CriUnderTest, FakeContext, t,
)


def streamed(servicer: Any, method: str, request: Any, field: str) -> list[list[Any]]:
    """The items of each message of a Stream* call."""
    return [list(getattr(reply, field)) for reply in getattr(servicer, method)(request, FakeContext())]


def flat(messages: Iterable[list[Any]]) -> list[Any]:
    return [item for message in messages for item in message]


def pod_with_containers(t: CriUnderTest, count: int, name: str = "web") -> tuple[str, list[str]]:
    pod_id = t.run_pod(name)
    return pod_id, [t.create(pod_id, f"c{n}") for n in range(count)]


def test_stream_containers_in_chunks_each_item_once(t: CriUnderTest) -> None:
    pod_id, ids = pod_with_containers(t, 25)
    t.servicer.stream_chunk = (10, list_streams.MAX_BYTES)
    messages = streamed(t.servicer, "StreamContainers", cri.StreamContainersRequest(), "containers")
    assert [len(m) for m in messages] == [10, 10, 5]
    assert flat(messages) == t.containers()  # the List call's items, in its order
    assert sorted(c.id for c in flat(messages)) == sorted(ids)


def test_chunks_stay_under_the_byte_bound(t: CriUnderTest) -> None:
    pod_with_containers(t, 12)
    one = t.containers()[0].ByteSize()
    bound = 3 * one + 40  # three of these containers (and their framing), not four
    t.servicer.stream_chunk = (1000, bound)
    replies = list(t.servicer.StreamContainers(cri.StreamContainersRequest(), FakeContext()))
    assert [len(r.containers) for r in replies] == [3, 3, 3, 3]
    assert all(r.ByteSize() <= bound for r in replies)


def test_an_item_above_the_bound_goes_alone() -> None:
    big, small = cri.Container(id="b" * 500), cri.Container(id="s")
    assert [len(c) for c in list_streams.chunks([small, big, small, small], 1000, 100)] == [1, 1, 2]


def test_an_empty_list_sends_no_message(t: CriUnderTest) -> None:
    assert streamed(t.servicer, "StreamContainers", cri.StreamContainersRequest(), "containers") == []
    assert streamed(t.servicer, "StreamPodSandboxes", cri.StreamPodSandboxesRequest(), "pod_sandboxes") == []
    assert streamed(t.servicer, "StreamContainerStats", cri.StreamContainerStatsRequest(), "container_stats") == []
    assert streamed(t.servicer, "StreamPodSandboxStats", cri.StreamPodSandboxStatsRequest(),
                    "pod_sandbox_stats") == []
    assert streamed(t.servicer, "StreamPodSandboxMetrics", cri.StreamPodSandboxMetricsRequest(),
                    "pod_sandbox_metrics") == []


def test_stream_containers_filters_as_list(t: CriUnderTest) -> None:
    web, web_ids = pod_with_containers(t, 3, "web")
    db, db_ids = pod_with_containers(t, 2, "db")
    t.start(web_ids[0])
    t.servicer.stream_chunk = (2, list_streams.MAX_BYTES)
    for filters in ({"pod_sandbox_id": db}, {"pod_sandbox_id": web[:12]}, {"id": web_ids[1][:20]},
                    {"state": cri.ContainerStateValue(state=RUNNING)}, {"label_selector": {"tier": "front"}},
                    {"label_selector": {"tier": "back"}}):
        request = cri.StreamContainersRequest(filter=cri.ContainerFilter(**filters))
        got = flat(streamed(t.servicer, "StreamContainers", request, "containers"))
        assert got == t.containers(**filters), filters
    request = cri.StreamContainersRequest(filter=cri.ContainerFilter(pod_sandbox_id=db))
    assert sorted(c.id for c in flat(streamed(t.servicer, "StreamContainers", request, "containers"))) == sorted(db_ids)


def test_stream_pod_sandboxes_filters_as_list(t: CriUnderTest) -> None:
    ids = [t.run_pod(f"pod{n}") for n in range(7)]
    t.call("StopPodSandbox", cri.StopPodSandboxRequest(pod_sandbox_id=ids[3]))
    t.servicer.stream_chunk = (3, list_streams.MAX_BYTES)
    messages = streamed(t.servicer, "StreamPodSandboxes", cri.StreamPodSandboxesRequest(), "pod_sandboxes")
    assert [len(m) for m in messages] == [3, 3, 1] and flat(messages) == t.pods()
    for f in (cri.PodSandboxFilter(state=cri.PodSandboxStateValue(state=cri.PodSandboxState.SANDBOX_NOTREADY)),
              cri.PodSandboxFilter(label_selector={"app": "pod5"}), cri.PodSandboxFilter(id=ids[6][:10])):
        got = flat(streamed(t.servicer, "StreamPodSandboxes", cri.StreamPodSandboxesRequest(filter=f), "pod_sandboxes"))
        listed = list(t.call("ListPodSandbox", cri.ListPodSandboxRequest(filter=f)).items)
        assert got == listed and len(got) == 1


def ids_of_stats(stats: Iterable[Any]) -> list[str]:
    return [s.attributes.id for s in stats]


def test_stream_stats_and_metrics_as_list(t: CriUnderTest) -> None:
    pods = [pod_with_containers(t, 3, f"pod{n}") for n in range(3)]
    t.servicer.stream_chunk = (2, list_streams.MAX_BYTES)
    request = cri.StreamContainerStatsRequest(filter=cri.ContainerStatsFilter(pod_sandbox_id=pods[1][0]))
    messages = streamed(t.servicer, "StreamContainerStats", request, "container_stats")
    assert [len(m) for m in messages] == [2, 1] and ids_of_stats(flat(messages)) == pods[1][1]
    listed = t.call("ListContainerStats", cri.ListContainerStatsRequest()).stats
    assert ids_of_stats(flat(streamed(t.servicer, "StreamContainerStats", cri.StreamContainerStatsRequest(),
                                      "container_stats"))) == ids_of_stats(listed)
    messages = streamed(t.servicer, "StreamPodSandboxStats", cri.StreamPodSandboxStatsRequest(), "pod_sandbox_stats")
    assert [len(m) for m in messages] == [2, 1] and ids_of_stats(flat(messages)) == [p for p, _ in pods]
    request = cri.StreamPodSandboxStatsRequest(filter=cri.PodSandboxStatsFilter(label_selector={"app": "pod2"}))
    assert ids_of_stats(flat(streamed(t.servicer, "StreamPodSandboxStats", request, "pod_sandbox_stats"))) == [pods[2][0]]
    messages = streamed(t.servicer, "StreamPodSandboxMetrics", cri.StreamPodSandboxMetricsRequest(),
                        "pod_sandbox_metrics")
    listed_metrics = t.call("ListPodSandboxMetrics", cri.ListPodSandboxMetricsRequest()).pod_metrics
    assert [len(m) for m in messages] == [2, 1]
    assert [m.pod_sandbox_id for m in flat(messages)] == [m.pod_sandbox_id for m in listed_metrics]


def test_stream_images_as_list(t: CriUnderTest) -> None:
    images = ImageServicer(t.servicer.images)
    images.stream_chunk = (1, list_streams.MAX_BYTES)
    messages = streamed(images, "StreamImages", cri.StreamImagesRequest(), "images")
    assert [[i.id for i in m] for m in messages] == [[t.image.id]]
    assert flat(messages) == list(images.ListImages(cri.ListImagesRequest(), FakeContext()).images)
    matching = cri.StreamImagesRequest(filter=cri.ImageFilter(image=cri.ImageSpec(image=IMAGE)))
    assert [i.id for i in flat(streamed(images, "StreamImages", matching, "images"))] == [t.image.id]
    other = cri.StreamImagesRequest(filter=cri.ImageFilter(image=cri.ImageSpec(image="docker.io/library/nginx:1")))
    assert streamed(images, "StreamImages", other, "images") == []


def test_a_domain_error_ends_the_stream_with_its_code() -> None:
    def listed() -> list[Any]:
        raise NotFound("gone")

    def servicer_call(request: Any, context: Any) -> Any:
        return list_streams.stream(context, listed, lambda batch: batch)

    inner = grpc.unary_stream_rpc_method_handler(servicer_call)
    details = SimpleNamespace(method="/runtime.v1.RuntimeService/StreamContainers")
    handler = CallInterceptor().intercept_service(lambda _: inner, details)
    with pytest.raises(Aborted) as aborted:  # the interceptor maps it, as for a unary call
        list(handler.unary_stream(cri.StreamContainersRequest(), FakeContext()))
    assert aborted.value.code == grpc.StatusCode.NOT_FOUND


def test_a_stream_that_ends_itself_keeps_its_status() -> None:
    """The events stream aborts with RESOURCE_EXHAUSTED when its subscriber falls behind: the
    interceptor leaves that status as it is instead of mapping the abort's exception."""
    def servicer_call(request: Any, context: Any) -> Any:
        yield cri.ContainerEventResponse(container_id="a")
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "fell behind")

    inner = grpc.unary_stream_rpc_method_handler(servicer_call)
    details = SimpleNamespace(method="/runtime.v1.RuntimeService/GetContainerEvents")
    handler = CallInterceptor().intercept_service(lambda _: inner, details)
    replies = handler.unary_stream(cri.GetEventsRequest(), FakeContext())
    assert next(replies).container_id == "a"
    with pytest.raises(Aborted) as aborted:
        next(replies)
    assert (aborted.value.code, aborted.value.details) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "fell behind")
