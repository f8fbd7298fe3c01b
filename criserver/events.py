"""GetContainerEvents (kubelet's evented PLEG): the life-cycle events the sandbox and
container services publish, as CRI ContainerEventResponses, to every subscriber in order.

As containerd does (internal/cri/server/container_events.go), each event carries the pod's
status and the statuses of its containers, built once, in the publishing thread, when the
event happens; a pod's own events name the pod as container_id. A pod's deleted event carries
the last status an event gave the pod (kubelet drops events without one).

Each subscriber has a bounded queue: publishing never blocks, and a subscriber that lets its
queue fill up is dropped (its stream ends with RESOURCE_EXHAUSTED; kubelet then relists and
subscribes again). A stream holds one gRPC worker while it lasts and nothing after the client
cancels: the cancel callback closes its queue, which ends the handler's loop."""
from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from typing import Any

import grpc
import structlog

from pycri.api.cri import api_pb2 as cri
from pycri.common import lifecycle
from pycri.common.lifecycle import LifecycleEvent
from pycri.containers.service import ContainerService
from pycri.sandbox.service import SandboxService

log = structlog.get_logger("cri.events")

QUEUE_CAPACITY = 10_000  # events a subscriber may fall behind by before it is dropped
IDLE_CHECK_SECONDS = 5.0  # how often an idle stream checks that its client is still there
EVENT_TYPES = {
    lifecycle.CREATED: cri.ContainerEventType.CONTAINER_CREATED_EVENT,
    lifecycle.STARTED: cri.ContainerEventType.CONTAINER_STARTED_EVENT,
    lifecycle.STOPPED: cri.ContainerEventType.CONTAINER_STOPPED_EVENT,
    lifecycle.DELETED: cri.ContainerEventType.CONTAINER_DELETED_EVENT,
}


class Subscription:
    """One subscriber's queue of events."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.closed = False
        self.overflowed = False
        self._items: deque[cri.ContainerEventResponse] = deque()
        self._cond = threading.Condition()

    def offer(self, item: cri.ContainerEventResponse) -> bool:
        """Queue `item`; False when the subscription is closed or has just overflowed."""
        with self._cond:
            if self.closed:
                return False
            if len(self._items) >= self.capacity:
                self.overflowed = self.closed = True
                self._items.clear()
                self._cond.notify_all()
                return False
            self._items.append(item)
            self._cond.notify_all()
            return True

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._items.clear()
            self._cond.notify_all()

    def next(self, timeout: float | None = None) -> cri.ContainerEventResponse | None:
        """The next event; None when closed, or when `timeout` passed without one (see `closed`)."""
        with self._cond:
            self._cond.wait_for(lambda: self._items or self.closed, timeout)
            if self._items:
                return self._items.popleft()
            return None

    def __len__(self) -> int:
        return len(self._items)


class EventBroadcaster:
    """Hands every event to every subscriber, in the order they were sent."""

    def __init__(self, capacity: int = QUEUE_CAPACITY) -> None:
        self.capacity = capacity
        self._subscribers: set[Subscription] = set()
        self._lock = threading.Lock()

    def subscribe(self) -> Subscription:
        subscription = Subscription(self.capacity)
        with self._lock:
            self._subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        subscription.close()
        with self._lock:
            self._subscribers.discard(subscription)

    def __len__(self) -> int:
        return len(self._subscribers)

    def send(self, item: cri.ContainerEventResponse) -> None:
        with self._lock:
            for subscription in list(self._subscribers):
                if not subscription.offer(item):
                    self._subscribers.discard(subscription)
                    if subscription.overflowed:
                        log.warning("dropped a container events subscriber that fell behind",
                                    queued=subscription.capacity)

    def close(self) -> None:
        """End every subscription (the daemon stops)."""
        with self._lock:
            subscriptions, self._subscribers = self._subscribers, set()
        for subscription in subscriptions:
            subscription.close()


class ContainerEventCalls:
    """GetContainerEvents (mixed into the servicer after PodCalls, whose `sandbox_status` and
    `full_container_status` build the statuses; `watch_lifecycle` wires it to the services)."""

    sandboxes: SandboxService
    containers: ContainerService
    container_events: EventBroadcaster

    def watch_lifecycle(self, capacity: int = QUEUE_CAPACITY) -> None:
        self.container_events = EventBroadcaster(capacity)
        self._last_pod_status: dict[str, cri.PodSandboxStatus] = {}
        self.sandboxes.events.subscribe(self._on_lifecycle_event)
        self.containers.events.subscribe(self._on_lifecycle_event)

    def _on_lifecycle_event(self, event: LifecycleEvent) -> None:
        pod_deleted = event.kind == lifecycle.DELETED and event.subject_id == event.pod_id
        if not len(self.container_events):  # nobody listens: build nothing
            if pod_deleted:
                self._last_pod_status.pop(event.pod_id, None)
            return
        self.container_events.send(self.container_event(event))
        if pod_deleted:
            self._last_pod_status.pop(event.pod_id, None)

    def container_event(self, event: LifecycleEvent) -> cri.ContainerEventResponse:
        """The CRI event for `event`, with the pod's status and its containers' as they are now."""
        response = cri.ContainerEventResponse(container_id=event.subject_id,
                                              container_event_type=EVENT_TYPES[event.kind], created_at=event.at)
        sandbox = self.sandboxes.find(event.pod_id)
        if sandbox is not None:
            status = self.sandbox_status(sandbox)
            self._last_pod_status[sandbox.id] = status
        else:
            status = self._last_pod_status.get(event.pod_id)
        if status is not None:
            response.pod_sandbox_status.CopyFrom(status)
        response.containers_statuses.extend(self.full_container_status(r) for r in self.containers.list(event.pod_id))
        return response

    def GetContainerEvents(self, request: cri.GetEventsRequest, context: Any) -> Iterator[cri.ContainerEventResponse]:
        subscription = self.container_events.subscribe()
        if not context.add_callback(lambda: self.container_events.unsubscribe(subscription)):
            self.container_events.unsubscribe(subscription)  # the call had already ended
        log.info("container events subscriber joined", subscribers=len(self.container_events))
        try:
            while True:
                item = subscription.next(IDLE_CHECK_SECONDS)
                if item is not None:
                    yield item
                elif subscription.closed or not context.is_active():
                    break
        finally:
            self.container_events.unsubscribe(subscription)
            log.info("container events subscriber left", subscribers=len(self.container_events))
        if subscription.overflowed:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"the subscriber fell {subscription.capacity} events behind: subscribe again")
        if context.is_active():  # pycri ended it (it stops), not the client
            context.abort(grpc.StatusCode.UNAVAILABLE, "container events subscription closed by the server")
