"""GetContainerEvents and the Stream* list calls against a real daemon (its own pycri, as
test_pods.py's), through raw gRPC while crictl drives the pod and its containers."""
from __future__ import annotations

import queue
import threading
import time
from typing import Any

import grpc

from pycri.api.cri import api_pb2 as cri
from pycri.api.cri import api_pb2_grpc

from tests.e2e.harness import Pycri

E = cri.ContainerEventType
DEADLINE = 60.0


class EventReader:
    """A GetContainerEvents subscriber: a thread puts each event on a queue."""

    def __init__(self, pycri: Pycri) -> None:
        joined = pycri.log.read_text().count("container events subscriber joined")
        self.call = pycri.runtime_stub().GetContainerEvents(cri.GetEventsRequest())
        self.events: queue.Queue[cri.ContainerEventResponse] = queue.Queue()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + DEADLINE  # subscribed once the daemon says so
        while pycri.log.read_text().count("container events subscriber joined") == joined:
            assert time.monotonic() < deadline, "the daemon never took the subscription"
            time.sleep(0.05)

    def _read(self) -> None:
        try:
            for event in self.call:
                self.events.put(event)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.CANCELLED, exc

    def next_for(self, subject: str) -> cri.ContainerEventResponse:
        """The next event about `subject` (the pod's and other containers' are passed over)."""
        deadline = time.monotonic() + DEADLINE
        while True:
            event = self.events.get(timeout=max(0.1, deadline - time.monotonic()))
            if event.container_id == subject:
                return event

    def close(self) -> None:
        self.call.cancel()
        self.thread.join(DEADLINE)


def state_of(event: cri.ContainerEventResponse, container_id: str) -> Any:
    return next((s for s in event.containers_statuses if s.id == container_id), None)


def test_container_events_through_crictl(pycri: Pycri) -> None:
    reader = EventReader(pycri)
    try:
        pod_id = pycri.run_pod("events")
        assert reader.next_for(pod_id).container_event_type == E.CONTAINER_CREATED_EVENT
        assert reader.next_for(pod_id).container_event_type == E.CONTAINER_STARTED_EVENT
        # one container exits on its own: its stopped event comes with no List or Status call
        quitter = pycri.run(pod_id, "events", "quitter", ["sh", "-c", "sleep 1; exit 3"])
        for kind, state in ((E.CONTAINER_CREATED_EVENT, cri.ContainerState.CONTAINER_CREATED),
                            (E.CONTAINER_STARTED_EVENT, cri.ContainerState.CONTAINER_RUNNING),
                            (E.CONTAINER_STOPPED_EVENT, cri.ContainerState.CONTAINER_EXITED)):
            event = reader.next_for(quitter)
            assert event.container_event_type == kind
            assert state_of(event, quitter).state == state
            assert event.pod_sandbox_status.id == pod_id
            assert event.pod_sandbox_status.metadata.name == "events"
        assert state_of(event, quitter).exit_code == 3
        pycri.crictl("rm", quitter)
        event = reader.next_for(quitter)
        assert event.container_event_type == E.CONTAINER_DELETED_EVENT and state_of(event, quitter) is None
        # the other is stopped by crictl
        sleeper = pycri.run(pod_id, "events", "sleeper", ["sleep", "1d"])
        assert [reader.next_for(sleeper).container_event_type for _ in range(2)] == [
            E.CONTAINER_CREATED_EVENT, E.CONTAINER_STARTED_EVENT]
        pycri.crictl("stop", "--timeout", "0", sleeper)
        assert reader.next_for(sleeper).container_event_type == E.CONTAINER_STOPPED_EVENT
        pycri.crictl("rm", sleeper)
        assert reader.next_for(sleeper).container_event_type == E.CONTAINER_DELETED_EVENT
        pycri.crictl("stopp", pod_id)
        pycri.crictl("rmp", pod_id)
        assert reader.next_for(pod_id).container_event_type == E.CONTAINER_STOPPED_EVENT
        event = reader.next_for(pod_id)
        assert event.container_event_type == E.CONTAINER_DELETED_EVENT
        assert event.pod_sandbox_status.metadata.uid == "uid-events"
    finally:
        reader.close()
    deadline = time.monotonic() + DEADLINE  # the cancelled subscriber is gone from the daemon
    while "container events subscriber left" not in pycri.log.read_text():
        assert time.monotonic() < deadline, "the daemon kept the cancelled subscriber"
        time.sleep(0.05)


def test_stream_lists_as_list(pycri: Pycri) -> None:
    pod_id = pycri.run_pod("lists")
    ids = [pycri.create(pod_id, "lists", f"c{n}", ["sleep", "1d"]) for n in range(5)]
    stub = pycri.runtime_stub()
    streamed = [c for reply in stub.StreamContainers(cri.StreamContainersRequest()) for c in reply.containers]
    assert sorted(c.id for c in streamed) == sorted(ids)
    assert streamed == list(stub.ListContainers(cri.ListContainersRequest()).containers)
    only = cri.StreamContainersRequest(filter=cri.ContainerFilter(id=ids[2]))
    assert [c.id for reply in stub.StreamContainers(only) for c in reply.containers] == [ids[2]]
    assert [p.id for reply in stub.StreamPodSandboxes(cri.StreamPodSandboxesRequest())
            for p in reply.pod_sandboxes] == [pod_id]
    stats = [s.attributes.id for reply in stub.StreamContainerStats(cri.StreamContainerStatsRequest())
             for s in reply.container_stats]
    assert sorted(stats) == sorted(ids)
    assert [s.attributes.id for reply in stub.StreamPodSandboxStats(cri.StreamPodSandboxStatsRequest())
            for s in reply.pod_sandbox_stats] == [pod_id]
    assert [m.pod_sandbox_id for reply in stub.StreamPodSandboxMetrics(cri.StreamPodSandboxMetricsRequest())
            for m in reply.pod_sandbox_metrics] == [pod_id]
    images = api_pb2_grpc.ImageServiceStub(grpc.insecure_channel(f"unix://{pycri.socket}"))
    streamed_images = [i for reply in images.StreamImages(cri.StreamImagesRequest()) for i in reply.images]
    assert streamed_images == list(images.ListImages(cri.ListImagesRequest()).images)
    absent = cri.StreamContainersRequest(filter=cri.ContainerFilter(pod_sandbox_id="0" * 64))
    assert list(stub.StreamContainers(absent)) == []  # no message, then EOF
