"""An image whose config names a stop signal that is no signal (`StopSignal: "99"`, "SIGFOO",
"0") made StopContainer fail (or wait out its whole timeout and SIGKILL). pycri falls back to
SIGTERM with a warning in its log, and the container stops."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

from tests.e2e.harness import Pycri
from tests.security.hostile import BUSYBOX, PREFIX, REGISTRY, ti

# exits 0 on SIGTERM (a SIGKILL would make it 137); sh as PID 1 ignores signals it has no trap for
TRAPS_TERM = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]


def push_with_stop_signal(name: str, stop_signal: str) -> str:
    """busybox, with `StopSignal` in the image config (hostile.push_image has no such field)."""
    spec = ti.ImageSpec(f"attack-{name}", [PREFIX + f"{name}:latest"], [BUSYBOX], cmd=["sh"])
    registry = ti.Registry(REGISTRY)
    repo = PREFIX.rstrip("/") + "/" + name
    with tempfile.TemporaryDirectory(prefix="pycri-attack-") as tmp:
        built = ti.Builder(Path(tmp)).build(spec)
        config_blob, layers = built.blobs[0], built.blobs[1:]
        config = json.loads(config_blob.data)
        config["config"]["StopSignal"] = stop_signal
        config_blob = ti.json_blob(config, compact=True)
        for blob in [config_blob, *layers]:
            registry.push_blob(repo, blob)
        manifest = json.loads(built.blob.data)
        manifest["config"] = ti.descriptor(manifest["config"]["mediaType"], config_blob)
        registry.push_manifest(repo, "latest", ti.Manifest(built.media_type, ti.json_blob(manifest), []))
    return f"pycri-attack/{name}"


@pytest.mark.parametrize("stop_signal", ["99", "SIGFOO", "0"])
def test_a_bogus_stop_signal_falls_back_to_sigterm(pycri: Pycri, stop_signal: str) -> None:
    tag = {"99": "n99", "SIGFOO": "foo", "0": "zero"}[stop_signal]
    image = push_with_stop_signal(f"stopsignal-{tag}", stop_signal)
    pod = pycri.run_pod(f"stopsig-{tag}")
    ctr = pycri.run(pod, f"stopsig-{tag}", "victim", TRAPS_TERM, image=image)
    # the wait is generous: SIGTERM ends it at once; a signal that does nothing waits it out
    result = pycri.crictl("stop", "--timeout", "120", ctr, check=False, timeout=300)
    assert result.returncode == 0, result.stderr
    status = pycri.crictl_json("inspect", ctr)["status"]
    assert status["state"] == "CONTAINER_EXITED"
    assert status["exitCode"] == 0, "the container was not stopped by SIGTERM"
    assert "stop signal is not a signal" in pycri.log.read_text()
