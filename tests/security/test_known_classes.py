"""Attack classes pycri already withstood when the hardening issue was filed, kept as tests so
they stay withstood: layer tar escapes, host file descriptors leaking into containers
(CVE-2024-21626), sysctl injection (CVE-2022-0811), inheritable capabilities (CVE-2022-29162)
and image volume paths that step out of the image. Each runs with pycri's own runtime and with
runc, the reference."""
from __future__ import annotations

import tarfile
import uuid
from pathlib import Path

import pytest

from tests.e2e.harness import Pycri
from tests.e2e.test_pods import handler  # noqa: F401 (a fixture: "runc" and "pycri")
from tests.security.hostile import Entry, d, f, layer, push_image, symlink


def hardlink(path: str, target: str) -> Entry:
    return Entry(path, tarfile.LNKTYPE, 0o644, linkname=target)


@pytest.mark.parametrize("name,entries", [
    ("dotdot", [f("../../../../pycri-escape-dotdot", "x")]),
    ("absolute", [f("/pycri-escape-absolute", "x")]),
    ("symlink-dir", [symlink("evil", "/tmp"), f("evil/pycri-escape-symlink", "x")]),
    ("symlink-relative", [d("a"), symlink("a/up", "../../../../../../tmp"), f("a/up/pycri-escape-rel", "x")]),
    ("hardlink", [hardlink("shadow", "../../../../../../etc/shadow")]),
])
def test_layer_tar_escapes_are_refused(pycri: Pycri, name: str, entries: list[Entry]) -> None:
    before = {p.name for p in Path("/tmp").iterdir()} | {p.name for p in Path("/").iterdir()}
    image = push_image(f"tar-{name}", layer(f"tar-{name}", *entries), busybox=False)
    result = pycri.crictl("pull", image, check=False)  # refused, or made harmless inside the layer
    after = {p.name for p in Path("/tmp").iterdir()} | {p.name for p in Path("/").iterdir()}
    assert not {n for n in after - before if "pycri-escape" in n}, "a layer wrote outside its directory"
    if name == "hardlink" and result.returncode == 0:
        layers = list((pycri.root / "images/layers").glob("*/diff/shadow"))
        assert all(p.stat().st_ino != Path("/etc/shadow").stat().st_ino for p in layers)
    assert "pycri-escape" not in "".join(p.name for p in Path("/").iterdir())


def test_no_host_file_descriptor_reaches_a_container(pycri: Pycri, handler: str) -> None:  # noqa: F811
    canary = Path("/var/tmp") / f"pycri-fd-canary-{uuid.uuid4().hex}"
    canary.write_text("host")
    up = "../" * 12 + str(canary).lstrip("/")
    try:
        pod = pycri.run_pod("fds", runtime=handler)
        ctr = pycri.run(pod, "fds", "main", ["sleep", "1000"])
        # the container's process and an exec'd one hold only their standard streams
        assert pycri.crictl("exec", "-s", ctr, "ls", "/proc/1/fd").stdout.split() == ["0", "1", "2"]
        fds = pycri.crictl("exec", "-s", ctr, "sh", "-c", "ls /proc/$$/fd").stdout.split()
        assert set(fds) <= {"0", "1", "2", "3", "10"}, fds  # 3: ls's directory; 10: busybox sh's own
        # a working directory through /proc/self/fd (runc's CVE-2024-21626) never lands on the host
        for fd in range(3, 10):
            config = {"working_dir": f"/proc/self/fd/{fd}"}
            name = f"cwd{fd}"
            result = pycri.crictl("create", pod, str(_ctr(pycri, name, ["cat", up], config)),
                                  str(pycri.base / "pod-fds.json"), check=False)
            if result.returncode != 0:
                continue
            cid = result.stdout.strip()
            pycri.crictl("start", cid, check=False)
            logs = pycri.crictl("logs", cid, check=False)
            assert "host" not in logs.stdout, f"fd {fd} reached the host: {logs.stdout}"
    finally:
        canary.unlink()


def _ctr(pycri: Pycri, name: str, command: list[str], extra: dict) -> Path:
    from tests.e2e.harness import container_config
    return container_config(pycri.base, name, command, **extra)


