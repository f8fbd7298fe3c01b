"""Pod user namespaces (KEP-127) through the real crictl: the mapping inside, a rootfs owned
by root inside (idmapped layers), and nothing left after removal."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import reachable_tmp_path  # noqa: F401  (fixture)
from tests.e2e.harness import Pycri

MAPPING = [{"container_id": 0, "host_id": 1000, "length": 100000}]
USERNS = {"security_context": {"namespace_options": {"userns_options": {"mode": 0, "uids": MAPPING, "gids": MAPPING}}}}


@pytest.fixture
def tmp_path(reachable_tmp_path: Path) -> Path:
    """The pod's root (a mapped id) must reach the rootfs, the bundle and the pinned
    namespaces, as under /var/lib/pycri (tests.e2e.conftest.reachable_tmp_path)."""
    return reachable_tmp_path


def host_processes_of(uid_low: int, uid_high: int) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            uid = os.stat(f"/proc/{pid}").st_uid
        except FileNotFoundError:
            continue
        if uid_low <= uid < uid_high:
            found.append(int(pid))
    return found


@pytest.mark.parametrize("handler", ["pycri", "runc"])
def test_pod_user_namespace(pycri: Pycri, handler: str) -> None:
    assert host_processes_of(1000, 101000) == []
    pod = pycri.run_pod("userns", runtime=handler, linux=USERNS)
    ctr = pycri.run(pod, "userns", "main", ["sleep", "1000"])
    out = pycri.crictl("exec", "-s", ctr, "sh", "-c",
                       "cat /proc/self/uid_map; id -u; stat -c '%u:%g' / /etc/passwd /bin/sh /etc/hosts; "
                       "touch /made && stat -c '%u' /made").stdout.split("\n")
    assert out[0].split() == ["0", "1000", "100000"]
    assert out[1:7] == ["0", "0:0", "0:0", "0:0", "0:0", "0"]
    # on the host the container runs as the mapped id, and what it wrote belongs to it
    info = pycri.crictl_json("inspect", ctr)
    pid = info["info"]["pid"]
    assert os.stat(f"/proc/{pid}").st_uid == 1000
    assert info["info"]["runtimeSpec"]["linux"]["uidMappings"] == [{"containerID": 0, "hostID": 1000, "size": 100000}]
    upper = pycri.root / "containers" / info["status"]["id"] / "rootfs" / "upper"
    if upper.exists():
        assert os.stat(upper / "made").st_uid == 1000
    status = pycri.crictl_json("inspectp", pod)["status"]
    assert status["linux"]["namespaces"]["options"]["usernsOptions"] == {
        "mode": "POD", "uids": [{"containerId": 0, "hostId": 1000, "length": 100000}],
        "gids": [{"containerId": 0, "hostId": 1000, "length": 100000}]}
    pycri.crictl("stopp", pod)
    pycri.crictl("rmp", pod)
    deadline = time.monotonic() + 60
    while host_processes_of(1000, 101000) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert host_processes_of(1000, 101000) == []
    mountinfo = Path("/proc/self/mountinfo").read_text()
    assert str(pycri.root) not in mountinfo
    assert os.listdir(pycri.state / "ns") == []


def test_node_mode_and_bad_options(pycri: Pycri) -> None:
    pod = pycri.run_pod("node", linux={"security_context": {"namespace_options": {"userns_options": {"mode": 2}}}})
    ctr = pycri.run(pod, "node", "main", ["sleep", "1000"])
    inside = pycri.crictl("exec", "-s", ctr, "cat", "/proc/self/uid_map").stdout
    assert inside.split() == Path("/proc/self/uid_map").read_text().split()
    pycri.crictl("rmp", "-f", pod)
    for bad in ({"mode": 1}, {"mode": 3}, {"mode": 0, "uids": MAPPING * 2, "gids": MAPPING},
                {"mode": 0, "uids": [{"container_id": 1, "host_id": 1000, "length": 10}], "gids": MAPPING}):
        result = pycri.crictl("runp", str(_pod_file(pycri, bad)), check=False)
        assert result.returncode != 0 and "InvalidArgument" in result.stderr, bad
    assert pycri.crictl("pods", "-q").stdout.split() == []
    assert os.listdir(pycri.state / "ns") == []


def _pod_file(pycri: Pycri, userns: dict) -> Path:
    from tests.e2e.harness import pod_config

    return pod_config(pycri.base, "bad", linux={"security_context": {"namespace_options": {"userns_options": userns}}})
