"""Attacks at the CRI edge: sizes that break the list calls for every client, names and paths
that step out of what pycri builds from them. Each is refused with InvalidArgument and leaves
nothing behind (no pod or container row, no cgroup, no file)."""
from __future__ import annotations

import glob
import json
import os
from pathlib import Path
from typing import Any

import grpc
import pytest

from pycri.api.cri import api_pb2 as cri
from pycri.criserver import validation
from tests.e2e.harness import Pycri

pytestmark = pytest.mark.e2e

CGROUP_ROOT = Path("/sys/fs/cgroup")
NODE = cri.NamespaceMode.NODE


def pod_config(base: Path, pod_name: str, **extra: Any) -> cri.PodSandboxConfig:
    """A pod in the host's network namespace (no CNI: cheap), with the harness's naming;
    `name`, `namespace` and `uid` in extra replace the metadata's."""
    config = cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(name=pod_name, namespace="pycri-e2e", uid=f"uid-{pod_name}"),
        hostname="edge", log_directory=str(base / "logs" / "edge"),
        linux=cri.LinuxPodSandboxConfig(security_context=cri.LinuxSandboxSecurityContext(
            namespace_options=cri.NamespaceOption(network=NODE, pid=cri.NamespaceMode.CONTAINER))),
    )
    for key, value in extra.items():
        if isinstance(value, dict):
            getattr(config, key).update(value)
        elif key in ("name", "namespace", "uid"):
            setattr(config.metadata, key, value)
        else:
            setattr(config, key, value)
    return config


def run_pod(pycri: Pycri, config: cri.PodSandboxConfig) -> grpc.RpcError | str:
    """RunPodSandbox through raw gRPC: the pod id, or the error."""
    try:
        return pycri.runtime_stub().RunPodSandbox(cri.RunPodSandboxRequest(config=config), timeout=120).pod_sandbox_id
    except grpc.RpcError as exc:
        return exc


def assert_invalid(result: grpc.RpcError | str, field: str) -> None:
    assert isinstance(result, grpc.RpcError), f"accepted: {result}"
    assert result.code() == grpc.StatusCode.INVALID_ARGUMENT, result
    assert field in result.details(), result.details()


def pods(pycri: Pycri) -> list[dict[str, Any]]:
    return pycri.crictl_json("pods").get("items") or []


# -- sizes -----------------------------------------------------------------------------------

def test_large_labels_are_refused_and_the_list_keeps_working(pycri: Pycri) -> None:
    """Two pods with 9 MiB labels made every ListPodSandbox fail (the reply passed 16 MiB)."""
    for i in range(2):
        result = run_pod(pycri, pod_config(pycri.base, f"big-{i}", labels={"big": "x" * (9 * 1024 * 1024)}))
        assert_invalid(result, "config.labels")
    result = run_pod(pycri, pod_config(pycri.base, "big-ann", annotations={"big": "y" * (9 * 1024 * 1024)}))
    assert_invalid(result, "config.annotations")
    assert pods(pycri) == []  # no row, and the list answers
    pycri.run_pod("after")
    assert [p["metadata"]["name"] for p in pods(pycri)] == ["after"]


def test_pods_at_the_maximum_still_list(pycri: Pycri) -> None:
    """Pods with labels and annotations just under the bounds are accepted and listed whole."""
    count = 10
    labels = {"l": "x" * (validation.MAX_LABEL_BYTES - 1)}
    annotations = {"a": "y" * (validation.MAX_ANNOTATION_BYTES - 1)}
    for i in range(count):
        result = run_pod(pycri, pod_config(pycri.base, f"max-{i}", labels=labels, annotations=annotations))
        assert isinstance(result, str), result
    listed = pods(pycri)
    assert len(listed) == count
    assert all(p["labels"] == labels and p["annotations"] == annotations for p in listed)
    one_over = {"l": "x" * validation.MAX_LABEL_BYTES}
    assert_invalid(run_pod(pycri, pod_config(pycri.base, "over", labels=one_over)), "config.labels")


def test_a_request_past_grpc_limit_is_refused_by_grpc(pycri: Pycri) -> None:
    """Past the server's 16 MiB receive limit gRPC refuses the request itself; the daemon lives on."""
    result = run_pod(pycri, pod_config(pycri.base, "huge", labels={"huge": "z" * (17 * 1024 * 1024)}))
    assert isinstance(result, grpc.RpcError) and result.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, result
    assert pods(pycri) == []


# -- names and paths -------------------------------------------------------------------------

BAD_NAMES = ["../../../../pycri-escape", "a/b", "..", "nul\0name", "new\nline", "n" * 300, ""]


@pytest.mark.parametrize("field", ["name", "namespace", "uid"])
def test_bad_pod_names_are_refused(pycri: Pycri, field: str) -> None:
    for bad in BAD_NAMES:
        result = run_pod(pycri, pod_config(pycri.base, "named", **{field: bad}))
        assert_invalid(result, f"config.metadata.{field}" if bad else "metadata")
    assert pods(pycri) == []


