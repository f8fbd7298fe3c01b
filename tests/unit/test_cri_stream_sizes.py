"""The KEP-5825 Stream* calls at the sizes that make them needed: each message under kubelet's
receive limit (k8s.io/cri-client v0.37.2 pkg/utils.go `maxMsgSize = 1024 * 1024 * 16`)
whatever the count, bounded by bytes and not only by items; each item exactly once, also
when the list changes while the stream is being sent."""
from __future__ import annotations

import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest

from pycri.api.cri import api_pb2 as cri
from pycri.api.cri import api_pb2_grpc as cri_grpc
from pycri.criserver import list_streams
from pycri.criserver.errors import CallInterceptor
from pycri.criserver.server import MAX_MESSAGE_BYTES
from tests.unit.test_cri_service import CriUnderTest, FakeContext, t  # noqa: F401 (t is a fixture)

KUBELET_MAX_MSG = 16 * 1024 * 1024  # kubelet's grpc.MaxCallRecvMsgSize, on its runtime and image clients


def big_container(n: int, label_bytes: int) -> cri.Container:
    """A container with kubelet's four labels and ten annotations of `label_bytes` in all."""
    labels = {"io.kubernetes.pod.name": f"pod-{n // 10}", "io.kubernetes.pod.namespace": "default",
              "io.kubernetes.pod.uid": f"uid-{n // 10}", "io.kubernetes.container.name": f"c{n % 10}"}
    annotations = {f"example.com/note-{k}": chr(ord("a") + k) * (label_bytes // 10) for k in range(10)}
    return cri.Container(id=f"{n:064x}", pod_sandbox_id=f"{n // 10:064x}",
                         metadata=cri.ContainerMetadata(name=f"c{n % 10}"), image=cri.ImageSpec(image="busybox"),
                         image_ref="sha256:" + "0" * 64, state=cri.CONTAINER_RUNNING, created_at=n,
                         labels=labels, annotations=annotations)


class ManyContainers(cri_grpc.RuntimeServiceServicer):
    """ListContainers and StreamContainers over a fixed list, as pycri's servicer answers them."""

    def __init__(self, containers: list[cri.Container]) -> None:
        self.containers = containers

    def ListContainers(self, request: Any, context: Any) -> cri.ListContainersResponse:
        return cri.ListContainersResponse(containers=self.containers)

    def StreamContainers(self, request: Any, context: Any) -> Iterator[cri.StreamContainersResponse]:
        return list_streams.stream(context, lambda: self.containers,
                                   lambda batch: cri.StreamContainersResponse(containers=batch))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ManyContainers, grpc.Channel]]:
    """A gRPC server with the daemon's message limits, and a channel with kubelet's."""
    servicer = ManyContainers([])
    server = grpc.server(ThreadPoolExecutor(max_workers=2), interceptors=[CallInterceptor()],
                         options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                                  ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)])
    cri_grpc.add_RuntimeServiceServicer_to_server(servicer, server)
    socket = tmp_path / "cri.sock"
    server.add_insecure_port(f"unix:{socket}")
    server.start()
    channel = grpc.insecure_channel(f"unix:{socket}",
                                    options=[("grpc.max_receive_message_length", KUBELET_MAX_MSG)])
    yield servicer, channel
    channel.close()
    server.stop(0).wait()


def test_the_bound_leaves_room_under_kubelets_limit() -> None:
    assert list_streams.MAX_BYTES <= KUBELET_MAX_MSG // 2
    assert MAX_MESSAGE_BYTES >= KUBELET_MAX_MSG  # the daemon may send what kubelet may receive


def test_5000_containers_with_big_labels_stream_where_the_list_is_refused(
        served: tuple[ManyContainers, grpc.Channel]) -> None:
    """5,000 containers of ~5 KB (25 MB): ListContainers is refused for its size, as kubelet
    would see it; StreamContainers carries them all, once each and in order, in messages
    under the bound."""
    servicer, channel = served
    servicer.containers = [big_container(n, 5000) for n in range(5000)]
    total = sum(c.ByteSize() for c in servicer.containers)
    assert total > KUBELET_MAX_MSG
    stub = cri_grpc.RuntimeServiceStub(channel)
    with pytest.raises(grpc.RpcError) as refused:
        stub.ListContainers(cri.ListContainersRequest(), timeout=60)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    replies = list(stub.StreamContainers(cri.StreamContainersRequest(), timeout=60))
    sizes = [r.ByteSize() for r in replies]
    assert max(sizes) <= list_streams.MAX_BYTES
    assert len(replies) >= total // list_streams.MAX_BYTES + 1  # cut by bytes: far fewer than 1000 a message
    assert all(len(r.containers) < list_streams.MAX_ITEMS for r in replies)
    ids = [c.id for r in replies for c in r.containers]
    assert ids == [c.id for c in servicer.containers]


