"""criserver/list_replies.py: a List reply from kept item entries is the reply built item by
item; an item is built again only when its state changes; deleted items' entries go; the reply
goes out over gRPC as its kept bytes."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from pycri.api.cri import api_pb2 as cri
from pycri.api.cri import api_pb2_grpc as cri_grpc
from pycri.criserver import list_replies
from pycri.criserver.errors import CallInterceptor
from pycri.criserver.list_replies import ListReplies


def container(cid: str, state: int, labels: int = 3) -> cri.Container:
    return cri.Container(id=cid, pod_sandbox_id="p" * 64, metadata=cri.ContainerMetadata(name=f"n-{cid}", attempt=1),
                         image=cri.ImageSpec(image="busybox"), image_ref="sha256:" + "1" * 64, state=state,
                         created_at=1_700_000_000_000_000_000, labels={f"k{i}": "v" * i for i in range(labels)},
                         annotations={"a": "b" * 300})  # an entry longer than 127 bytes: a two-byte length


def test_a_reply_from_entries_is_the_reply_built_item_by_item() -> None:
    replies = ListReplies(cri.ListContainersResponse)
    items = [container(f"c{i}", cri.CONTAINER_RUNNING, labels=i) for i in range(5)]
    built: list[str] = []

    def listing(states: dict[str, int]) -> list[tuple[str, str, object]]:
        def build(item: cri.Container) -> cri.Container:
            built.append(item.id)
            copy = cri.Container()
            copy.CopyFrom(item)
            copy.state = states.get(item.id, item.state)
            return copy
        return [(i.id, str(states.get(i.id, i.state)), lambda i=i: build(i)) for i in items]

    assert replies.reply(listing({})) == cri.ListContainersResponse(containers=items)  # type: ignore[arg-type]
    assert built == [i.id for i in items]
    assert replies.reply(listing({})) == cri.ListContainersResponse(containers=items)  # type: ignore[arg-type]
    assert len(built) == 5  # nothing built again
    reply = replies.reply(listing({"c2": cri.CONTAINER_EXITED}))  # type: ignore[arg-type]
    assert built[5:] == ["c2"] and [c.state for c in reply.containers] == [1, 1, 2, 1, 1]
    assert replies.reply([]) == cri.ListContainersResponse()


def test_forget_and_the_unlisted_are_dropped() -> None:
    replies = ListReplies(cri.ListPodSandboxResponse)
    pods = [cri.PodSandbox(id=f"p{i}", state=cri.SANDBOX_READY) for i in range(3)]
    replies.reply((p.id, "ready", lambda p=p: p) for p in pods)
    replies.forget("p1")
    built = []
    replies.reply((p.id, "ready", lambda p=p: built.append(p.id) or p) for p in pods)
    assert built == ["p1"]
    many = [cri.PodSandbox(id=f"m{i}") for i in range(list_replies.SLACK + 10)]
    replies.reply((p.id, "ready", lambda p=p: p) for p in many)
    assert len(replies._entries) == len(many) + 3
    assert replies.reply([("m0", "ready", lambda: many[0])]).items == [many[0]]
    assert list(replies._entries) == ["m0"]  # far more kept than listed: the unlisted went


def test_varint_lengths() -> None:
    for n in (0, 1, 127, 128, 300, 16_384, 2**21 + 5):
        data = list_replies.varint(n)
        value, shift = 0, 0
        for byte in data:
            value |= (byte & 0x7F) << shift
            shift += 7
        assert value == n and all(b & 0x80 for b in data[:-1]) and not data[-1] & 0x80


def test_a_reply_reads_as_its_message_and_keeps_its_bytes() -> None:
    replies = ListReplies(cri.ListContainersResponse)
    items = [container(f"c{i}", cri.CONTAINER_RUNNING) for i in range(3)]
    reply = replies.reply((c.id, "running", lambda c=c: c) for c in items)
    expected = cri.ListContainersResponse(containers=items)
    assert isinstance(reply, list_replies.Encoded)
    assert reply.SerializeToString() is reply.data  # (map entries' order may differ from one encoding to the next)
    assert cri.ListContainersResponse.FromString(reply.data) == expected
    assert list(reply.containers) == items and reply == expected and expected == reply.message
    assert reply.message is reply.message  # parsed once


def test_passing_encoded_sends_the_kept_bytes_and_serializes_anything_else() -> None:
    def refuse(message: object) -> bytes:
        raise AssertionError("an Encoded reply is not serialized again")

    reply = list_replies.Encoded(cri.ListPodSandboxResponse, b"\x0a\x02\x0a\x00")
    serialize = list_replies.passing_encoded(refuse)
    assert serialize is not None and serialize(reply) == b"\x0a\x02\x0a\x00"
    plain = list_replies.passing_encoded(cri.VersionResponse.SerializeToString)
    assert plain is not None and plain(cri.VersionResponse(version="1")) == b"\x0a\x011"
    assert list_replies.passing_encoded(None) is None


def test_over_grpc_through_the_interceptor_the_client_gets_the_message(tmp_path: Path) -> None:
    items = [container(f"c{i}", cri.CONTAINER_RUNNING) for i in range(200)]  # ~90 KB: more than one HTTP/2 window
    replies = ListReplies(cri.ListContainersResponse)

    class Servicer(cri_grpc.RuntimeServiceServicer):
        def ListContainers(self, request: object, context: object) -> object:
            return replies.reply((c.id, "running", lambda c=c: c) for c in items)

    server = grpc.server(ThreadPoolExecutor(max_workers=1), interceptors=[CallInterceptor()])
    cri_grpc.add_RuntimeServiceServicer_to_server(Servicer(), server)
    server.add_insecure_port(f"unix:{tmp_path / 'cri.sock'}")
    server.start()
    try:
        with grpc.insecure_channel(f"unix:{tmp_path / 'cri.sock'}") as channel:
            got = cri_grpc.RuntimeServiceStub(channel).ListContainers(cri.ListContainersRequest(), timeout=30)
        assert got == cri.ListContainersResponse(containers=items)
    finally:
        server.stop(None)
