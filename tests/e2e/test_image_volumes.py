"""Image volumes (KEP-4639): a pulled image's files mounted read-only into a container, whole
or one directory of it (image_sub_path), through the real crictl, with each runtime handler."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from pycri.api.cri import api_pb2 as cri

from tests.e2e.harness import Pycri
from tests.e2e.test_pods import handler, inspect  # noqa: F401 (handler is a fixture)

# busybox with an empty file /test (hack/testimages.py), so its files are told from the container's
VOLUME_IMAGE = "gcr.io/k8s-staging-cri-tools/test-image-tag:test"


def image_id(pycri: Pycri, name: str) -> str:
    pycri.crictl("pull", name)
    return pycri.crictl_json("inspecti", name)["status"]["id"]


def volume(container_path: str, image: str, sub_path: str = "") -> dict[str, Any]:
    mount: dict[str, Any] = {"container_path": container_path, "readonly": True, "image": {"image": image}}
    if sub_path:
        mount["image_sub_path"] = sub_path
    return mount


def mounted_under(pycri: Pycri) -> list[str]:
    """Mount points the daemon has under its containers' directories."""
    prefix = str(pycri.root / "containers") + "/"
    return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if line.split()[4].startswith(prefix)]


def exec_ok(pycri: Pycri, container_id: str, *command: str) -> str:
    return pycri.crictl("exec", "-s", container_id, *command).stdout


def exec_fails(pycri: Pycri, container_id: str, *command: str) -> str:
    result = pycri.crictl("exec", "-s", container_id, *command, check=False)
    assert result.returncode != 0, f"{command} succeeded: {result.stdout}"
    return result.stdout + result.stderr


def test_image_volume_life_cycle(pycri: Pycri, handler: str) -> None:  # noqa: F811
    volume_id = image_id(pycri, VOLUME_IMAGE)
    pod = pycri.run_pod("vol", runtime=handler)
    ctr = pycri.run(pod, "vol", "reader", ["sleep", "3600"], mounts=[
        volume("/mnt/vol", volume_id),  # by id, as kubelet passes it
        volume("/mnt/etc", VOLUME_IMAGE, "etc"),
    ])

    # the image's files, and only its sub path where one is given
    assert exec_ok(pycri, ctr, "ls", "/mnt/vol/test", "/mnt/vol/bin/sh").split() == ["/mnt/vol/bin/sh", "/mnt/vol/test"]
    assert exec_ok(pycri, ctr, "cat", "/mnt/etc/passwd").startswith("root:x:0:0:")
    exec_fails(pycri, ctr, "ls", "/mnt/etc/etc")
    # read-only, but its programs run (no noexec)
    assert "Read-only file system" in exec_fails(pycri, ctr, "touch", "/mnt/vol/new")
    assert "Read-only file system" in exec_fails(pycri, ctr, "mkdir", "/mnt/etc/new")
    exec_fails(pycri, ctr, "rm", "/mnt/vol/test")
    assert "test" in exec_ok(pycri, ctr, "/mnt/vol/bin/ls", "/mnt/vol").split()
    # the container's own root stays writable
    exec_ok(pycri, ctr, "touch", "/new")

    mounts = {m["containerPath"]: m for m in inspect(pycri, ctr)["status"]["mounts"]}
    assert mounts["/mnt/vol"]["image"]["image"] == volume_id and mounts["/mnt/vol"]["image"]["imageRef"] == volume_id
    assert mounts["/mnt/etc"]["image"]["imageRef"] == volume_id and mounts["/mnt/etc"]["imageSubPath"] == "etc"
    assert mounts["/mnt/vol"]["readonly"] and not mounts["/mnt/vol"]["hostPath"]
    assert len(mounted_under(pycri)) == 2  # the rootfs and one overlay for the image's two volumes

    # an image a container mounts is not removed
    refused = pycri.crictl("rmi", VOLUME_IMAGE, check=False)
    assert refused.returncode != 0 and "in use" in refused.stderr
    assert pycri.crictl_json("inspecti", VOLUME_IMAGE)["status"]["id"] == volume_id

    pycri.crictl("rm", "-f", ctr)
    assert mounted_under(pycri) == []
    pycri.crictl("rmi", VOLUME_IMAGE)
    pycri.crictl("rmp", "-f", pod)


