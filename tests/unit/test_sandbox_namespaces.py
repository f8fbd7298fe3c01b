"""The pin sequence with the recording fake: what the pin thread does and mounts, what a failure
undoes; finding a mount. (The real kernel: tests/integration/test_sandbox_namespaces.py.)"""
from __future__ import annotations

import errno
import os
import re
import threading
from pathlib import Path

import pytest

from pycri.common.errors import AlreadyExists, InvalidArgument, Unavailable
from pycri.kernel.fake import RecordingSyscall
from pycri.kernel.syscall import (
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWUTS,
    MNT_DETACH,
    MS_BIND,
    MS_PRIVATE,
    MS_REC,
)
from pycri.sandbox import namespaces

MOUNTINFO = """\
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
40 27 0:50 / /run rw,nosuid shared:5 - tmpfs tmpfs rw
41 40 0:50 /pycri/ns /run/pycri/ns rw,nosuid - tmpfs tmpfs rw
42 41 0:4 net:[4026532179] /run/pycri/ns/pod\\040a/net rw - nsfs nsfs rw
43 40 0:50 /netns /run/netns rw master:5 - tmpfs tmpfs rw
"""


def test_pin_binds_a_threads_namespaces_onto_files_in_a_private_root(tmp_path: Path) -> None:
    fake = RecordingSyscall()
    pod = tmp_path / "ns" / "pod1"
    pinned = namespaces.pin(["network", "ipc", "uts"], pod, "web-0", syscall=fake)
    assert pinned == {"network": pod / "net", "ipc": pod / "ipc", "uts": pod / "uts"}
    root = str((tmp_path / "ns").resolve())
    assert fake.calls[:2] == [("mount", (root, root, "", MS_BIND | MS_REC, "")),
                              ("mount", ("", root, "", MS_PRIVATE | MS_REC, ""))]
    # a thread of its own unshares the three kinds at once and names its new UTS namespace
    assert fake.calls[2:4] == [("unshare", (CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS,)),
                               ("sethostname", ("web-0",))]
    binds = fake.calls[4:]
    assert [args[1:] for _, args in binds] == [(str(pod / f), "", MS_BIND, "") for f in ("net", "ipc", "uts")]
    sources = [args[0] for _, args in binds]
    found = [re.fullmatch(r"/proc/(\d+)/task/(\d+)/ns/(net|ipc|uts)", s) for s in sources]
    assert all(found)
    assert {m.group(1) for m in found} == {str(os.getpid())}  # type: ignore[union-attr]
    threads = {m.group(2) for m in found}  # type: ignore[union-attr]
    assert len(threads) == 1 and int(threads.pop()) != threading.get_native_id()  # not the caller's thread
    assert [s.rsplit("/", 1)[1] for s in sources] == ["net", "ipc", "uts"]
    assert all(p.is_file() for p in pinned.values())


def test_without_a_hostname_none_is_set(tmp_path: Path) -> None:
    fake = RecordingSyscall()
    namespaces.pin(["network"], tmp_path / "ns" / "pod1", syscall=fake)
    assert ("unshare", (CLONE_NEWNET,)) in fake.calls and "sethostname" not in fake.names()


@pytest.mark.parametrize("failing", ["unshare", "sethostname"])
def test_a_thread_that_cannot_make_the_namespaces_undoes_everything(tmp_path: Path, failing: str) -> None:
    fake = RecordingSyscall()
    root = tmp_path / "ns"
    fake.failures[failing] = OSError(errno.ENOSPC, f"{failing}: no space left on device")
    with pytest.raises(Unavailable, match=f"making the pod namespaces: .*{failing}: no space"):
        namespaces.pin(["network", "ipc", "uts"], root / "pod1", "h", syscall=fake)
    assert os.listdir(root) == []
    assert not any(name == "mount" and args[1].startswith(str(root / "pod1")) for name, args in fake.calls)


def test_a_failed_bind_undoes_everything(tmp_path: Path) -> None:
    fake = RecordingSyscall()
    root = tmp_path / "ns"
    namespaces.ensure_private_mount(root, fake)
    fake.failures["mount"] = OSError(errno.EPERM, "mount: not allowed")
    with pytest.raises(OSError, match="not allowed"):
        namespaces.pin(["network", "uts"], root / "pod1", "h", syscall=fake)
    assert not (root / "pod1").exists()


