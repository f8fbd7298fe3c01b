"""The writable layer's disk use is walked again only when the last walk is 10 s old (as
containerd's CRI refreshes snapshot usage), and nothing is kept of a removed container."""
from __future__ import annotations

from pathlib import Path

import pytest

from pycri.api.cri import api_pb2 as cri
from pycri.containers import service
from tests.unit.test_cri_service import new_test_cri_service


def test_usage_is_kept_for_ten_seconds_then_walked_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    t = new_test_cri_service(tmp_path)
    container_id = t.create(t.run_pod())
    walks: list[Path] = []
    real = service.usage
    monkeypatch.setattr(service, "usage", lambda path: walks.append(path) or real(path))
    clock = [10**12]
    monkeypatch.setattr(service.time, "time_ns", lambda: clock[0])
    record = t.container_service.get(container_id)
    t.container_service.stats(record)
    t.container_service.stats(record)
    clock[0] += service.WRITABLE_USAGE_TTL_NS - 1
    t.container_service.stats(record)
    assert len(walks) == 1
    clock[0] += 1
    t.container_service.stats(record)
    assert len(walks) == 2
    t.call("RemoveContainer", cri.RemoveContainerRequest(container_id=container_id))
    assert container_id not in t.container_service._usage
    t.container_service._writable_usage(record, clock[0])  # a stats call that raced the removal
    assert container_id not in t.container_service._usage
