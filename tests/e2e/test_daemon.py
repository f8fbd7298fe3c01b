"""The daemon itself: socket, config, logging of CRI calls, clean shutdown, unimplemented calls."""
from __future__ import annotations

import json
import os
import stat
import subprocess

from tests.e2e.harness import VENV_BIN, Pycri


def test_socket_is_root_only(pycri: Pycri) -> None:
    st = os.stat(pycri.socket)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_uid == 0 and st.st_gid == 0


def test_sigterm_shuts_down_cleanly(pycri: Pycri) -> None:
    assert pycri.process is not None
    pycri.stop()
    assert pycri.process.returncode == 0
    assert not pycri.socket.exists()
    assert "pycri stopped" in pycri.log.read_text()


def test_every_call_is_logged_with_ids_and_duration(pycri: Pycri) -> None:
    pycri.crictl("pull", "busybox")
    pycri.crictl("inspecti", "busybox")
    pycri.crictl("ps", check=False)
    calls = [json.loads(line) for line in pycri.log.read_text().splitlines()
             if line.startswith("{") and '"cri call"' in line]
    pull = [c for c in calls if c["method"] == "PullImage"][0]
    assert pull["image"] == "busybox" and pull["code"] == "OK" and pull["duration_ms"] > 0
    status = [c for c in calls if c["method"] == "ImageStatus"][0]
    assert status["image"] == "busybox"


def test_config_command_prints_effective_config(pycri: Pycri) -> None:
    out = subprocess.run([str(VENV_BIN / "pycri"), "--config", str(pycri.config), "config"],
                         capture_output=True, text=True, check=True).stdout
    assert f'root = "{pycri.root}"' in out
    assert '"docker.io" = ["http://127.0.0.1:5000/docker.io"]' in out
    bad = pycri.base / "bad.toml"
    bad.write_text("no_such_key = 1\n")
    result = subprocess.run([str(VENV_BIN / "pycri"), "--config", str(bad), "config"], capture_output=True, text=True)
    assert result.returncode == 2 and "unknown key(s) no_such_key" in result.stderr


def test_images_filter(pycri: Pycri) -> None:
    pycri.crictl("pull", "busybox")
    pycri.crictl("pull", "pycri/user-uid")
    listed = pycri.crictl_json("images", "pycri/user-uid")["images"]
    assert [i["repoTags"] for i in listed] == [["docker.io/pycri/user-uid:latest"]]
    assert pycri.crictl_json("images", "pycri/absent")["images"] == []
