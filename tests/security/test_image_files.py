"""Image files read on the host side (CVE-2024-9676 class): pycri reads the image's /etc/passwd
and /etc/group before the container exists. A symlink in the image (absolute or relative) to
a host file made the container run as a user that exists only on the host, and a symlink to a
huge host file made pycri read all of it. Paths must resolve inside the image (links crossing
layers included), and only a bounded regular file is read."""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import container_config
from tests.security.hostile import d, f, layer, push_image, symlink

HOST_ONLY = "h1hostonly"
HOST_UID = 4242


@pytest.fixture
def host_passwd() -> Iterator[Path]:
    """A host file naming a user the image does not have, with a long run of zeros (a hole)
    before it: a reader that follows the image's link to the host reads 64 MiB to find it."""
    path = Path(f"/tmp/pycri-h1-host-passwd-{uuid.uuid4().hex[:8]}")
    with open(path, "wb") as out:
        out.truncate(64 << 20)
        out.seek(0, os.SEEK_END)
        out.write(f"\n{HOST_ONLY}:x:{HOST_UID}:{HOST_UID}::/:/bin/sh\n".encode())
    yield path
    path.unlink()


def create(pycri: Any, pod: str, pod_name: str, name: str, image: str, command: list[str], **extra: Any) -> Any:
    pycri.crictl("pull", image)
    ctr = container_config(pycri.base, name, command, image=image, **extra)
    return pycri.crictl("create", pod, str(ctr), str(pycri.base / f"pod-{pod_name}.json"), check=False)


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmHWM for {pid}")


@pytest.mark.parametrize("how", ["absolute", "relative"])
def test_a_link_to_a_host_passwd_names_no_host_user(pycri: Any, host_passwd: Path, how: str) -> None:
    target = str(host_passwd) if how == "absolute" else "../" * 12 + str(host_passwd).lstrip("/")
    image = push_image(f"h1-host-passwd-{how}-{host_passwd.name[-8:]}",
                       layer(f"h1-host-passwd-{how}-{host_passwd.name[-8:]}",
                             symlink("etc/passwd", target), symlink("etc/group", target)),
                       user=HOST_ONLY)
    pod = pycri.run_pod("hostpasswd")
    pycri.crictl("pull", image)
    before = peak_rss_kib(pycri.process.pid)
    result = create(pycri, pod, "hostpasswd", "c", image, ["id", "-u"])
    # the link leads nowhere inside the image: no such user, nothing of the host read
    assert result.returncode != 0, f"created a container of a host-only user: {result.stdout}"
    assert "code = InvalidArgument" in result.stderr and f"user '{HOST_ONLY}' not found" in result.stderr
    assert peak_rss_kib(pycri.process.pid) - before < 32 << 10


def test_links_resolve_inside_the_image_across_layers(pycri: Any) -> None:
    """An absolute link and a relative one (".." past the root stops at it), each to a file of
    a lower layer: the user is the image's."""
    lower = layer("h1-links-lower", d("srv"),
                  f("srv/passwd", "root:x:0:0:root:/root:/bin/sh\ninimage:x:4343:4344::/home/in:/bin/sh\n"),
                  f("srv/group", "root:x:0:\ninimage:x:4344:\nextra:x:4345:inimage\n"))
    upper = layer("h1-links-upper", symlink("etc/passwd", "/srv/passwd"),
                  symlink("etc/group", "../../../../../../srv/../srv/group"))
    image = push_image("h1-links-in-image", lower, upper, user="inimage")
    pod = pycri.run_pod("inimage")
    ctr = pycri.run(pod, "inimage", "c", ["sleep", "3600"], image=image)
    out = pycri.crictl("exec", ctr, "sh", "-c", "id -u; id -g; id -G").stdout.split()
    assert out[:2] == ["4343", "4344"] and sorted(out[2:]) == ["4344", "4345"]


def test_a_huge_passwd_is_not_read(pycri: Any) -> None:
    """A passwd of the image itself beyond the limit (1 MiB) fails the create, clearly."""
    padding = "#" * (1 << 20) + "\n"
    image = push_image("h1-huge-passwd", layer("h1-huge-passwd", f("etc/passwd", padding + "big:x:1:1::/:/bin/sh\n")),
                       user="big")
    pod = pycri.run_pod("hugepasswd")
    result = create(pycri, pod, "hugepasswd", "c", image, ["id"])
    assert result.returncode != 0, result.stdout
    assert "code = InvalidArgument" in result.stderr and "/etc/passwd" in result.stderr
    assert "more than" in result.stderr, result.stderr


def test_a_fifo_passwd_is_refused(pycri: Any) -> None:
    """Not a regular file: refused without opening it for reading (a FIFO would block)."""
    import tarfile

    from tests.security.hostile import Entry

    image = push_image("h1-fifo-passwd", layer("h1-fifo-passwd", Entry("etc/passwd", tarfile.FIFOTYPE, 0o644)),
                       user="nobody")
    pod = pycri.run_pod("fifopasswd")
    result = create(pycri, pod, "fifopasswd", "c", image, ["id"])
    assert result.returncode != 0, result.stdout
    assert "code = InvalidArgument" in result.stderr and "not a regular file" in result.stderr


def test_the_runtime_never_reads_the_passwd_in_the_container(pycri: Any) -> None:
    """/etc/passwd links to a device the image does not have but the container's /dev does
    (/dev/ptmx: a read blocks for ever). pycri finds no passwd in the image, and gives HOME
    itself, so the runtime does not look the home up in the container (it hung in create)."""
    image = push_image("h1-passwd-ptmx", layer("h1-passwd-ptmx", symlink("etc/passwd", "/dev/ptmx")), user="1000")
    pod = pycri.run_pod("ptmx")
    ctr = pycri.run(pod, "ptmx", "c", ["sleep", "3600"], image=image)
    # (the container's own commands may read its /etc/passwd: `id` would block there)
    out = pycri.crictl("exec", ctr, "sh", "-c", "echo $HOME; grep ^Uid: /proc/self/status").stdout.split()
    assert out == ["/", "Uid:", "1000", "1000", "1000", "1000"]
