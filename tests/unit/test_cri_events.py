"""GetContainerEvents at the servicer level (on new_test_cri_service's fake-backed
RuntimeServicer): the events of pods and containers in order, with the pod's status and its
containers' statuses, to every subscriber; a cancelled subscriber leaves nothing behind; a
container's own exit is noticed by the exit watcher with no List or Status call."""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator

import grpc
import pytest

from pycri.api.cri import api_pb2 as cri
from pycri.containers.exit_watcher import ExitWatcher
from pycri.criserver.events import EventBroadcaster
from tests.unit.test_cri_service import (  # noqa: F401 (t is a fixture)
    CREATED, EXITED, RUNNING, Aborted, CriUnderTest, FakeContext, t,
)

E = cri.ContainerEventType
DEADLINE = 10.0


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


class StreamContext(FakeContext):
    """A server-streaming call's context: the client cancels with `cancel`."""

    def __init__(self) -> None:
        super().__init__()
        self.active = True
        self.callbacks: list[Callable[[], None]] = []

    def add_callback(self, callback: Callable[[], None]) -> bool:
        self.callbacks.append(callback)
        return True

    def is_active(self) -> bool:
        return self.active

    def cancel(self) -> None:
        self.active = False
        for callback in self.callbacks:
            callback()


class Subscriber:
    """A client of GetContainerEvents: a thread drives the stream as a gRPC worker would."""

    def __init__(self, t: CriUnderTest) -> None:
        self.t = t
        self.context = StreamContext()
        self.received: queue.Queue[cri.ContainerEventResponse] = queue.Queue()
        self.error: BaseException | None = None
        before = len(t.servicer.container_events)
        self.thread = threading.Thread(target=self._run, name="test-subscriber")
        self.thread.start()
        wait_for(lambda: len(t.servicer.container_events) > before, "the subscription")

    def _run(self) -> None:
        try:
            for event in self.t.servicer.GetContainerEvents(cri.GetEventsRequest(), self.context):
                self.received.put(event)
        except Aborted as exc:
            self.error = exc

    def take(self, count: int) -> list[cri.ContainerEventResponse]:
        return [self.received.get(timeout=DEADLINE) for _ in range(count)]

    def cancel(self) -> None:
        self.context.cancel()
        self.thread.join(DEADLINE)


@pytest.fixture
def subscribers(t: CriUnderTest) -> Iterator[Callable[[], Subscriber]]:
    made: list[Subscriber] = []

    def subscribe() -> Subscriber:
        made.append(Subscriber(t))
        return made[-1]

    yield subscribe
    for subscriber in made:
        subscriber.cancel()


def kinds(events: list[cri.ContainerEventResponse]) -> list[tuple[str, int]]:
    return [(e.container_id, e.container_event_type) for e in events]


def states(event: cri.ContainerEventResponse) -> dict[str, int]:
    return {s.id: s.state for s in event.containers_statuses}


def test_container_events_in_order_with_statuses(t: CriUnderTest, subscribers: Callable[[], Subscriber]) -> None:
    pod_id = t.run_pod()
    sidecar = t.create(pod_id, "sidecar")
    subscriber = subscribers()
    cid = t.create(pod_id)
    t.start(cid)
    t.call("StopContainer", cri.StopContainerRequest(container_id=cid, timeout=10))
    t.call("RemoveContainer", cri.RemoveContainerRequest(container_id=cid))
    events = subscriber.take(4)
    assert kinds(events) == [(cid, E.CONTAINER_CREATED_EVENT), (cid, E.CONTAINER_STARTED_EVENT),
                             (cid, E.CONTAINER_STOPPED_EVENT), (cid, E.CONTAINER_DELETED_EVENT)]
    assert [states(e) for e in events] == [
        {sidecar: CREATED, cid: CREATED}, {sidecar: CREATED, cid: RUNNING},
        {sidecar: CREATED, cid: EXITED}, {sidecar: CREATED},
    ]
    stamps = [e.created_at for e in events]
    assert stamps == sorted(stamps) and stamps[0] > 0
    for event in events:  # the pod's status as PodSandboxStatus gives it
        assert event.pod_sandbox_status == t.pod_status(pod_id)
    # each container status is what ContainerStatus reports (user and resources too)
    created = next(s for s in events[0].containers_statuses if s.id == cid)
    assert created.user.linux.uid == 0 and created.log_path.endswith("main.log")
    stopped = next(s for s in events[2].containers_statuses if s.id == cid)
    assert stopped.exit_code == 128 + 15 and stopped.finished_at > 0  # SIGTERM, the image's stop signal


