"""The one place where domain errors become gRPC status codes, and every CRI call is logged."""
from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import structlog

from pycri.common import errors
from pycri.criserver.call_executor import mark
from pycri.criserver.call_log import CallLog
from pycri.criserver.list_replies import passing_encoded

log = structlog.get_logger("cri")

STATUS_OF: dict[type[errors.PycriError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.DataLoss: grpc.StatusCode.DATA_LOSS,
    errors.Unimplemented: grpc.StatusCode.UNIMPLEMENTED,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.Cancelled: grpc.StatusCode.CANCELLED,
    errors.RuntimeFailed: grpc.StatusCode.UNKNOWN,
}

# Request fields worth a log line: ids and names that say what a call was about.
_ID_FIELDS = ("pod_sandbox_id", "container_id")
# The client's bytes in a log line or an error reply are cut (a 15 MiB name once went into every log line)
_MAX_LOGGED = 256
_MAX_MESSAGE = 4096


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    for cls in type(exc).__mro__:
        if cls in STATUS_OF:
            return STATUS_OF[cls], str(exc)
    if isinstance(exc, OSError) and exc.errno in errors.DISK_FULL_ERRNOS:  # wherever it came from
        return grpc.StatusCode.RESOURCE_EXHAUSTED, f"out of disk space: {exc}"
    if isinstance(exc, NotImplementedError):
        return grpc.StatusCode.UNIMPLEMENTED, str(exc) or "not implemented by pycri"
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"


def ids_of(request: Any) -> dict[str, str]:
    found: dict[str, str] = {}
    names, image_field, config_field = _logged_fields(type(request))
    for name in names:
        value = getattr(request, name, "")
        if value:
            found[name] = value
    image = getattr(request, "image", None) if image_field else None
    if image is not None and getattr(image, "image", ""):
        found["image"] = image.image
    metadata = getattr(getattr(request, "config", None), "metadata", None) if config_field else None
    if metadata is not None and getattr(metadata, "name", ""):
        found["name"] = metadata.name
    return {key: clip(value, _MAX_LOGGED) for key, value in found.items()}


@functools.cache
def _logged_fields(kind: type) -> tuple[tuple[str, ...], bool, bool]:
    """Which of the logged fields a request type has (id fields, `image`, `config`): a message's
    fields from its descriptor (asking a message for a field it lacks raises inside getattr),
    every one for anything else."""
    fields = getattr(getattr(kind, "DESCRIPTOR", None), "fields_by_name", None)
    if fields is None:
        return _ID_FIELDS, True, True
    return tuple(n for n in _ID_FIELDS if n in fields), "image" in fields, "config" in fields


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class _Active:
    """The calls under way, as a context manager around each (a class: a generator-based one
    costs more per call), and a condition set when none is."""

    def __init__(self) -> None:
        self.count = 0
        self.idle = threading.Condition()

    def __enter__(self) -> None:
        with self.idle:
            self.count += 1

    def __exit__(self, *exc: object) -> None:
        with self.idle:
            self.count -= 1
            if self.count == 0:
                self.idle.notify_all()


class CallInterceptor(grpc.ServerInterceptor):
    """Logs each call (method, ids, duration, status; for a streaming reply also the messages
    sent) and maps exceptions to status codes, for unary and server-streaming calls alike. It
    also counts the calls under way, so that stopping pycri waits for their handlers: gRPC's
    server.stop() cancels the calls but returns while their threads still run (a pull, say)."""

    def __init__(self, call_log: CallLog | None = None) -> None:
        self._counted = _Active()
        self._log = call_log or CallLog()
        # method -> (the handler gRPC gave, its wrapper): made once per method, not per call
        self._wrapped: dict[str, tuple[Any, Any]] = {}

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no call's handler runs; False if some still did after `timeout` seconds."""
        active = self._counted
        with active.idle:
            return active.idle.wait_for(lambda: active.count == 0, timeout)

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None:
            return handler
        kept = self._wrapped.get(details.method)
        if kept is not None and kept[0] is handler:
            return kept[1]
        wrapped = self._wrap(details.method.rsplit("/", 1)[-1], handler)
        self._wrapped[details.method] = (handler, wrapped)
        return wrapped

    def _wrap(self, method: str, handler: Any) -> Any:
        """The handler of `method`'s calls: `handler`'s behaviour, logged, mapped and counted,
        marked with the method's name (for criserver.call_executor)."""
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                mark(self._unary(method, handler.unary_unary), method),
                request_deserializer=handler.request_deserializer,
                response_serializer=passing_encoded(handler.response_serializer),  # List replies' kept bytes
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                mark(self._streaming(method, handler.unary_stream), method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None:  # pycri.admin.v1 Import: logs and maps its own errors
            return grpc.stream_unary_rpc_method_handler(
                self._counted_only(handler.stream_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _counted_only(self, inner: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        """A call the daemon's stop waits for (before it closes the database), nothing more."""
        def call(requests: Any, context: grpc.ServicerContext) -> Any:
            with self._counted:
                return inner(requests, context)
        return call

    def _unary(self, method: str, inner: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        def call(request: Any, context: grpc.ServicerContext) -> Any:
            start, ids = time.monotonic(), ids_of(request)
            try:
                with self._counted:
                    response = inner(request, context)
            except Exception as exc:  # mapped to a status, never lost
                _fail(context, method, start, ids, exc)
            self._log.ok(method, _ms(start), ids)
            return response
        return call

    def _streaming(self, method: str,
                   inner: Callable[[Any, Any], Iterator[Any]]) -> Callable[[Any, Any], Iterator[Any]]:
        def call(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            start, ids, sent = time.monotonic(), ids_of(request), 0
            try:
                with self._counted:
                    for response in inner(request, context):
                        sent += 1
                        yield response
            except Exception as exc:  # mapped to a status, never lost
                _fail(context, method, start, ids, exc, messages=sent)
            self._log.ok(method, _ms(start), ids, messages=sent)
        return call


def _fail(context: grpc.ServicerContext, method: str, start: float, ids: dict[str, str], exc: Exception,
          **extra: Any) -> None:
    """Log a failed call and end it with the status its exception maps to (context.abort raises)."""
    if _aborted(context):
        raise exc  # the servicer ended the call itself (context.abort): its status stands
    code, message = status_of(exc)
    message = clip(message, _MAX_MESSAGE)
    if isinstance(exc, NotImplementedError):
        message = f"{method} is not implemented by pycri yet"
    fields = dict(method=method, duration_ms=_ms(start), code=code.name, error=message, **extra, **ids)
    if code == grpc.StatusCode.INTERNAL:
        log.exception("cri call failed", **fields)
    else:
        log.info("cri call", **fields)
    context.abort(code, message)


def _aborted(context: Any) -> bool:
    code = getattr(context, "code", None)  # grpc's context.code(); an attribute on test fakes
    code = code() if callable(code) else code
    return code not in (None, grpc.StatusCode.OK)


def _ms(start: float) -> float:
    return round((time.monotonic() - start) * 1000, 2)
