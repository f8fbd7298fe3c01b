"""Pinned pod namespaces on the real kernel (root): nsfs mounts, the hostname inside the new UTS
namespace, a private root, unpin leaving nothing, failures undone, enter_netns."""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycri.kernel.linux import LinuxSyscall
from pycri.kernel.syscall import MNT_DETACH, MS_BIND
from pycri.sandbox import namespaces

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nsenter") or not shutil.which("findmnt"),
                                reason="needs root, nsenter and findmnt")

FILES = {"network": "net", "ipc": "ipc", "uts": "uts"}


@pytest.fixture
def ns_root(tmp_path: Path) -> Iterator[Path]:
    """The root of the pins; every pin under it and the root's own mount are removed afterwards."""
    root = tmp_path / "ns"
    yield root
    release(root)


def release(root: Path) -> None:
    if root.exists():
        for pod in root.iterdir():
            namespaces.unpin(pod)
    for _ in range(8):
        if namespaces.find_mount(root) is None:
            break
        LinuxSyscall().umount(str(root), MNT_DETACH)
    assert mounts_under(root) == []


def mounts_under(path: Path) -> list[str]:
    out = subprocess.run(["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line == str(path) or line.startswith(f"{path}/")]


def findmnt(path: Path, columns: str) -> str:
    proc = subprocess.run(["findmnt", "-n", "-o", columns, "--mountpoint", str(path)], capture_output=True, text=True)
    return proc.stdout.strip()


def nsenter(kind: str, path: Path, *argv: str) -> str:
    return subprocess.run(["nsenter", f"--{kind}={path}", *argv], capture_output=True, text=True, check=True,
                          timeout=30).stdout


def test_pinned_namespaces_are_nsfs_mounts_that_differ_from_the_hosts(ns_root: Path) -> None:
    pinned = namespaces.pin(["network", "ipc", "uts"], ns_root / "pod1", "pycri-test-pod")
    assert set(pinned) == {"network", "ipc", "uts"}
    for kind, path in pinned.items():
        assert path == ns_root / "pod1" / FILES[kind]
        assert findmnt(path, "FSTYPE") == "nsfs"
        assert namespaces.is_pinned(path)
        assert os.stat(path).st_ino != os.stat(f"/proc/self/ns/{FILES[kind]}").st_ino
    # the root that holds the pins is a mount point of its own with private propagation
    assert findmnt(ns_root, "PROPAGATION") == "private"
    # a fresh network namespace: only a loopback interface, down
    links = nsenter("net", pinned["network"], "ip", "-o", "link").splitlines()
    assert len(links) == 1 and ": lo:" in links[0] and "state DOWN" in links[0]


def test_the_hostname_is_set_in_the_new_uts_namespace_only(ns_root: Path) -> None:
    before = socket.gethostname()
    own = {kind: os.stat(f"/proc/self/ns/{kind}").st_ino for kind in ("net", "ipc", "uts")}
    pinned = namespaces.pin(["network", "ipc", "uts"], ns_root / "pod1", "pycri-test-pod")
    assert nsenter("uts", pinned["uts"], "hostname").strip() == "pycri-test-pod"
    assert socket.gethostname() == before
    # the calling process never moved
    assert {kind: os.stat(f"/proc/self/ns/{kind}").st_ino for kind in ("net", "ipc", "uts")} == own


def test_unpin_leaves_no_mount_and_no_file(ns_root: Path) -> None:
    pinned = namespaces.pin(["network", "ipc", "uts"], ns_root / "pod1", "p")
    inode = os.stat(pinned["network"]).st_ino
    assert len(mounts_under(ns_root / "pod1")) == 3
    namespaces.unpin(ns_root / "pod1")
    assert mounts_under(ns_root / "pod1") == []
    assert not (ns_root / "pod1").exists()
    assert all(not link.endswith(f"[{inode}]") for link in _all_net_namespaces())
    namespaces.unpin(ns_root / "pod1")  # idempotent


def test_pins_keep_the_namespaces_after_the_child_is_gone(ns_root: Path) -> None:
    pinned = namespaces.pin(["network"], ns_root / "pod1")
    inode = os.stat(pinned["network"]).st_ino
    # no process is in the namespace: only the mount keeps it
    assert not [link for link in _all_net_namespaces() if link.endswith(f"[{inode}]")]
    nsenter("net", pinned["network"], "ip", "link", "set", "lo", "up")
    assert "UP" in nsenter("net", pinned["network"], "ip", "-o", "link", "show", "lo")


def test_a_failure_half_way_leaves_no_mount_and_no_file(ns_root: Path) -> None:
    class FailingSecondBind(LinuxSyscall):
        """The real kernel, but the second namespace bind fails (as a full mount table would)."""

        binds = 0

        def mount(self, source: str, target: str, fstype: str, flags: int, data: str = "") -> None:
            if flags == MS_BIND and source.startswith("/proc/"):
                self.binds += 1
                if self.binds == 2:
                    raise OSError(errno.ENOSPC, "mount: no space left")
            super().mount(source, target, fstype, flags, data)

    syscall = FailingSecondBind()
    with pytest.raises(OSError, match="no space left"):
        namespaces.pin(["network", "ipc", "uts"], ns_root / "pod1", "p", syscall=syscall)
    assert syscall.binds == 2  # the first bind was real, and was undone
    assert mounts_under(ns_root / "pod1") == []
    assert not (ns_root / "pod1").exists()


def test_an_existing_pin_is_refused_and_kept(ns_root: Path) -> None:
    first = namespaces.pin(["network"], ns_root / "pod1")
    with pytest.raises(Exception, match="already pinned"):
        namespaces.pin(["network"], ns_root / "pod1")
    assert namespaces.is_pinned(first["network"])


def test_enter_netns_moves_only_the_block(ns_root: Path) -> None:
    pinned = namespaces.pin(["network"], ns_root / "pod1")
    host_links = {name for _, name in socket.if_nameindex()}
    with namespaces.enter_netns(pinned["network"]):
        assert [name for _, name in socket.if_nameindex()] == ["lo"]
        inside = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
        assert len(inside.splitlines()) == 1
    assert {name for _, name in socket.if_nameindex()} == host_links


def test_concurrent_pins_get_their_own_namespaces(ns_root: Path) -> None:
    results: dict[int, dict[str, Path]] = {}
    errors: list[BaseException] = []

    def pin(i: int) -> None:
        try:
            results[i] = namespaces.pin(["network", "uts"], ns_root / f"pod{i}", f"pod-{i}")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=pin, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len({os.stat(r["network"]).st_ino for r in results.values()}) == 8
    for i, pinned in results.items():
        assert nsenter("uts", pinned["uts"], "hostname").strip() == f"pod-{i}"


def _all_net_namespaces() -> list[str]:
    links = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                links.append(os.readlink(f"/proc/{pid}/ns/net"))
            except OSError:
                pass
    return links


def test_no_thread_of_the_daemon_is_left_in_the_pods_namespaces(ns_root: Path) -> None:
    own = {kind: os.stat(f"/proc/self/ns/{kind}").st_ino for kind in ("net", "ipc", "uts")}
    pinned = namespaces.pin(["network", "ipc", "uts"], ns_root / "pod1", "pycri-test-pod")
    pod = {FILES[kind]: os.stat(path).st_ino for kind, path in pinned.items()}
    assert all(pod[kind] != own[kind] for kind in pod)


    def in_the_pods() -> list[str]:
        found = []
        for tid in os.listdir("/proc/self/task"):
            for kind in ("net", "ipc", "uts"):
                with contextlib.suppress(FileNotFoundError):  # (a thread that ends meanwhile)
                    if os.stat(f"/proc/self/task/{tid}/ns/{kind}").st_ino == pod[kind]:
                        found.append(f"{tid}:{kind}")
        return found

    # the pin's thread ends (the OS thread may outlive Thread.join() by a moment); none other moved
    deadline = time.monotonic() + 30
    while in_the_pods() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert in_the_pods() == []


def test_the_namespace_root_is_made_private_once(ns_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    namespaces.pin(["network"], ns_root / "pod1")
    assert findmnt(ns_root, "PROPAGATION") == "private"

    def no_read(*args: object) -> None:
        raise AssertionError("the mount table was read again")

    monkeypatch.setattr(namespaces, "find_mount", no_read)
    second = namespaces.pin(["network", "uts"], ns_root / "pod2", "p2")
    assert all(namespaces.is_pinned(path) for path in second.values())


def test_unpin_detaches_pins_stacked_on_one_file(ns_root: Path) -> None:
    first = namespaces.pin(["network"], ns_root / "pod1")["network"]
    second = namespaces.pin(["network"], ns_root / "pod2")["network"]
    LinuxSyscall().mount(str(second), str(first), "", MS_BIND)  # a second pin over the first
    assert len(mounts_under(first)) == 2
    namespaces.unpin(ns_root / "pod1")
    assert mounts_under(ns_root / "pod1") == [] and not (ns_root / "pod1").exists()