def test_a_second_bind_that_fails_detaches_the_first(tmp_path: Path) -> None:
    class FailingSecondBind(RecordingSyscall):
        def mount(self, source: str, target: str, fstype: str, flags: int, data: str = "") -> None:
            super().mount(source, target, fstype, flags, data)
            if target.endswith("/uts"):
                raise OSError(errno.ENOSPC, "mount: no space left")

    fake = FailingSecondBind()
    root = tmp_path / "ns"
    with pytest.raises(OSError, match="no space left"):
        namespaces.pin(["network", "uts"], root / "pod1", "h", syscall=fake)
    assert [args[0] for name, args in fake.calls if name == "umount"] == [str(root / "pod1" / "net")]
    assert os.listdir(root) == []


IDS = namespaces.IdMaps((namespaces.IdMapping(0, 100000, 65536),), (namespaces.IdMapping(0, 100000, 65536),))


def test_a_holder_that_cannot_unshare_reports_its_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pod with a user namespace pins through a child (util-linux unshare)."""
    fake = RecordingSyscall()
    root = tmp_path / "ns"
    monkeypatch.setattr(namespaces, "UNSHARE", str(tmp_path / "no-such-unshare"))
    with pytest.raises(Unavailable, match="cannot run"):
        namespaces.pin(["user", "network"], root / "pod1", syscall=fake, id_maps=IDS)
    monkeypatch.setattr(namespaces, "UNSHARE", "unshare")
    monkeypatch.setattr(namespaces, "HOLDER_SCRIPT", "echo refused >&2; exit 1")
    with pytest.raises(Unavailable, match="refused"):
        namespaces.pin(["user", "network"], root / "pod1", syscall=fake, id_maps=IDS)
    assert os.listdir(root) == []
    assert not any(name == "mount" and args[1].startswith(str(root / "pod1")) for name, args in fake.calls)
    assert "unshare" not in fake.names()  # the daemon never unshares a user namespace itself


def test_an_existing_pin_is_not_overwritten(tmp_path: Path) -> None:
    pod = tmp_path / "ns" / "pod1"
    pod.mkdir(parents=True)
    (pod / "uts").write_text("")
    with pytest.raises(AlreadyExists, match="already pinned"):
        namespaces.pin(["network", "uts"], pod, syscall=RecordingSyscall())
    assert os.listdir(pod) == ["uts"]  # only what pin made is removed


@pytest.mark.parametrize("kinds, hostname, message", [
    (["pid"], None, "cannot pin namespace kinds"),
    (["network", "network"], None, "repeat"),
    (["network"], "web", "needs a new UTS namespace"),
    (["uts"], "x" * 65, "invalid hostname"),
])
def test_bad_requests_are_rejected_before_anything_happens(tmp_path: Path, kinds: list[str], hostname: str | None,
                                                            message: str) -> None:
    fake = RecordingSyscall()
    with pytest.raises(InvalidArgument, match=message):
        namespaces.pin(kinds, tmp_path / "ns" / "p", hostname, syscall=fake)
    assert fake.calls == [] and not (tmp_path / "ns").exists()


def test_unpin_detaches_and_removes_every_file(tmp_path: Path) -> None:
    pod = tmp_path / "pod1"
    pod.mkdir()
    for name in ("net", "ipc", "uts"):
        (pod / name).write_text("")
    fake = RecordingSyscall()
    namespaces.unpin(pod, fake)
    assert fake.calls == [("umount", (str(pod / n), MNT_DETACH)) for n in ("ipc", "net", "uts")]
    assert not pod.exists()
    namespaces.unpin(pod, fake)  # idempotent


def test_find_mount() -> None:
    """(mountinfo parsing itself: tests/unit/test_kernel_mountinfo.py)"""
    entry = namespaces.find_mount(Path("/run/pycri/ns"), MOUNTINFO)
    assert entry is not None and entry.mount_id == 41 and entry.private
    assert namespaces.find_mount(Path("/run/pycri"), MOUNTINFO) is None


def test_is_pinned_knows_namespace_files(tmp_path: Path) -> None:
    assert namespaces.is_pinned(Path("/proc/self/ns/net"))
    (tmp_path / "plain").write_text("")
    assert not namespaces.is_pinned(tmp_path / "plain")
    assert not namespaces.is_pinned(tmp_path / "missing")
