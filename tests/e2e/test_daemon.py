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


def test_orphans_that_escape_a_container_are_reaped(pycri: Pycri) -> None:
    """A host-PID container's background process outlives the container; once it dies, it is
    pycri's child (a subreaper): pycri must reap it, not keep a zombie."""
    import signal as signals
    import time
    from pathlib import Path

    node = {"pid": 2}
    pod = pycri.run_pod("orphans", linux={"security_context": {"namespace_options": node}})
    ctr = pycri.run(pod, "orphans", "main", ["sh", "-c", "(sleep 4321 &); exec sleep 1000"],
                    linux={"security_context": {"namespace_options": node}})

    def escaped() -> list[tuple[int, int, str]]:
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                text = stat.read_text()
                cmdline = (stat.parent / "cmdline").read_bytes()
            except OSError:
                continue
            fields = text.rsplit(")", 1)[1].split()
            if b"4321" in cmdline or (fields[0] == "Z" and "(sleep)" in text and int(fields[1]) == pycri.process.pid):
                found.append((int(stat.parent.name), int(fields[1]), fields[0]))
        return found

    deadline = time.monotonic() + 60
    while not escaped():
        assert time.monotonic() < deadline, "the background sleep never started"
        time.sleep(0.05)
    pycri.crictl("stop", "--timeout", "0", ctr)
    for pid, _, state in escaped():
        if state != "Z":
            os.kill(pid, signals.SIGKILL)  # it outlived its container: now it dies, pycri's child
    # reaped once it has been a zombie for the reaper's grace period: wait for the event itself
    # (no zombie left and the reaper's log line), with a deadline far beyond the grace period
    deadline = time.monotonic() + 180
    while (leftovers := [p for p in escaped() if p[1] == pycri.process.pid]) or \
            "reaped orphaned processes" not in pycri.log.read_text():
        assert time.monotonic() < deadline, f"zombies left under pycri: {leftovers}"
        time.sleep(0.5)
