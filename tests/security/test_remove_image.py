"""RemoveImage of an image a container is made of: its layers (the overlay's lower dirs) were
deleted under the running container, whose files vanished. An image any container uses
(running, exited until removed, or being created) is refused with FailedPrecondition, as CRI-O
does; once the last such container is removed, the image goes."""
from __future__ import annotations

import threading
from typing import Any

from tests.e2e.harness import container_config
from tests.security.hostile import f, layer, push_image

MARKER = "h1 layer still here"


def image_with_marker(name: str) -> str:
    """An image with a layer of its own (no other image shares it) holding /marker."""
    return push_image(name, layer(name, f("marker", MARKER + "\n")))


def refused(pycri: Any, image: str) -> None:
    result = pycri.crictl("rmi", image, check=False)
    assert result.returncode != 0, "the image was removed while a container uses it"
    assert "code = FailedPrecondition" in result.stderr and "in use" in result.stderr, result.stderr


def test_remove_refused_while_a_container_uses_the_image(pycri: Any) -> None:
    image = image_with_marker("h1-rmi-running")
    pod = pycri.run_pod("rmirunning")
    ctr = pycri.run(pod, "rmirunning", "c", ["sleep", "3600"], image=image)
    layers = pycri.layer_dirs()

    refused(pycri, image)  # running
    assert pycri.crictl("exec", ctr, "cat", "/marker").stdout.strip() == MARKER
    assert pycri.layer_dirs() == layers

    pycri.crictl("stop", "-t", "0", ctr)  # exited, not removed: kubelet may still read its logs, restart it
    assert pycri.crictl_json("inspect", ctr)["status"]["state"] == "CONTAINER_EXITED"
    refused(pycri, image)
    assert pycri.layer_dirs() == layers

    created = pycri.create(pod, "rmirunning", "created", ["true"], image=image)  # created, never started
    pycri.crictl("rm", ctr)
    refused(pycri, image)
    pycri.crictl("rm", created)

    pycri.crictl("rmi", image)  # the last user is gone
    assert pycri.crictl("inspecti", image, check=False).returncode != 0
    assert len(pycri.layer_dirs()) < len(layers)


def test_remove_by_id_or_digest_is_refused_too(pycri: Any) -> None:
    image = image_with_marker("h1-rmi-names")
    pod = pycri.run_pod("rminames")
    pycri.run(pod, "rminames", "c", ["sleep", "3600"], image=image)
    status = pycri.crictl_json("inspecti", image)["status"]
    for name in (status["id"], status["repoDigests"][0], status["id"].removeprefix("sha256:")):
        refused(pycri, name)
    assert pycri.crictl("inspecti", image, check=False).returncode == 0


def test_a_create_in_progress_does_not_race_a_removal(pycri: Any) -> None:
    """CreateContainer and RemoveImage at once, several times: never a container whose image
    is gone. Either the removal is refused (the container was recorded first, or was being
    created) or the create fails (the image was gone first)."""
    image = image_with_marker("h1-rmi-race")
    pod = pycri.run_pod("rmirace")
    pod_file = str(pycri.base / "pod-rmirace.json")
    for attempt in range(6):
        pycri.crictl("pull", image)
        ctr_file = str(container_config(pycri.base, f"c{attempt}", ["cat", "/marker"], image=image))
        results: dict[str, Any] = {}
        go = threading.Barrier(2)

        def create() -> None:
            go.wait()
            results["create"] = pycri.crictl("create", pod, ctr_file, pod_file, check=False)

        def remove() -> None:
            go.wait()
            results["rmi"] = pycri.crictl("rmi", image, check=False)

        threads = [threading.Thread(target=create), threading.Thread(target=remove)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        created, removed = results["create"].returncode == 0, results["rmi"].returncode == 0
        assert created != removed, (results["create"].stderr, results["rmi"].stderr)
        if created:
            assert "FailedPrecondition" in results["rmi"].stderr, results["rmi"].stderr
            ctr = results["create"].stdout.strip()
            pycri.crictl("start", ctr)
            logs = wait_for_exit(pycri, ctr)
            assert logs == MARKER, logs
            pycri.crictl("rm", ctr)
        else:
            assert "NotFound" in results["create"].stderr, results["create"].stderr
    pycri.crictl("pull", image)
    pycri.crictl("rmi", image)


def wait_for_exit(pycri: Any, ctr: str) -> str:
    import time

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if pycri.crictl_json("inspect", ctr)["status"]["state"] == "CONTAINER_EXITED":
            return pycri.crictl("logs", ctr).stdout.strip()
        time.sleep(0.2)
    raise AssertionError(f"container {ctr} did not exit in 60 s")