def test_pod_events_name_the_pod(t: CriUnderTest, subscribers: Callable[[], Subscriber]) -> None:
    subscriber = subscribers()
    pod_id = t.run_pod()
    t.call("StopPodSandbox", cri.StopPodSandboxRequest(pod_sandbox_id=pod_id))
    t.call("StopPodSandbox", cri.StopPodSandboxRequest(pod_sandbox_id=pod_id))  # already stopped: no event
    t.call("RemovePodSandbox", cri.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
    events = subscriber.take(4)
    assert kinds(events) == [(pod_id, E.CONTAINER_CREATED_EVENT), (pod_id, E.CONTAINER_STARTED_EVENT),
                             (pod_id, E.CONTAINER_STOPPED_EVENT), (pod_id, E.CONTAINER_DELETED_EVENT)]
    ready, notready = cri.PodSandboxState.SANDBOX_READY, cri.PodSandboxState.SANDBOX_NOTREADY
    assert [e.pod_sandbox_status.state for e in events] == [ready, ready, notready, notready]
    # the deleted pod is gone: its event carries the last status (kubelet ignores events without one)
    assert events[3].pod_sandbox_status.metadata.uid == "uid-web"
    assert subscriber.received.empty()


def test_removing_a_pod_sends_its_containers_events_then_its_own(
        t: CriUnderTest, subscribers: Callable[[], Subscriber]) -> None:
    pod_id = t.run_pod()
    cid = t.create(pod_id)
    t.start(cid)
    subscriber = subscribers()
    t.call("StopPodSandbox", cri.StopPodSandboxRequest(pod_sandbox_id=pod_id))
    t.call("RemovePodSandbox", cri.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
    assert kinds(subscriber.take(4)) == [(cid, E.CONTAINER_STOPPED_EVENT), (pod_id, E.CONTAINER_STOPPED_EVENT),
                                         (cid, E.CONTAINER_DELETED_EVENT), (pod_id, E.CONTAINER_DELETED_EVENT)]


def test_every_subscriber_gets_every_event(t: CriUnderTest, subscribers: Callable[[], Subscriber]) -> None:
    first, second = subscribers(), subscribers()
    pod_id = t.run_pod()
    cid = t.create(pod_id)
    t.start(cid)
    one, two = first.take(4), second.take(4)
    assert one == two
    assert kinds(one) == [(pod_id, E.CONTAINER_CREATED_EVENT), (pod_id, E.CONTAINER_STARTED_EVENT),
                          (cid, E.CONTAINER_CREATED_EVENT), (cid, E.CONTAINER_STARTED_EVENT)]


def test_a_cancelled_subscriber_leaves_no_thread_or_queue(t: CriUnderTest) -> None:
    threads = threading.active_count()
    subscriber = Subscriber(t)
    assert len(t.servicer.container_events) == 1
    subscriber.cancel()
    assert not subscriber.thread.is_alive()
    assert len(t.servicer.container_events) == 0
    assert threading.active_count() == threads
    assert subscriber.error is None  # the client ended it: no error status
    t.run_pod()  # nobody listens: nothing is built or queued
    assert subscriber.received.empty()


def test_a_self_exit_is_noticed_without_a_list_or_status_call(
        t: CriUnderTest, subscribers: Callable[[], Subscriber]) -> None:
    pod_id = t.run_pod()
    cid = t.create(pod_id)
    t.start(cid)
    subscriber = subscribers()
    watcher = ExitWatcher(t.container_service, interval=0.02).start()
    try:
        t.handler.exit(cid, 3)  # the container exits and its monitor writes the exit file
        (t.container_service.exits / cid).write_text("3")
        [event] = subscriber.take(1)
    finally:
        watcher.stop()
    assert kinds([event]) == [(cid, E.CONTAINER_STOPPED_EVENT)]
    assert states(event) == {cid: EXITED}
    assert event.containers_statuses[0].exit_code == 3
    assert t.container_service.table.get(cid).state == "exited"  # noticed and recorded


def test_an_exit_noticed_twice_is_one_event(t: CriUnderTest, subscribers: Callable[[], Subscriber]) -> None:
    pod_id = t.run_pod()
    cid = t.create(pod_id)
    t.start(cid)
    subscriber = subscribers()
    stale = [t.container_service.table.get(cid) for _ in range(2)]  # two threads' copies of the running row
    t.handler.exit(cid, 0)
    for record in stale:
        t.container_service.refresh(record)
    t.status(cid)
    [event] = subscriber.take(1)
    assert event.container_event_type == E.CONTAINER_STOPPED_EVENT
    t.call("RemoveContainer", cri.RemoveContainerRequest(container_id=cid))
    assert kinds(subscriber.take(1)) == [(cid, E.CONTAINER_DELETED_EVENT)]


def test_a_failed_create_sends_nothing(t: CriUnderTest, subscribers: Callable[[], Subscriber]) -> None:
    pod_id = t.run_pod()
    subscriber = subscribers()
    t.handler.failures["create"] = RuntimeError("runtime says no")
    with pytest.raises(Aborted):
        t.create(pod_id)
    t.handler.failures.clear()
    cid = t.create(pod_id)
    assert kinds(subscriber.take(1)) == [(cid, E.CONTAINER_CREATED_EVENT)]


def test_a_slow_subscriber_is_dropped_and_never_blocks() -> None:
    broadcaster = EventBroadcaster(capacity=2)
    slow, fast = broadcaster.subscribe(), broadcaster.subscribe()
    for n in range(3):
        broadcaster.send(cri.ContainerEventResponse(container_id=str(n)))
        assert fast.next(0) is not None
    assert slow.overflowed and slow.closed and len(broadcaster) == 1
    assert slow.next(0) is None


def test_a_dropped_stream_ends_with_resource_exhausted(t: CriUnderTest) -> None:
    t.servicer.container_events = EventBroadcaster(capacity=1)
    context = StreamContext()
    stream = t.servicer.GetContainerEvents(cri.GetEventsRequest(), context)
    codes: list[grpc.StatusCode] = []

    def read_one() -> None:  # a client that reads one event, then stalls
        try:
            next(stream)
        except Aborted as exc:  # it fell behind before it read that one
            codes.append(exc.code)

    reader = threading.Thread(target=read_one)
    reader.start()
    wait_for(lambda: len(t.servicer.container_events) == 1, "the subscription")
    pod_id = t.run_pod()
    t.call("StopPodSandbox", cri.StopPodSandboxRequest(pod_sandbox_id=pod_id))
    t.call("RemovePodSandbox", cri.RemovePodSandboxRequest(pod_sandbox_id=pod_id))  # never blocked
    reader.join(DEADLINE)
    assert len(t.servicer.container_events) == 0
    if not codes:
        with pytest.raises(Aborted) as aborted:
            list(stream)
        codes.append(aborted.value.code)
    assert codes == [grpc.StatusCode.RESOURCE_EXHAUSTED]


def test_the_server_closing_ends_streams_with_unavailable(t: CriUnderTest) -> None:
    subscriber = Subscriber(t)
    t.servicer.container_events.close()
    subscriber.thread.join(DEADLINE)
    assert isinstance(subscriber.error, Aborted) and subscriber.error.code == grpc.StatusCode.UNAVAILABLE
