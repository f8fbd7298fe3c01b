"""config.json parsing and validation (runtime.spec)."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from pycri.runtime.spec import SpecError, load_spec, parse_spec

BASE: dict[str, Any] = {
    "ociVersion": "1.0.2-dev",
    "process": {"args": ["sh"], "env": ["PATH=/bin"], "cwd": "/", "user": {"uid": 0, "gid": 0},
                "capabilities": {"bounding": ["CAP_KILL"]}, "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 1, "hard": 2}],
                "noNewPrivileges": True},
    "root": {"path": "rootfs", "readonly": True},
    "hostname": "h",
    "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
               {"destination": "/data", "type": "bind", "source": "data", "options": ["rbind", "ro"]}],
    "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "uts"},
                             {"type": "network", "path": "/run/netns/x"}],
              "cgroupsPath": "/kubepods/pod1/c1", "resources": {"memory": {"limit": 1}},
              "maskedPaths": ["/proc/kcore"], "readonlyPaths": ["/proc/sys"], "sysctl": {"net.ipv4.ip_forward": "1"}},
}


def config(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        target = data
        *parents, last = dotted.split("__")
        for key in parents:
            target = target[key]
        if value is None:
            target.pop(last, None)
        else:
            target[last] = value
    return data


def test_parses_a_full_config() -> None:
    spec = parse_spec(config(), "/b")
    assert spec.root_path == "/b/rootfs" and spec.root_readonly
    assert spec.process.args == ["sh"] and spec.process.no_new_privileges
    assert spec.process.capabilities is not None and spec.process.capabilities.bounding == ["CAP_KILL"]
    assert spec.process.rlimits[0].type == "RLIMIT_NOFILE"
    assert spec.mounts[1].source == "/b/data"  # relative bind sources are relative to the bundle
    assert spec.mounts[0].source == "proc"
    assert spec.linux.creates("pid") and not spec.linux.creates("network")
    assert spec.linux.namespace("network").path == "/run/netns/x"
    assert spec.linux.cgroups_path == "/kubepods/pod1/c1"
    assert spec.linux.resources == {"memory": {"limit": 1}}
    assert spec.hostname == "h"


def test_missing_capabilities_means_none() -> None:
    data = config()
    del data["process"]["capabilities"]
    assert parse_spec(data, "/b").process.capabilities is None


@pytest.mark.parametrize(("changes", "message"), [
    ({"ociVersion": None}, "ociVersion"),
    ({"ociVersion": "2.0.0"}, "unsupported ociVersion"),
    ({"process": None}, "process is missing"),
    ({"process__args": []}, "args must not be empty"),
    ({"process__args": "sh"}, "list of strings"),
    ({"process__cwd": "relative"}, "not an absolute path"),
    ({"process__user": {"uid": "0"}}, "uid must be an integer"),
    ({"root": None}, "root.path is missing"),
    ({"linux__namespaces": [{"type": "pid"}, {"type": "pid"}, {"type": "mount"}]}, "duplicate"),
    ({"linux__namespaces": [{"type": "bogus"}, {"type": "mount"}]}, "unknown namespace"),
    ({"linux__namespaces": [{"type": "user"}, {"type": "mount"}]}, "needs linux.uidMappings"),
    ({"linux__namespaces": [{"type": "pid"}]}, "new mount namespace"),
    ({"linux__namespaces": [{"type": "mount"}]}, "private UTS namespace"),
    ({"linux__uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}]}, "need a user namespace"),
    ({"linux__namespaces": [{"type": "user", "path": "/proc/1/ns/user"}, {"type": "mount"}],
      "linux__uidMappings": [{"containerID": -1, "hostID": 1000, "size": 1}]}, "non-negative integers"),
    ({"linux__rootfsPropagation": "sideways"}, "rootfsPropagation"),
    ({"linux__devices": [{"type": "x", "path": "/dev/x"}]}, "unknown device type"),
])
def test_rejects_bad_configs(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_spec(config(**changes), "/b")


def test_load_spec_reports_missing_files(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="not found"):
        load_spec(str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(SpecError, match="invalid JSON"):
        load_spec(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps(config()))
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(str(tmp_path))
    (tmp_path / "rootfs").mkdir()
    assert load_spec(str(tmp_path)).root_path == str(tmp_path / "rootfs")