def test_bad_image_volumes(pycri: Pycri, handler: str) -> None:  # noqa: F811
    pycri.crictl("pull", VOLUME_IMAGE)
    pycri.crictl("pull", "busybox")
    pod = pycri.run_pod("badvol", runtime=handler)
    stub = pycri.runtime_stub()

    def create(name: str, mount: cri.Mount) -> grpc.RpcError:
        config = cri.ContainerConfig(metadata=cri.ContainerMetadata(name=name), image=cri.ImageSpec(image="busybox"),
                                     command=["sleep", "60"], mounts=[mount])
        with pytest.raises(grpc.RpcError) as error:
            stub.CreateContainer(cri.CreateContainerRequest(pod_sandbox_id=pod, config=config))
        assert error.value.details().startswith("ImageVolumeMountFailed: "), error.value.details()
        return error.value

    image = cri.ImageSpec(image=VOLUME_IMAGE)
    missing = create("missing", cri.Mount(container_path="/v", readonly=True, image=image, image_sub_path="not-there"))
    assert missing.code() == grpc.StatusCode.NOT_FOUND and "does not exist" in missing.details()
    not_dir = create("file", cri.Mount(container_path="/v", readonly=True, image=image, image_sub_path="etc/passwd"))
    assert not_dir.code() == grpc.StatusCode.INVALID_ARGUMENT and "not a directory" in not_dir.details()
    for name, mount in [
        ("writable", cri.Mount(container_path="/v", readonly=False, image=image)),
        ("escape", cri.Mount(container_path="/v", readonly=True, image=image, image_sub_path="../..")),
        ("both", cri.Mount(container_path="/v", readonly=True, image=image, host_path="/tmp")),
    ]:
        assert create(name, mount).code() == grpc.StatusCode.INVALID_ARGUMENT
    absent = create("absent", cri.Mount(container_path="/v", readonly=True,
                                        image=cri.ImageSpec(image="pycri/not-pulled:1")))
    assert absent.code() == grpc.StatusCode.NOT_FOUND and "pull it first" in absent.details()

    # the runtime refuses a mount over /proc after the image volume is mounted (its failure is
    # the start's): the volume is unmounted at once, and once the container is removed nothing stays
    ctr = pycri.base / "ctr-late.json"
    ctr.write_text(json.dumps({"metadata": {"name": "late"}, "image": {"image": "busybox"}, "command": ["true"],
                               "mounts": [volume("/v", VOLUME_IMAGE),
                                          {"container_path": "/proc/pycri", "host_path": "/tmp"}], "linux": {}}))
    late = pycri.crictl("create", pod, str(ctr), str(pycri.base / "pod-badvol.json")).stdout.strip()
    assert pycri.crictl("start", late, check=False).returncode != 0
    deadline = time.monotonic() + 30
    while mounted_under(pycri):
        assert time.monotonic() < deadline, "the image volume of a container that failed to start stays mounted"
        time.sleep(0.05)
    assert pycri.crictl("rmi", VOLUME_IMAGE, check=False).returncode != 0  # the container holds it until removed
    pycri.crictl("rm", late)
    assert pycri.crictl_json("ps", "-a")["containers"] == []
    assert mounted_under(pycri) == [] and os.listdir(pycri.root / "containers") == []
    pycri.crictl("rmi", VOLUME_IMAGE)  # no failed create holds on to it


def test_image_volume_survives_a_restart(pycri: Pycri) -> None:
    volume_id = image_id(pycri, VOLUME_IMAGE)
    pod = pycri.run_pod("volsurvivor")
    ctr = pycri.run(pod, "volsurvivor", "reader", ["sleep", "3600"], mounts=[volume("/mnt/etc", volume_id, "etc")])
    pycri.kill()  # SIGKILL: a crash
    pycri.start()
    assert exec_ok(pycri, ctr, "cat", "/mnt/etc/passwd").startswith("root:")
    assert pycri.crictl("rmi", volume_id, check=False).returncode != 0  # still in use after the restart
    pycri.crictl("rm", "-f", ctr)
    assert mounted_under(pycri) == []
    pycri.crictl("rmi", volume_id)
