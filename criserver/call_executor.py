"""grpc.server's executor: the quick CRI calls run in gRPC's polling thread, every other call in a pool.

gRPC's sync server hands each call from the thread that polls its completion queue to the
executor; the pool thread then asks for the request message and waits until the polling
thread has received it, runs the handler, and hands the reply back. For a call whose handler
takes ~0.05 ms, those hand-offs between threads (and of the GIL) cost more than the handler:
run in the polling thread, ImageStatus, ListImages and PodSandboxStatus took ~20% less time
and daemon CPU a call (A/B on one daemon, 2026-12). A call of an `inline` method asks for its
request at once, and when the polling thread receives it, runs its handler right there,
before it polls again.

A method may run inline only if its handler never waits for anything slow: no exec, mount,
network or file-system walk, and no lock held across one (while it runs, no other call's
messages move). The quick methods (`QUICK_METHODS`) read what the daemon keeps in memory:

- Version, RuntimeConfig: constants.
- PodSandboxStatus: the pod's record from the sandbox table's copy in memory (store/table.py:
  its lock is held only for dict operations); an id that is not a full one is looked up in
  the database.
- ImageStatus, ListImages: the image catalog in memory (images/records.py: its lock is held
  only for dict operations); right after an image write (before the writer has loaded it
  again) the catalog is read from the database.

- ListPodSandbox: the sandbox table's copy in memory.
- ContainerStatus, ListContainers: the container table's copy in memory, and for a container
  whose monitor may have ended (a `stat` of its exit file and a poll of its monitor's pidfd
  say), its exit file. Recording an exit takes the lock that container changes hold across
  runtime calls (containers/service.py `_transition`); these calls never wait for it
  (`ContainerService.refresh(wait=False)`): while a change holds it, an exit found is left for
  the exit watcher to record, and the container shows its last state until then.

The database's lock (store/db.py) is held only across SQL: a write transaction's statements
and its commit, never across an exec, a mount or the network. So the longest any of them can
wait is one commit. Streaming calls, and calls of any method not named, go to the pool.

The polling thread's side of a call is grpc's own (grpc/_server.py: `_receive_message`,
`_unary_response_in_pool`); where the installed grpc does not have it as this module expects
(`INLINE_SUPPORTED` false), every call goes to the pool.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import structlog

log = structlog.get_logger("pycri")

QUICK_METHODS = frozenset({"Version", "RuntimeConfig", "PodSandboxStatus", "ListPodSandbox", "ContainerStatus",
                           "ListContainers", "ImageStatus", "ListImages"})
METHOD_ATTRIBUTE = "cri_method"  # set on a call's behaviour by the call interceptor (criserver.errors)

try:  # grpc's own steps of a unary call (grpc/_server.py), as of grpcio 1.85
    from grpc import _server as _grpc_server
    from grpc._cython import cygrpc as _cygrpc

    _UNARY_IN_POOL = _grpc_server._unary_response_in_pool
    _UNARY_REQUEST = "_unary_request.<locals>.unary_request"  # what waits for a unary call's request
    _RECEIVE_MESSAGE = _grpc_server._receive_message
    _ABORT = _grpc_server._abort
    _ACTIVE = _grpc_server._is_rpc_state_active
    _RECEIVE_MESSAGE_TOKEN = _grpc_server._RECEIVE_MESSAGE_TOKEN
    _CLOSED = _grpc_server._CLOSED
    _EMPTY_FLAGS = _grpc_server._EMPTY_FLAGS
    _RECEIVE_MESSAGE_OPERATION = _cygrpc.ReceiveMessageOperation
    _UNIMPLEMENTED = _cygrpc.StatusCode.unimplemented
    INLINE_SUPPORTED = True
except (ImportError, AttributeError):  # pragma: no cover - another grpc: every call to the pool
    INLINE_SUPPORTED = False


def cri_method(behavior: Any) -> str | None:
    """The CRI method (its name, "ImageStatus") that the call interceptor marked `behavior` with."""
    return getattr(behavior, METHOD_ATTRIBUTE, None)


def mark(behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
    """Mark a call's behaviour (the interceptor's wrapper) with its method's name."""
    setattr(behavior, METHOD_ATTRIBUTE, method)
    return behavior


class CallExecutor(ThreadPoolExecutor):
    """A thread pool whose `submit`, given a unary call of one of the `inline` methods, runs
    that call in the submitting thread (gRPC's polling thread) once its request arrives."""

    def __init__(self, inline: Iterable[str] = QUICK_METHODS, max_workers: int | None = None,
                 thread_name_prefix: str = "") -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix=thread_name_prefix)
        self.inline = frozenset(inline) if INLINE_SUPPORTED else frozenset()
        if inline and not INLINE_SUPPORTED:
            log.warning("this grpc does not let calls run in its polling thread: every call goes to the pool")

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if self.inline and not kwargs and self.runs_inline(args):
            return _start_inline(fn, *args)
        return super().submit(fn, *args, **kwargs)

    def runs_inline(self, args: tuple[Any, ...]) -> bool:
        """Whether the call grpc submits with `args` (`state.context.run`'s arguments) is a
        unary call of an inline method."""
        return (len(args) == 7 and args[0] is _UNARY_IN_POOL  # a call with one reply...
                and getattr(args[4], "__qualname__", "") == _UNARY_REQUEST  # ...and one request
                and cri_method(args[3]) in self.inline)


def _start_inline(run: Callable[..., Any], in_pool: Callable[..., Any], rpc_event: Any, state: Any,
                  behavior: Any, _unary_request: Callable[[], Any], request_deserializer: Any,
                  response_serializer: Any) -> Future[Any]:
    """Ask for the call's request; when the polling thread receives it, run the call there as
    a pool thread would (grpc's `_unary_response_in_pool`, in the call's context). Called by
    grpc with the call's condition held, as it would start the pool's work."""
    done: Future[Any] = Future()
    done.set_running_or_notify_cancel()
    if not _ACTIVE(state):  # cancelled already (grpc's unary_request returns None then)
        done.set_result(None)
        return done
    call = rpc_event.call
    receive = _RECEIVE_MESSAGE(state, call, request_deserializer)

    def request() -> Any:
        """What grpc's `unary_request` returns once the message has come (or not)."""
        with state.condition:
            message, state.request = state.request, None
            if message is None and state.client is _CLOSED and not state.statused:  # no message at all
                details = '"{}" requires exactly one request message.'.format(rpc_event.call_details.method)
                _ABORT(state, call, _UNIMPLEMENTED, details.encode())  # (grpc's words)
            return message  # None: cancelled, closed or not deserialized; the call has ended

    def received(event: Any) -> Any:
        finished = receive(event)  # the request kept in the call's state (grpc's own step)
        try:
            run(in_pool, rpc_event, state, behavior, request, request_deserializer, response_serializer)
        except Exception as exc:  # noqa: BLE001 - never into gRPC's polling loop (in_pool catches its own)
            log.error("a call run in the polling thread failed", error=repr(exc))
        finally:
            done.set_result(None)
        return finished

    call.start_server_batch((_RECEIVE_MESSAGE_OPERATION(_EMPTY_FLAGS),), received)
    state.due.add(_RECEIVE_MESSAGE_TOKEN)
    return done
