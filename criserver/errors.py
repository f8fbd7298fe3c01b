"""The one place where domain errors become gRPC status codes, and every CRI call is logged."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc
import structlog

from pycri.common import errors

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
    for name in _ID_FIELDS:
        value = getattr(request, name, "")
        if value:
            found[name] = value
    image = getattr(request, "image", None)
    if image is not None and getattr(image, "image", ""):
        found["image"] = image.image
    metadata = getattr(getattr(request, "config", None), "metadata", None)
    if metadata is not None and getattr(metadata, "name", ""):
        found["name"] = metadata.name
    return {key: clip(value, _MAX_LOGGED) for key, value in found.items()}


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class CallInterceptor(grpc.ServerInterceptor):
    """Logs each call (method, ids, duration, status) and maps exceptions to status codes."""

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = details.method.rsplit("/", 1)[-1]
        inner = handler.unary_unary

        def call(request: Any, context: grpc.ServicerContext) -> Any:
            start = time.monotonic()
            ids = ids_of(request)
            try:
                response = inner(request, context)
            except Exception as exc:  # mapped to a status below, never lost
                code, message = status_of(exc)
                message = clip(message, _MAX_MESSAGE)
                if isinstance(exc, NotImplementedError):
                    message = f"{method} is not implemented by pycri yet"
                fields = dict(method=method, duration_ms=_ms(start), code=code.name, error=message, **ids)
                if code == grpc.StatusCode.INTERNAL:
                    log.exception("cri call failed", **fields)
                else:
                    log.info("cri call", **fields)
                context.abort(code, message)
            log.info("cri call", method=method, duration_ms=_ms(start), code="OK", **ids)
            return response

        return grpc.unary_unary_rpc_method_handler(
            call,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _ms(start: float) -> float:
    return round((time.monotonic() - start) * 1000, 2)