def test_many_small_items_are_cut_by_count(served: tuple[ManyContainers, grpc.Channel]) -> None:
    servicer, channel = served
    servicer.containers = [cri.Container(id=f"{n:064x}") for n in range(5000)]
    replies = list(cri_grpc.RuntimeServiceStub(channel).StreamContainers(cri.StreamContainersRequest(), timeout=60))
    assert [len(r.containers) for r in replies] == [list_streams.MAX_ITEMS] * 5
    assert [c.id for r in replies for c in r.containers] == [c.id for c in servicer.containers]


@pytest.mark.parametrize("seed", range(3))
def test_every_message_stays_under_the_bound_at_any_item_size(seed: int) -> None:
    """Items of sizes about the varint steps of their length prefix (127/128, 16383/16384,
    2097151/2097152 bytes), cut at bounds near them: every message of more than one item is
    at most the bound, as encoded, and the items come out as they went in."""
    rng = random.Random(seed)
    steps = (1, 126, 127, 128, 129, 16382, 16383, 16384, 16385, 2097150, 2097151, 2097152)
    items = []
    for n in range(120):
        size = max(1, rng.choice(steps) + rng.randint(-3, 3) - 70)  # ~70 bytes of id and framing
        items.append(cri.Container(id=f"{n:064x}", annotations={"a": "x" * size}))
    for bound in (200, 16500, 100_000, 2_200_000, 4 * 1024 * 1024):
        batches = list(list_streams.chunks(items, 1000, bound))
        assert [c for b in batches for c in b] == items
        for batch in batches:
            encoded = cri.StreamContainersResponse(containers=batch).ByteSize()
            assert len(batch) == 1 or encoded <= bound, (bound, len(batch), encoded)
            assert len(batch) >= 1


def test_a_stream_sends_the_list_of_its_start_whatever_changes_meanwhile(t: CriUnderTest) -> None:  # noqa: F811
    """Containers made and removed while a stream is being sent: the stream carries the list
    as it was when it began, every item exactly once (none twice, none of it lost), as the
    List call at that moment would have answered."""
    pod_id = t.run_pod("web")
    ids = [t.create(pod_id, f"c{n}") for n in range(25)]
    t.servicer.stream_chunk = (10, list_streams.MAX_BYTES)
    before = t.containers()
    replies = t.servicer.StreamContainers(cri.StreamContainersRequest(), FakeContext())
    first = next(replies)
    more = [t.create(pod_id, f"late{n}") for n in range(5)]
    for cid in ids[12:20]:  # some of those not sent yet
        t.call("RemoveContainer", cri.RemoveContainerRequest(container_id=cid))
    rest = list(replies)
    got = [c for r in [first, *rest] for c in r.containers]
    assert [len(r.containers) for r in [first, *rest]] == [10, 10, 5]
    assert got == before and len({c.id for c in got}) == 25
    assert not set(more) & {c.id for c in got}
    after = {c.id for c in t.containers()}
    assert after == (set(ids) - set(ids[12:20])) | set(more)


def test_a_stream_of_pods_during_removals_has_each_pod_once(t: CriUnderTest) -> None:  # noqa: F811
    ids = [t.run_pod(f"pod{n}") for n in range(9)]
    t.servicer.stream_chunk = (4, list_streams.MAX_BYTES)
    before = t.pods()
    replies = t.servicer.StreamPodSandboxes(cri.StreamPodSandboxesRequest(), FakeContext())
    first = next(replies)
    for pod_id in ids[5:]:
        t.call("StopPodSandbox", cri.StopPodSandboxRequest(pod_sandbox_id=pod_id))
        t.call("RemovePodSandbox", cri.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
    got = [p for r in [first, *replies] for p in r.pod_sandboxes]
    assert [p.id for p in got] == [p.id for p in before] and len({p.id for p in got}) == 9
