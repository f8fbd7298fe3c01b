"""Real conmon (2.1.x) drives pycri-runtime exactly as it drives runc: `create --bundle B
--pid-file P ID` with its pipes as the container's stdio, then our `start`; conmon writes
the CRI log file and the exit file."""
from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.conftest import CONMON, Runtime, new_id

CRI_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)) (stdout|stderr) ([PF]) (.*)$")


def _conmon(launcher: Path, root: Path, cid: str, bundle: Path, work: Path, *extra: str) -> tuple[dict, str]:
    args = [
        CONMON, "--api-version", "1", "--cid", cid, "--cuuid", cid, "--name", cid,
        "--runtime", str(launcher), "--runtime-arg", "--root", "--runtime-arg", str(root),
        "--bundle", str(bundle), "--container-pidfile", str(work / "container.pid"),
        "--conmon-pidfile", str(work / "conmon.pid"), "--exit-dir", str(work / "exits"),
        "--persist-dir", str(work / "persist"), "--socket-dir-path", str(work), "--full-attach",
        "--log-path", f"k8s-file:{work / 'ctr.log'}", "--log-level", "debug", *extra,
    ]
    read_end, write_end = os.pipe()
    try:
        process = subprocess.Popen(args, env={"PATH": os.environ["PATH"], "_OCI_SYNCPIPE": str(write_end)},
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   pass_fds=(write_end,), start_new_session=True, cwd=str(bundle))
        os.close(write_end)
        write_end = -1
        _, err = process.communicate(timeout=60)
        data = b""
        while b"\n" not in data:
            chunk = os.read(read_end, 4096)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
    return (json.loads(data.split(b"\n")[0]) if data else {}), err.decode(errors="replace")


@pytest.mark.skipif(CONMON is None, reason="conmon is not installed")
def test_conmon_drives_pycri_runtime(pycri: Runtime, launcher: Path, make_bundle, tmp_path: Path,
                                     subreaper: set[int]) -> None:
    bundle = make_bundle("sh", "-c", "echo line one; echo an error >&2; printf 'partial'; sleep 0.2; exit 3")
    work = tmp_path / "conmon"
    (work / "exits").mkdir(parents=True)
    (work / "persist").mkdir()
    cid = new_id("cm")
    pycri.created.append(cid)
    pycri.cgroups[cid] = bundle.linux["cgroupsPath"]
    report, conmon_err = _conmon(launcher, pycri.root, cid, bundle.path, work)
    conmon_pid = int((work / "conmon.pid").read_text())
    subreaper.add(conmon_pid)
    pid = int(report.get("data", -1))
    assert pid > 0, (report, conmon_err)
    assert int((work / "container.pid").read_text()) == pid
    state = pycri.state(cid)
    assert state["status"] == "created" and state["pid"] == pid
    assert Path(f"/proc/{pid}/status").read_text().count(f"PPid:\t{conmon_pid}") == 1  # conmon is its reaper
    pycri.run("start", cid, check=True)
    exit_file = work / "exits" / cid
    deadline = time.monotonic() + 60
    while not exit_file.exists() or not exit_file.read_text():
        assert time.monotonic() < deadline, "conmon wrote no exit file"
        time.sleep(0.05)
    assert exit_file.read_text().strip() == "3"
    assert pycri.wait_status(cid, "stopped")["pid"] == 0
    entries = []
    for line in (work / "ctr.log").read_text().splitlines():
        match = CRI_LINE.match(line)
        assert match, f"not a CRI log line: {line!r}"
        entries.append((match.group(4), match.group(5), match.group(6)))
    assert ("stdout", "F", "line one") in entries
    assert ("stderr", "F", "an error") in entries
    assert ("stdout", "P", "partial") in entries
    pycri.run("delete", cid, check=True)


@pytest.mark.skipif(CONMON is None, reason="conmon is not installed")
def test_conmon_reports_a_failed_create(pycri: Runtime, launcher: Path, make_bundle, tmp_path: Path,
                                        subreaper: set[int]) -> None:
    bundle = make_bundle("no-such-binary")
    work = tmp_path / "conmon"
    (work / "exits").mkdir(parents=True)
    (work / "persist").mkdir()
    cid = new_id("cm")
    pycri.created.append(cid)
    pycri.cgroups[cid] = bundle.linux["cgroupsPath"]
    report, _ = _conmon(launcher, pycri.root, cid, bundle.path, work)
    if (work / "conmon.pid").exists():
        subreaper.add(int((work / "conmon.pid").read_text()))
    assert int(report.get("data", 0)) < 0
    assert "executable file not found" in report.get("message", "")
    assert pycri.run("state", cid).returncode == 1