@pytest.mark.parametrize("sysctls", [
    {"kernel.shm_rmid_forced": "1+kernel.core_pattern=|/tmp/pycri-pwn"},
    {"kernel.shm_rmid_forced": "1\nkernel.core_pattern=|/tmp/pycri-pwn"},
    {"kernel.shm_rmid_forced=1+kernel.core_pattern": "|/tmp/pycri-pwn"},
    {"kernel.core_pattern": "|/tmp/pycri-pwn"},
    {"net.ipv4.ip_forward/../../../kernel/core_pattern": "|/tmp/pycri-pwn"},
])
def test_sysctl_injection_never_reaches_the_host(pycri: Pycri, handler: str, sysctls: dict) -> None:  # noqa: F811
    core_pattern = Path("/proc/sys/kernel/core_pattern").read_text()
    result = pycri.crictl("runp", "--runtime", handler,
                          str(_pod(pycri, "sysctl", {"linux": {"sysctls": sysctls}})), check=False)
    if result.returncode == 0:
        pod = result.stdout.strip()
        pycri.crictl("create", pod, str(_ctr(pycri, "main", ["sleep", "1000"], {})),
                     str(pycri.base / "pod-sysctl.json"), check=False)
        for ctr in pycri.crictl("ps", "-a", "-q").stdout.split():
            pycri.crictl("start", ctr, check=False)
    assert Path("/proc/sys/kernel/core_pattern").read_text() == core_pattern
    assert "pycri-pwn" not in core_pattern


def _pod(pycri: Pycri, name: str, extra: dict) -> Path:
    from tests.e2e.harness import pod_config
    return pod_config(pycri.base, name, **extra)


def test_no_inheritable_or_ambient_capabilities(pycri: Pycri, handler: str) -> None:  # noqa: F811
    pod = pycri.run_pod("caps", runtime=handler)
    ctr = pycri.run(pod, "caps", "main", ["sleep", "1000"],
                    linux={"security_context": {"capabilities": {"add_capabilities": ["NET_ADMIN"]}}})
    for pid in ("1", "self"):
        status = pycri.crictl("exec", "-s", ctr, "cat", f"/proc/{pid}/status").stdout
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        assert int(fields["CapInh"], 16) == 0 and int(fields["CapAmb"], 16) == 0, (pid, fields["CapInh"])
    # a non-root user gets no effective capabilities from an added one
    user = pycri.run(pod, "caps", "user", ["sleep", "1000"],
                     linux={"security_context": {"run_as_user": {"value": 1000},
                                                 "capabilities": {"add_capabilities": ["NET_ADMIN"]}}})
    status = pycri.crictl("exec", "-s", user, "cat", "/proc/1/status").stdout
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert int(fields["CapEff"], 16) == 0 and int(fields["CapInh"], 16) == 0


def test_image_volume_paths_stay_in_the_image(pycri: Pycri, handler: str) -> None:  # noqa: F811
    image = push_image("volume-escape", layer("volume-escape", symlink("escape", "../../../../../../etc"),
                                              symlink("absolute", "/etc"), d("data"), f("data/mine", "image")))
    pycri.crictl("pull", image)
    pod = pycri.run_pod("vol", runtime=handler)
    for sub_path in ("../../../etc", "/etc", "data/../../../etc"):
        mount = {"container_path": "/mnt/v", "readonly": True, "image": {"image": image},
                 "image_sub_path": sub_path}
        result = pycri.crictl("create", pod, str(_ctr(pycri, "bad", ["sleep", "1"], {"mounts": [mount]})),
                              str(pycri.base / "pod-vol.json"), check=False)
        assert result.returncode != 0, sub_path
    host_hostname = Path("/etc/hostname").read_text() if Path("/etc/hostname").exists() else None
    for sub_path in ("escape", "absolute"):  # symlinks resolve inside the image
        mount = {"container_path": "/mnt/v", "readonly": True, "image": {"image": image},
                 "image_sub_path": sub_path}
        name = f"link-{sub_path}"
        result = pycri.crictl("create", pod, str(_ctr(pycri, name, ["sleep", "1000"], {"mounts": [mount]})),
                              str(pycri.base / "pod-vol.json"), check=False)
        if result.returncode != 0:
            continue
        cid = result.stdout.strip()
        pycri.crictl("start", cid)
        listing = pycri.crictl("exec", "-s", cid, "ls", "/mnt/v").stdout.split()
        assert "shadow" not in listing, f"{sub_path}: the host's /etc is mounted: {listing}"
        if host_hostname is not None:
            shown = pycri.crictl("exec", "-s", cid, "cat", "/mnt/v/hostname", check=False).stdout
            assert shown != host_hostname
