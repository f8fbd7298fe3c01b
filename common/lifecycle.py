"""Life-cycle events of pods and containers, as the domain services publish them (criserver
turns them into CRI's GetContainerEvents stream). The sandbox and container services are
peers, so what both publish lives here, one layer down."""
from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import structlog

log = structlog.get_logger("events")

CREATED, STARTED, STOPPED, DELETED = "created", "started", "stopped", "deleted"


@dataclass(frozen=True)
class LifecycleEvent:
    """`kind` happened to `subject_id` (a container, or the pod itself: then it is `pod_id`)
    at `at` (ns since the epoch)."""

    kind: str
    subject_id: str
    pod_id: str
    at: int


Listener = Callable[[LifecycleEvent], None]


class Publisher:
    """Calls every listener, in the publishing thread, in the order they subscribed. A listener
    that fails is logged and never fails the operation that published."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()

    def subscribe(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def publish(self, event: LifecycleEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("a life-cycle event listener failed", kind=event.kind, subject_id=event.subject_id)