def escaped_cgroups() -> list[str]:
    return glob.glob(str(CGROUP_ROOT / "*" / "pycri-escape*"))


def ctr_config(base: Path, name: str, **extra: Any) -> Path:
    config = {"metadata": {"name": name}, "image": {"image": "busybox"}, "command": ["sleep", "60"],
              "log_path": "ctr/0.log", "linux": {}, **extra}
    path = base / "ctr-edge.json"
    path.write_text(json.dumps(config))
    return path


def create(pycri: Pycri, pod_id: str, config: Path) -> Any:
    return pycri.crictl("create", pod_id, str(config), str(pycri.base / "pod-edge.json"), check=False)


def test_container_name_cannot_move_its_cgroup(pycri: Pycri) -> None:
    """A container name with '../' put its cgroup at the hierarchy root."""
    pycri.crictl("pull", "busybox")
    pod_id = pycri.run_pod("edge")
    for bad in ["/../../../../../../pycri-escape", "../../../../../../pycri-escape", "x/y", "a\0b"]:
        result = create(pycri, pod_id, ctr_config(pycri.base, bad))
        assert result.returncode != 0, f"{bad!r} accepted"
        assert "InvalidArgument" in result.stderr and "config.metadata.name" in result.stderr, result.stderr
    assert escaped_cgroups() == []
    assert pycri.crictl("ps", "-a", "-q").stdout.split() == []


def test_log_path_cannot_leave_the_log_directory(pycri: Pycri, tmp_path: Path) -> None:
    """An absolute log_path was written outside the pod's log directory."""
    pycri.crictl("pull", "busybox")
    pod_id = pycri.run_pod("edge")
    outside = tmp_path / "outside"
    outside.mkdir()
    attempts = [str(outside / "abs.log"), "../../outside/rel.log", "ctr/../../../outside/mid.log", "..", "ctr/"]
    for i, bad in enumerate(attempts):
        result = create(pycri, pod_id, ctr_config(pycri.base, f"ctr{i}", log_path=bad))
        assert result.returncode != 0, f"{bad!r} accepted"
        assert "InvalidArgument" in result.stderr and "config.log_path" in result.stderr, result.stderr
    assert list(outside.iterdir()) == []
    assert pycri.crictl("ps", "-a", "-q").stdout.split() == []
    # kubelet's form still works, inside the directory
    ok = create(pycri, pod_id, ctr_config(pycri.base, "good", log_path="good/0.log"))
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "logs" / "edge" / "good" / "0.log").exists()


def test_log_directory_must_be_absolute(pycri: Pycri) -> None:
    result = run_pod(pycri, pod_config(pycri.base, "reldir", log_directory="relative/logs"))
    assert_invalid(result, "config.log_directory")
    assert pods(pycri) == []


def test_cgroup_parent_cannot_climb(pycri: Pycri) -> None:
    config = pod_config(pycri.base, "climb")
    config.linux.cgroup_parent = "/pycri/../../../pycri-escape"
    assert_invalid(run_pod(pycri, config), "config.linux.cgroup_parent")
    assert pods(pycri) == []
    assert escaped_cgroups() == []


def test_a_huge_name_does_not_flood_the_log(pycri: Pycri) -> None:
    """Every call's log line named the pod or container: a 15 MiB name wrote 15 MiB per call."""
    before = pycri.log.stat().st_size
    for field in ("name", "namespace"):
        result = run_pod(pycri, pod_config(pycri.base, "flood", **{field: "f" * (15 * 1024 * 1024)}))
        assert_invalid(result, f"config.metadata.{field}")
    pull = pycri.crictl("pull", "i" * 120_000, check=False)  # an argument of crictl: under 128 KiB
    assert pull.returncode != 0
    assert pycri.log.stat().st_size - before < 64 * 1024


def test_localhost_seccomp_profile_must_be_a_small_regular_file(pycri: Pycri, tmp_path: Path) -> None:
    """A localhost seccomp profile naming a FIFO hung CreateContainer (a worker blocked in open
    for ever), a device like /dev/zero or a huge file made pycri read without end."""
    pycri.crictl("pull", "busybox")
    pod_id = pycri.run_pod("edge")
    fifo = tmp_path / "profile.fifo"
    os.mkfifo(fifo)
    big = tmp_path / "big.json"
    big.write_text('{"defaultAction": "SCMP_ACT_ALLOW", "pad": "' + "p" * (2 * 1024 * 1024) + '"}')
    try:
        for i, path in enumerate([str(fifo), str(big), "/etc/pass\0wd"]):
            security = {"seccomp": {"profile_type": 2, "localhost_ref": path}}
            result = create(pycri, pod_id, ctr_config(pycri.base, f"sec{i}", linux={"security_context": security}))
            assert result.returncode != 0, f"{path!r} accepted"
            assert "InvalidArgument" in result.stderr and "seccomp" in result.stderr, result.stderr
    finally:  # without the fix a worker waits in open(): a writer lets it go
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
    assert pycri.crictl("ps", "-a", "-q").stdout.split() == []
