"""Image users out of range (CVE-2024-40635 class): an id is 32 bits and (uid_t)-1 =
4294967295 is setresuid's "leave unchanged", so an image whose User is 4294967295 looked
non-root to kubelet (ImageStatus uid) yet ran as root; a User too large for int64 broke
ListImages and RemoveImage for the whole node; a Unicode digit ("²") gave INTERNAL. Ids must
be ASCII digits in 0..4294967294, from the image (User, /etc/passwd, /etc/group) or the request."""
from __future__ import annotations

from typing import Any

import pytest

from tests.security.hostile import f, layer, push_image

MAX_ID = 4294967294


def create(pycri: Any, pod: str, pod_name: str, name: str, image: str, **extra: Any):  # noqa: ANN201
    """crictl create, without the check (the container config file is written as run() does)."""
    from tests.e2e.harness import container_config

    pycri.crictl("pull", image)
    ctr = container_config(pycri.base, name, ["id"], image=image, **extra)
    return pycri.crictl("create", pod, str(ctr), str(pycri.base / f"pod-{pod_name}.json"), check=False)


def refused(result: Any, *words: str) -> None:
    assert result.returncode != 0, f"created: {result.stdout}"
    assert "code = InvalidArgument" in result.stderr, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


def status_uid(pycri: Any, image: str) -> tuple[str | None, str]:
    status = pycri.crictl_json("inspecti", image)["status"]
    return (status.get("uid") or {}).get("value"), status.get("username", "")


def test_uid_minus_one_never_runs_as_root(pycri: Any) -> None:
    image = push_image("h1-uid-max", user="4294967295")
    pycri.crictl("pull", image)
    # kubelet would take a reported uid of 4294967295 for non-root (runAsNonRoot passes)
    assert status_uid(pycri, image) == (None, "")
    assert all(i.get("uid") is None for i in pycri.crictl_json("images")["images"] if i["id"] == status_id(pycri, image))
    pod = pycri.run_pod("uidmax")
    refused(create(pycri, pod, "uidmax", "c", image), "4294967295", "not a valid id")
    assert pycri.crictl("ps", "-a", "-q").stdout.split() == []


def status_id(pycri: Any, image: str) -> str:
    return pycri.crictl_json("inspecti", image)["status"]["id"]


def test_a_huge_uid_breaks_no_list(pycri: Any) -> None:
    image = push_image("h1-uid-huge", user="99999999999999999999")
    pycri.crictl("pull", image)
    pycri.crictl("pull", "busybox")
    listed = pycri.crictl_json("images")["images"]  # was INTERNAL for every image of the node
    assert len(listed) == 2
    assert status_uid(pycri, image) == (None, "")
    pod = pycri.run_pod("uidhuge")
    refused(create(pycri, pod, "uidhuge", "c", image), "not a valid id")
    pycri.crictl("rmi", image)  # was INTERNAL too
    assert [i["repoTags"] for i in pycri.crictl_json("images")["images"]] == [["docker.io/library/busybox:latest"]]


@pytest.mark.parametrize("user", ["1000:4294967295", "1000:99999999999999999999"])
def test_gid_out_of_range(pycri: Any, user: str) -> None:
    image = push_image(f"h1-gid-{user.rpartition(':')[2][:12]}", user=user)
    pod = pycri.run_pod("gid")
    refused(create(pycri, pod, "gid", "c", image), "not a valid id")


def test_unicode_digit_is_a_name(pycri: Any) -> None:
    image = push_image("h1-uid-unicode", user="²")
    pycri.crictl("pull", image)
    assert status_uid(pycri, image) == (None, "²")  # a name: kubelet cannot verify non-root
    pod = pycri.run_pod("unicode")
    refused(create(pycri, pod, "unicode", "c", image), "not found in the image's /etc/passwd")


def test_ids_in_the_image_passwd_and_group(pycri: Any) -> None:
    image = push_image("h1-passwd-ids", layer(
        "h1-passwd-ids",
        f("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nevil:x:4294967295:0::/:/bin/sh\nweb:x:33:33::/:/bin/sh\n"),
        f("etc/group", "root:x:0:\nweb:x:33:\nhuge:x:4294967295:web\n"),
    ))
    pod = pycri.run_pod("passwdids")
    refused(create(pycri, pod, "passwdids", "evil", image, linux={"security_context": {"run_as_username": "evil"}}),
            "evil", "4294967295")
    refused(create(pycri, pod, "passwdids", "web", image, linux={"security_context": {"run_as_username": "web"}}),
            "huge", "4294967295")


@pytest.mark.parametrize("security", [
    {"run_as_user": {"value": 4294967295}},
    {"run_as_user": {"value": -1}},
    {"run_as_user": {"value": 1000}, "run_as_group": {"value": 4294967295}},
    {"run_as_user": {"value": 1000}, "supplemental_groups": [4294967295]},
    {"run_as_user": {"value": 1000}, "supplemental_groups": [-1]},
])
def test_request_ids_out_of_range(pycri: Any, security: dict[str, Any]) -> None:
    pod = pycri.run_pod("reqids")
    refused(create(pycri, pod, "reqids", "c", "busybox", linux={"security_context": security}), "not a valid id")
    assert pycri.crictl("ps", "-a", "-q").stdout.split() == []


def test_highest_valid_id_runs(pycri: Any) -> None:
    """4294967294 is a valid id: the container really runs as it (no root)."""
    pod = pycri.run_pod("maxok")
    ctr = pycri.run(pod, "maxok", "c", ["sh", "-c", "id -u; id -g; sleep 3600"],
                    linux={"security_context": {"run_as_user": {"value": MAX_ID}, "run_as_group": {"value": MAX_ID}}})
    out = pycri.crictl("exec", ctr, "sh", "-c", "id -u; id -g").stdout.split()
    assert out == [str(MAX_ID), str(MAX_ID)]
