"""criserver/call_executor.py: which calls run in gRPC's polling thread and which in the pool,
over a real gRPC server on a unix socket (with the call interceptor, as the daemon has it)."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import grpc
import pytest

from pycri.api.cri import api_pb2 as cri
from pycri.api.cri import api_pb2_grpc
from pycri.common.errors import NotFound
from pycri.criserver import call_executor
from pycri.criserver.call_executor import QUICK_METHODS, CallExecutor, mark
from pycri.criserver.errors import CallInterceptor

POOL = "cri-pool"
WAIT = 60.0  # seconds: generous, only so that a broken executor fails instead of hanging


class Servicer(api_pb2_grpc.RuntimeServiceServicer):
    """Records the thread each call ran in; some calls wait for events or fail on request."""

    def __init__(self) -> None:
        self.threads: dict[str, str] = {}
        self.release = threading.Event()  # ContainerStatus waits for it when `hold` is set
        self.hold = False
        self.version_seen = threading.Event()
        self.fail_with: BaseException | None = None

    def _ran(self, method: str) -> None:
        self.threads[method] = threading.current_thread().name

    def Version(self, request: cri.VersionRequest, context: Any) -> cri.VersionResponse:
        self._ran("Version")
        self.version_seen.set()
        if self.fail_with is not None:
            raise self.fail_with
        if request.version == "abort":
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "no")
        return cri.VersionResponse(runtime_name="test")

    def RuntimeConfig(self, request: cri.RuntimeConfigRequest, context: Any) -> cri.RuntimeConfigResponse:
        self._ran("RuntimeConfig")
        return cri.RuntimeConfigResponse()

    def ContainerStatus(self, request: cri.ContainerStatusRequest, context: Any) -> cri.ContainerStatusResponse:
        self._ran("ContainerStatus")
        if request.container_id == "wait-for-version":
            assert self.version_seen.wait(WAIT)
        elif self.hold:
            assert self.release.wait(WAIT)
        return cri.ContainerStatusResponse(status=cri.ContainerStatus(id=request.container_id))

    def GetContainerEvents(self, request: cri.GetEventsRequest, context: Any) -> Iterator[cri.ContainerEventResponse]:
        self._ran("GetContainerEvents")
        yield cri.ContainerEventResponse(container_id="c1")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Servicer, api_pb2_grpc.RuntimeServiceStub, grpc.Channel]]:
    servicer = Servicer()
    # GetContainerEvents is named, but a stream never runs inline
    server = grpc.server(CallExecutor({"Version", "GetContainerEvents"}, max_workers=4, thread_name_prefix=POOL),
                         interceptors=[CallInterceptor()])
    api_pb2_grpc.add_RuntimeServiceServicer_to_server(servicer, server)
    server.add_insecure_port(f"unix:{tmp_path / 'cri.sock'}")
    server.start()
    try:
        with grpc.insecure_channel(f"unix:{tmp_path / 'cri.sock'}") as channel:
            yield servicer, api_pb2_grpc.RuntimeServiceStub(channel), channel
    finally:
        servicer.release.set()
        server.stop(None).wait()


def test_the_installed_grpc_lets_calls_run_inline() -> None:
    assert call_executor.INLINE_SUPPORTED  # a grpc upgrade that breaks it must not pass unnoticed


def test_named_unary_calls_run_in_the_polling_thread_the_rest_in_the_pool(served: Any) -> None:
    servicer, stub, _ = served
    assert stub.Version(cri.VersionRequest(), timeout=WAIT).runtime_name == "test"
    assert stub.RuntimeConfig(cri.RuntimeConfigRequest(), timeout=WAIT) == cri.RuntimeConfigResponse()
    assert stub.ContainerStatus(cri.ContainerStatusRequest(container_id="c1"), timeout=WAIT).status.id == "c1"
    assert [e.container_id for e in stub.GetContainerEvents(cri.GetEventsRequest(), timeout=WAIT)] == ["c1"]
    assert not servicer.threads["Version"].startswith(POOL)
    assert servicer.threads["RuntimeConfig"].startswith(POOL)  # not named here
    assert servicer.threads["ContainerStatus"].startswith(POOL)
    assert servicer.threads["GetContainerEvents"].startswith(POOL)  # a stream


def test_an_unmarked_behaviour_or_another_kind_of_call_goes_to_the_pool() -> None:
    executor = CallExecutor({"Version"}, max_workers=1)
    try:
        def unary_request() -> None:
            return None
        unary_request.__qualname__ = "_unary_request.<locals>.unary_request"

        def behaviour(request: Any, context: Any) -> None:
            return None

        args = [call_executor._UNARY_IN_POOL, None, None, behaviour, unary_request, None, None]
        assert not executor.runs_inline(tuple(args))  # no method
        mark(behaviour, "ContainerStatus")
        assert not executor.runs_inline(tuple(args))  # a method not named
        mark(behaviour, "Version")
        assert executor.runs_inline(tuple(args))
        assert not executor.runs_inline(tuple(args[:4] + [lambda: iter(())] + args[5:]))  # a request stream
        assert not executor.runs_inline((print, *args[1:]))  # not a unary reply
        assert executor.submit(lambda: 42).result(WAIT) == 42  # anything else: the pool's
    finally:
        executor.shutdown()


def test_the_daemons_quick_methods_are_status_and_list_reads_only() -> None:
    # each was checked not to wait on a lock held across a slow operation (call_executor's docstring)
    assert QUICK_METHODS == {"Version", "RuntimeConfig", "PodSandboxStatus", "ListPodSandbox", "ContainerStatus",
                             "ListContainers", "ImageStatus", "ListImages"}


def test_an_error_in_an_inline_call_maps_to_its_status(served: Any) -> None:
    servicer, stub, _ = served
    for error, code in ((NotFound("pod x not found"), grpc.StatusCode.NOT_FOUND),
                        (RuntimeError("boom"), grpc.StatusCode.INTERNAL)):
        servicer.fail_with = error
        with pytest.raises(grpc.RpcError) as failed:
            stub.Version(cri.VersionRequest(), timeout=WAIT)
        assert failed.value.code() == code
        assert str(error) in failed.value.details()
    servicer.fail_with = None
    with pytest.raises(grpc.RpcError) as aborted:
        stub.Version(cri.VersionRequest(version="abort"), timeout=WAIT)
    assert (aborted.value.code(), aborted.value.details()) == (grpc.StatusCode.PERMISSION_DENIED, "no")
    assert not servicer.threads["Version"].startswith(POOL)
    assert stub.Version(cri.VersionRequest(), timeout=WAIT).runtime_name == "test"  # the server goes on


def test_a_request_that_does_not_parse_fails_inline_as_in_the_pool(served: Any) -> None:
    _, _, channel = served
    codes = []
    for method in ("Version", "ContainerStatus"):
        raw = channel.unary_unary(f"/runtime.v1.RuntimeService/{method}", request_serializer=lambda b: b,
                                  response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as failed:
            raw(b"\xff\xff\xff", timeout=WAIT)
        codes.append(failed.value.code())
    assert codes == [grpc.StatusCode.INTERNAL, grpc.StatusCode.INTERNAL]


def test_a_slow_call_in_the_pool_does_not_hold_up_an_inline_one(served: Any) -> None:
    servicer, stub, _ = served
    servicer.hold = True
    slow: Future[Any] = stub.ContainerStatus.future(cri.ContainerStatusRequest(container_id="slow"), timeout=WAIT)
    assert stub.Version(cri.VersionRequest(), timeout=WAIT).runtime_name == "test"  # while it waits
    assert not slow.done()
    servicer.release.set()
    assert slow.result(WAIT).status.id == "slow"


def test_inline_calls_go_on_while_a_pool_call_runs_and_it_sees_them(served: Any) -> None:
    servicer, stub, _ = served
    # the pool call waits for an inline call's handler to have run: neither waits for the other
    waiting: Future[Any] = stub.ContainerStatus.future(cri.ContainerStatusRequest(container_id="wait-for-version"),
                                                       timeout=WAIT)
    for _ in range(3):
        assert stub.Version(cri.VersionRequest(), timeout=WAIT).runtime_name == "test"
    assert waiting.result(WAIT).status.id == "wait-for-version"
    assert servicer.threads["ContainerStatus"].startswith(POOL)


def test_the_interceptor_wraps_a_methods_handler_once() -> None:
    interceptor = CallInterceptor()

    def version(request: Any, context: Any) -> cri.VersionResponse:
        return cri.VersionResponse()

    handler = grpc.unary_unary_rpc_method_handler(version)
    details = type("Details", (), {"method": "/runtime.v1.RuntimeService/Version"})()
    first = interceptor.intercept_service(lambda _: handler, details)
    assert interceptor.intercept_service(lambda _: handler, details) is first
    assert call_executor.cri_method(first.unary_unary) == "Version"
    other = grpc.unary_unary_rpc_method_handler(version)  # another handler for the method: wrapped anew
    assert interceptor.intercept_service(lambda _: other, details) is not first
    assert interceptor.intercept_service(lambda _: None, details) is None


def test_the_quick_methods_do_not_wait_for_the_locks_slow_operations_hold(tmp_path: Path) -> None:
    """Each quick method answers while another thread holds every lock that a create, a stop,
    a pull or a remove holds across its slow steps (a runtime call, a mount, a download, the
    network): run in the polling thread, none may wait for one."""
    from pycri.criserver.image_servicer import ImageServicer
    from pycri.sandbox import namespaces
    from tests.unit.test_cri_service import FakeContext, new_test_cri_service

    t = new_test_cri_service(tmp_path)
    pod_id = t.run_pod()
    running, exited = (t.create(pod_id, name) for name in ("running", "exited"))
    t.start(running)
    t.start(exited)
    t.handler.exit(exited, 1)  # an exit not recorded yet: the calls below find it with the lock held
    containers, images = t.servicer.containers, t.servicer.images
    image_servicer = ImageServicer(images, containers.image_users)
    locks = [containers._transition, containers._configs_lock, images._use_lock, images.puller.leases.lock,
             namespaces._lock]
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        for lock in locks:
            lock.acquire()
        held.set()
        release.wait(WAIT)
        for lock in reversed(locks):
            lock.release()

    holder = threading.Thread(target=hold)
    holder.start()
    answered: dict[str, Any] = {}

    def quick_calls() -> None:
        answered["Version"] = t.call("Version", cri.VersionRequest())
        answered["RuntimeConfig"] = t.call("RuntimeConfig", cri.RuntimeConfigRequest())
        answered["PodSandboxStatus"] = t.pod_status(pod_id)
        answered["ListPodSandbox"] = t.pods()
        answered["ContainerStatus"] = [t.status(running), t.status(exited)]
        answered["ListContainers"] = t.containers()
        image = cri.ImageSpec(image=t.image.repo_tags[0])
        answered["ImageStatus"] = image_servicer.ImageStatus(cri.ImageStatusRequest(image=image), FakeContext())
        answered["ListImages"] = image_servicer.ListImages(cri.ListImagesRequest(), FakeContext())

    try:
        assert held.wait(WAIT)
        caller = threading.Thread(target=quick_calls)
        caller.start()
        caller.join(WAIT)  # (returns at once when they do not wait: WAIT only bounds a failure)
        assert not caller.is_alive(), "a quick method waited for a lock a slow operation holds"
    finally:
        release.set()
        holder.join(WAIT)
    assert set(answered) == QUICK_METHODS
    assert answered["PodSandboxStatus"].id == pod_id
    assert [p.id for p in answered["ListPodSandbox"]] == [pod_id]
    # the exit stays for the exit watcher (or the change under way) to record
    assert [s.state for s in answered["ContainerStatus"]] == [cri.CONTAINER_RUNNING] * 2
    assert {c.id: c.state for c in answered["ListContainers"]} == {running: cri.CONTAINER_RUNNING,
                                                                  exited: cri.CONTAINER_RUNNING}
    assert t.status(exited).state == cri.CONTAINER_EXITED  # (once the lock is free)
    assert answered["ImageStatus"].image.id == t.image.id
    assert [i.id for i in answered["ListImages"].images] == [t.image.id]
