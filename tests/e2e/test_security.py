"""Recursive read-only mounts and SupplementalGroupsPolicy through the real crictl, checked
inside the container and in what Status and ContainerStatus report.

Each test runs with runc (the reference) and pycri's own runtime."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.e2e.harness import VENV_BIN, Pycri

HANDLERS = ["runc", "pycri"]
PREDEFINED_GROUP = "gcr.io/k8s-staging-cri-tools/test-image-predefined-group:latest"  # uid 1000, in group 50000


@pytest.fixture(params=HANDLERS)
def handler(request: pytest.FixtureRequest) -> str:
    if request.param == "pycri" and not (VENV_BIN / "pycri-runtime").exists():
        pytest.skip("pycri-runtime is not installed (hack/setup.sh writes it)")
    return request.param


@pytest.fixture
def volume(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A host directory with a tmpfs mounted at sub/."""
    path = tmp_path / "volume"
    (path / "sub").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "e2e-sub", str(path / "sub")], check=True)
    yield path
    subprocess.run(["umount", "-l", str(path / "sub")], check=False)


def crun_has_rro() -> bool:
    result = subprocess.run(["crun", "features"], capture_output=True, text=True)
    return result.returncode == 0 and "rro" in json.loads(result.stdout).get("mountOptions", [])


def test_status_advertises_what_handlers_support(pycri: Pycri) -> None:
    info = pycri.crictl_json("info")
    # crictl prints these features with the Go struct's (snake_case) names
    rro = {h.get("name", ""): bool(h.get("features", {}).get("recursive_read_only_mounts"))
           for h in info["runtimeHandlers"]}
    assert rro == {"": True, "pycri": True, "runc": True, "crun": crun_has_rro()}
    assert info["features"]["supplemental_groups_policy"] is True


def test_recursive_read_only_mount(pycri: Pycri, handler: str, volume: Path) -> None:
    pod = pycri.run_pod("rro", runtime=handler)
    ctr = pycri.run(pod, "rro", "main", ["sleep", "1000"], mounts=[
        {"container_path": "/rro", "host_path": str(volume), "readonly": True, "recursive_read_only": True},
        {"container_path": "/plain", "host_path": str(volume), "readonly": True}])
    for path in ("/rro/x", "/rro/sub/x", "/plain/x"):
        result = pycri.crictl("exec", "-s", ctr, "touch", path, check=False)
        assert result.returncode != 0 and "Read-only file system" in result.stdout + result.stderr, path
    pycri.crictl("exec", "-s", ctr, "touch", "/plain/sub/y")  # a plain read-only bind leaves submounts writable
    assert (volume / "sub" / "y").exists()
    mounts = {m["containerPath"]: m for m in pycri.crictl_json("inspect", ctr)["status"]["mounts"]}
    assert mounts["/rro"].get("recursiveReadOnly") is True and not mounts["/plain"].get("recursiveReadOnly")


def test_recursive_read_only_needs_readonly_and_private(pycri: Pycri, handler: str, volume: Path) -> None:
    pod = pycri.run_pod("rro-bad", runtime=handler)
    pycri.crictl("pull", "busybox")
    for name, mount in (("rw", {"readonly": False}), ("slave", {"readonly": True, "propagation": 1}),
                        ("shared", {"readonly": True, "propagation": 2})):
        ctr = pycri.base / f"ctr-{name}.json"
        ctr.write_text(json.dumps({"metadata": {"name": name}, "image": {"image": "busybox"}, "command": ["true"],
                                   "linux": {}, "mounts": [{"container_path": "/rro", "host_path": str(volume),
                                                            "recursive_read_only": True, **mount}]}))
        result = pycri.crictl("create", pod, str(ctr), str(pycri.base / "pod-rro-bad.json"), check=False)
        assert result.returncode != 0 and "InvalidArgument" in result.stderr, result.stderr
    assert pycri.crictl_json("ps", "-a")["containers"] == []


def test_recursive_read_only_refused_where_the_runtime_lacks_it(pycri: Pycri, volume: Path) -> None:
    if crun_has_rro():
        pytest.skip("this crun supports rro")
    pod = pycri.run_pod("rro-crun", runtime="crun")
    pycri.crictl("pull", "busybox")
    ctr = pycri.base / "ctr-crun.json"
    ctr.write_text(json.dumps({"metadata": {"name": "crun"}, "image": {"image": "busybox"}, "command": ["true"],
                               "linux": {}, "mounts": [{"container_path": "/rro", "host_path": str(volume),
                                                        "readonly": True, "recursive_read_only": True}]}))
    result = pycri.crictl("create", pod, str(ctr), str(pycri.base / "pod-rro-crun.json"), check=False)
    assert result.returncode != 0 and "does not support recursive read-only" in result.stderr, result.stderr


@pytest.mark.parametrize("policy,groups", [(0, [1000, 1234, 50000]), (1, [1000, 1234])], ids=["Merge", "Strict"])
def test_supplemental_groups_policy(pycri: Pycri, handler: str, policy: int, groups: list[int]) -> None:
    """Strict: only the requested groups and the primary gid, not the image's /etc/group ones."""
    pod = pycri.run_pod("groups", runtime=handler)
    ctr = pycri.run(pod, "groups", "main", ["sh", "-c", "id -G; sleep 1000"], image=PREDEFINED_GROUP, linux={
        "security_context": {"run_as_user": {"value": 1000}, "supplemental_groups": [1234],
                             "supplemental_groups_policy": policy}})
    expected = " ".join(map(str, groups))
    assert pycri.crictl("exec", "-s", ctr, "id", "-G").stdout.strip() == expected
    user = pycri.crictl_json("inspect", ctr)["status"]["user"]["linux"]
    assert (int(user["uid"]), int(user["gid"])) == (1000, 1000)
    assert sorted(int(g) for g in user["supplementalGroups"]) == groups
    log = pycri.base / "logs" / "groups" / "main.log"
    assert expected in log.read_text()
