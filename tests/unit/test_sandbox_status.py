"""PodSandboxStatus and ListPodSandbox of pods whose rows were written before the typed sandbox
columns: the replies are those the old reads of `extra` gave."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pycri.api.cri import api_pb2 as cri
from pycri.criserver.pods import PodCalls
from pycri.sandbox.service import SandboxService
from pycri.store.db import Database
from tests.unit.test_sandbox_records import OLD_EXTRA, old_database


class NoNetwork:
    def setup(self, sandbox: Any, netns: Path, port_mappings: Any) -> list[str]:
        raise AssertionError("not called")

    def teardown(self, sandbox: Any, netns: Path | None) -> None:
        raise AssertionError("not called")


def calls(tmp_path: Path) -> PodCalls:
    old_database(tmp_path / "db.sqlite").close()
    pods = PodCalls()
    pods.sandboxes = SandboxService(Database(tmp_path / "db.sqlite"), tmp_path / "sandboxes", tmp_path / "state",
                                    NoNetwork())
    return pods


def test_verbose_status_of_an_old_row(tmp_path: Path) -> None:
    reply = calls(tmp_path).PodSandboxStatus(cri.PodSandboxStatusRequest(pod_sandbox_id="p1", verbose=True), None)
    extra = OLD_EXTRA
    assert reply.info["info"] == json.dumps({  # as the old code built it from extra
        "id": "p1", "state": "ready", "namespaces": extra.get("namespaces", {}),
        "hostname": extra.get("hostname"), "cgroupParent": extra.get("cgroup_parent"),
        "files": extra.get("files", {}), "portMappings": extra.get("port_mappings", []),
        "infra": extra.get("infra"), "userns": extra.get("userns"),
    })
    status = reply.status
    options = status.linux.namespaces.options
    assert (options.network, options.ipc, options.pid) == (cri.NamespaceMode.POD,) * 3
    assert options.userns_options.mode == cri.NamespaceMode.POD
    assert [(m.container_id, m.host_id, m.length) for m in options.userns_options.uids] == [(0, 65536, 65536)]
    assert [(m.container_id, m.host_id, m.length) for m in options.userns_options.gids] == [(0, 131072, 65536)]
    assert status.network.ip == "10.88.0.5" and [i.ip for i in status.network.additional_ips] == ["fd00::5"]
    assert dict(status.labels) == {"app": "web"} and dict(status.annotations) == {"note": "a;b"}
    assert status.state == cri.PodSandboxState.SANDBOX_READY and status.runtime_handler == "runc"


def test_status_of_an_old_host_network_row(tmp_path: Path) -> None:
    reply = calls(tmp_path).PodSandboxStatus(cri.PodSandboxStatusRequest(pod_sandbox_id="p2", verbose=True), None)
    options = reply.status.linux.namespaces.options
    assert (options.network, options.ipc, options.pid) == (cri.NamespaceMode.NODE,) * 3
    assert options.userns_options.mode == cri.NamespaceMode.NODE
    info = json.loads(reply.info["info"])
    assert info["namespaces"] == {} and info["infra"] is None and info["userns"] is None
    assert info["cgroupParent"] == "kubepods/p2" and info["portMappings"] == []


def test_list_of_old_rows_filters_by_label(tmp_path: Path) -> None:
    pods = calls(tmp_path)
    request = cri.ListPodSandboxRequest(filter=cri.PodSandboxFilter(label_selector={"app": "web"}))
    items = pods.ListPodSandbox(request, None).items
    assert [(i.id, dict(i.labels), i.metadata.name) for i in items] == [("p1", {"app": "web"}, "web-0")]
    assert [i.id for i in pods.ListPodSandbox(cri.ListPodSandboxRequest(), None).items] == ["p1", "p2"]
