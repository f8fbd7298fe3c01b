"""Runtime handler features (containers.oci): the `features` document a runtime prints, and
what pycri advertises from it in Status; the container user ContainerStatus reports."""
from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from pycri.containers import oci
from pycri.containers.conmon import ConmonHandler
from pycri.containers.handler import HandlerFeatures
from pycri.containers.oci import parse_features, query_features
from pycri.containers.oci_config import User
from pycri.criserver.pods import container_user

RUNC_LIKE = json.dumps({"ociVersionMin": "1.0.0", "mountOptions": ["rbind", "ro", "rro", "rprivate"]})


def script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


@pytest.fixture(autouse=True)
def kernel_with_mount_setattr(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit tests do not probe the real kernel."""
    monkeypatch.setattr(oci, "has_mount_setattr", lambda: True)


def test_parse_features() -> None:
    assert parse_features(RUNC_LIKE, kernel_has_mount_setattr=True) == HandlerFeatures(
        mount_options=frozenset({"rbind", "ro", "rro", "rprivate"}), recursive_read_only_mounts=True)
    # rro needs the kernel's mount_setattr(2) as well (Linux >= 5.12)
    assert not parse_features(RUNC_LIKE, kernel_has_mount_setattr=False).recursive_read_only_mounts
    assert not parse_features('{"mountOptions": ["ro"]}', kernel_has_mount_setattr=True).recursive_read_only_mounts
    assert parse_features("{}", kernel_has_mount_setattr=True) == HandlerFeatures()
    with pytest.raises(ValueError):
        parse_features("[]", kernel_has_mount_setattr=True)


def test_query_features(tmp_path: Path) -> None:
    assert query_features(script(tmp_path / "runc", f"echo '{RUNC_LIKE}'\n")).recursive_read_only_mounts
    # crun before 1.8.6 has no `features` command: nothing is advertised
    old_crun = script(tmp_path / "crun", "echo 'unknown command features' >&2; exit 1\n")
    assert query_features(old_crun) == HandlerFeatures()
    assert query_features(script(tmp_path / "garbage", "echo not json\n")) == HandlerFeatures()
    assert query_features(str(tmp_path / "missing")) == HandlerFeatures()


def test_features_are_asked_once(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    runtime = script(tmp_path / "runc", f"echo x >> {calls}\necho '{RUNC_LIKE}'\n")
    handler = ConmonHandler("runc", runtime, tmp_path / "state")
    assert handler.features().recursive_read_only_mounts and handler.features().recursive_read_only_mounts
    assert calls.read_text() == "x\n"


def test_container_user() -> None:
    user = container_user(User(1000, 1000, [1000, 1234]))
    assert (user.linux.uid, user.linux.gid, list(user.linux.supplemental_groups)) == (1000, 1000, [1000, 1234])
    assert list(container_user(User(0, 0, [])).linux.supplemental_groups) == []
