"""ListContainerStats sent as kept bytes: each container's attributes are encoded once (they
are fixed at create) and joined with the sample's figures; the reply reads as the message the
ContainerStats call builds, and a removed container's kept attributes go with it."""
from __future__ import annotations

import pytest

from pycri import cgroups
from pycri.api.cri import api_pb2 as cri
from pycri.containers import service as service_module
from pycri.criserver.list_replies import Encoded
from tests.unit.test_cri_service import CriUnderTest, t  # noqa: F401 (t is a fixture)


def _without_times(stats: cri.ContainerStats) -> cri.ContainerStats:
    copy = cri.ContainerStats()
    copy.CopyFrom(stats)
    for usage in (copy.cpu, copy.memory, copy.writable_layer):
        usage.ClearField("timestamp")
    copy.cpu.ClearField("usage_nano_cores")  # a rate from the sample before, which differs per call
    return copy


def test_listed_stats_read_as_each_containers_own(t: CriUnderTest) -> None:
    pod_id = t.run_pod("web")
    ids = [t.create(pod_id, f"c{n}") for n in range(3)]
    reply = t.servicer.ListContainerStats(cri.ListContainerStatsRequest(), None)
    assert isinstance(reply, Encoded)
    listed = cri.ListContainerStatsResponse.FromString(reply.data).stats
    assert [s.attributes.id for s in listed] == ids
    for item in listed:
        alone = t.call("ContainerStats", cri.ContainerStatsRequest(container_id=item.attributes.id)).stats
        assert _without_times(item) == _without_times(alone)
        assert item.attributes.metadata.name.startswith("c") and item.writable_layer.fs_id.mountpoint


def test_attributes_are_kept_once_and_dropped_with_the_container(t: CriUnderTest) -> None:
    pod_id = t.run_pod("web")
    first, second = t.create(pod_id, "a"), t.create(pod_id, "b")
    t.call("ListContainerStats", cri.ListContainerStatsRequest())
    kept = t.servicer.stats_attributes.entry_of(first, "", lambda: None)  # (no build: it is kept)
    assert kept and t.servicer.stats_attributes.entry_of(second, "", lambda: None)
    t.call("RemoveContainer", cri.RemoveContainerRequest(container_id=first))
    assert first not in t.servicer.stats_attributes._entries
    listed = t.call("ListContainerStats", cri.ListContainerStatsRequest()).stats
    assert [s.attributes.id for s in listed] == [second]


def test_each_containers_cgroup_is_found_once_and_forgotten_with_it(t: CriUnderTest,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []
    managers: dict[str, Cgroup] = {}

    class Cgroup:  # (the figures of a container's cgroup: what a stats call reads each time)
        kept = False  # its files are kept open (cgroups/kept_files.py)

        def usage(self) -> cgroups.Stats:
            return cgroups.Stats(cpu_usage_ns=1000, memory_usage=4096)

        def keep_files(self) -> None:
            self.kept = True

        def close_files(self) -> None:
            self.kept = False

    def new_manager(cgroups_path: str, container_id: str) -> Cgroup:
        made.append(container_id)
        managers[container_id] = Cgroup()
        return managers[container_id]

    monkeypatch.setattr(service_module.cgroups, "new_manager", new_manager)
    pod_id = t.run_pod("web")
    first, second = t.create(pod_id, "a"), t.create(pod_id, "b")
    for _ in range(3):
        listed = t.call("ListContainerStats", cri.ListContainerStatsRequest()).stats
        assert [s.memory.usage_bytes.value for s in listed] == [4096, 4096]
    assert sorted(made) == sorted([first, second])
    assert managers[first].kept and managers[second].kept
    t.call("RemoveContainer", cri.RemoveContainerRequest(container_id=first))
    assert first not in t.servicer.containers._managers and second in t.servicer.containers._managers
    assert not managers[first].kept and managers[second].kept  # its files closed with it
    t.start(second)
    t.handler.exit(second, 0)
    assert t.status(second).state == cri.CONTAINER_EXITED
    assert not managers[second].kept  # an exited container's stats read no cgroup file
