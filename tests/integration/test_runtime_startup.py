"""Start-up of pycri-runtime over a real container's life: what each command loads from the
standard library, under -X importtime, children included (the budget of
tests/unit/test_runtime_cli.py, there checked on the paths that fail early)."""
from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from tests.integration.conftest import Runtime, new_id, reap
from tests.integration.test_runtime_console import _listen, _read_all, _receive_master
from tests.unit.test_runtime_cli import LIGHT, OWN_PACKAGES, SYSCALLS, imported_modules

BUDGET = {
    "create": SYSCALLS, "start": LIGHT | {"select"}, "state": LIGHT, "exec": SYSCALLS,
    "exec --tty": SYSCALLS | {"_socket"}, "kill": LIGHT, "delete": LIGHT,
}


def _loaded(pycri: Runtime, launcher: Path, *args: str) -> set[str]:
    python = launcher.read_text().splitlines()[0][2:].split()[0]
    baseline = imported_modules(subprocess.run([python, "-IS", "-X", "importtime", "-c", "pass"],
                                               capture_output=True, text=True).stderr)
    # a file, not a pipe: the container keeps the stderr of `create`
    with tempfile.TemporaryFile("w+") as err:
        result = subprocess.run([python, "-IS", "-X", "importtime", str(launcher), "--root", str(pycri.root), *args],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, timeout=60)
        err.seek(0)
        text = err.read()
    assert result.returncode == 0, text
    return {m for m in imported_modules(text) - baseline if m.split(".")[0] not in OWN_PACKAGES}


def test_a_container_life_loads_only_the_light_standard_library(pycri: Runtime, launcher: Path, make_bundle,
                                                                 tmp_path: Path, subreaper: set[int]) -> None:
    bundle = make_bundle("sleep", "1000")
    cid = new_id()
    pycri.created.append(cid)  # deleted (and checked for leaks) by the fixture
    pycri.cgroups[cid] = bundle.linux["cgroupsPath"]
    loaded = {"create": _loaded(pycri, launcher, "create", "--bundle", str(bundle.path), cid)}
    pid = pycri.state(cid)["pid"]
    subreaper.add(pid)
    loaded["start"] = _loaded(pycri, launcher, "start", cid)
    loaded["state"] = _loaded(pycri, launcher, "state", cid)
    loaded["exec"] = _loaded(pycri, launcher, "exec", cid, "true")
    server = _listen(tmp_path / "tty.sock")
    try:
        loaded["exec --tty"] = _loaded(pycri, launcher, "exec", "-d", "--tty", "--console-socket",
                                       str(tmp_path / "tty.sock"), "--pid-file", str(tmp_path / "tty.pid"), cid, "true")
        master = _receive_master(server)
    finally:
        server.close()
    _read_all(master)
    os.close(master)
    assert reap(int((tmp_path / "tty.pid").read_text())) == 0  # a zombie in its PID namespace would hold the init
    loaded["kill"] = _loaded(pycri, launcher, "kill", cid, "KILL")
    assert reap(pid) == 137
    loaded["delete"] = _loaded(pycri, launcher, "delete", cid)
    over = {command: sorted(modules - BUDGET[command]) for command, modules in loaded.items()
            if modules - BUDGET[command]}
    assert not over, f"start-up imports beyond the budget: {over}"
