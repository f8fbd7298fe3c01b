"""common/log.py's JSON lines: what structlog's JSONRenderer with json.dumps wrote, with one
encoder for every line; and the CRI call line's ids (criserver/errors.py ids_of)."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import structlog

from pycri.api.cri import api_pb2 as cri
from pycri.common import log
from pycri.criserver.errors import ids_of


class Custom:
    def __structlog__(self) -> str:
        return "custom!"


def test_a_line_is_what_json_dumps_with_structlogs_fallback_gives(monkeypatch: Any) -> None:
    out = io.StringIO()
    monkeypatch.setattr("sys.stderr", out)
    log.configure("info", "json")
    try:
        structlog.get_logger("t").info("cri call", method="X", duration_ms=0.12, path=Path("/a"), obj=Custom(),
                                       ids=["a", 1], none=None)
    finally:
        structlog.reset_defaults()
    line = json.loads(out.getvalue())
    assert {k: line[k] for k in ("event", "method", "duration_ms", "path", "obj", "ids", "none", "level")} == {
        "event": "cri call", "method": "X", "duration_ms": 0.12, "path": repr(Path("/a")), "obj": "custom!",
        "ids": ["a", 1], "none": None, "level": "info"}
    rendered = dict(line)
    assert out.getvalue() == json.dumps(rendered, default=structlog.processors._json_fallback_handler) + "\n"


def test_the_ids_a_call_is_logged_with() -> None:
    assert ids_of(cri.ContainerStatusRequest(container_id="c1")) == {"container_id": "c1"}
    assert ids_of(cri.ImageStatusRequest(image=cri.ImageSpec(image="busybox"))) == {"image": "busybox"}
    assert ids_of(cri.CreateContainerRequest(pod_sandbox_id="p1", config=cri.ContainerConfig(
        metadata=cri.ContainerMetadata(name="web")))) == {"pod_sandbox_id": "p1", "name": "web"}
    assert ids_of(cri.ListImagesRequest()) == {}
    assert ids_of(cri.RemoveContainerRequest(container_id="x" * 300))["container_id"].endswith("(300 characters)")

    class NotAMessage:
        container_id = "c2"
        image = cri.ImageSpec(image="i")

    assert ids_of(NotAMessage()) == {"container_id": "c2", "image": "i"}
