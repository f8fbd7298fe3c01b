"""Exits of watched monitors (containers/monitors.py): List and Status ask no handler about a
container whose monitor lives and wrote no exit file, and still never report a container that
has exited (an exit file, an ended monitor, a lost one) as running; a container that cannot be
watched is asked about as before; a restarted service watches the monitors again. Against the
fake handler, whose monitors are pipes; and ConmonHandler.watch against a real process."""
from __future__ import annotations

import os
import select
import subprocess
import threading
import time
from pathlib import Path

import pytest

from pycri.common.lifecycle import STOPPED
from pycri.containers.conmon import ConmonHandler
from pycri.containers.exit_watcher import ExitWatcher
from pycri.containers.fake import FakeHandler
from pycri.containers.handler import ContainerPaths, ExitStatus
from pycri.containers.monitors import MonitorWatches
from pycri.containers.records import CREATED, EXITED, RUNNING, ContainerRecord
from pycri.containers.service import ContainerService
from pycri.kernel.fake import RecordingSyscall
from pycri.store.db import Database
from tests.unit.test_container_service import new

DEADLINE = 30.0


def until(condition, seconds: float = DEADLINE) -> None:  # noqa: ANN001
    """Poll `condition` until it holds or `seconds` pass (the assertions after say which)."""
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


def service(tmp_path: Path, fake: FakeHandler, cap: int | None = None) -> ContainerService:
    containers = ContainerService(Database(tmp_path / "db.sqlite"), tmp_path / "containers", tmp_path / "exits",
                                  {"fake": fake}, "fake", RecordingSyscall())
    if cap is not None:
        containers.monitors.cap = cap
    return containers


def running(containers: ContainerService, tmp_path: Path, name: str = "main") -> ContainerRecord:
    return containers.start(containers.create(new(tmp_path, name)).id)


def asked(fake: FakeHandler) -> int:
    return len(fake.called("exit_status"))


def states(containers: ContainerService) -> dict[str, str]:
    return {r.id: r.state for r in containers.list()}


def test_a_watched_running_container_is_not_asked_about(tmp_path: Path) -> None:
    fake = FakeHandler()
    containers = service(tmp_path, fake)
    records = [running(containers, tmp_path, f"c{i}") for i in range(3)]
    assert all(containers.monitors.watching(r.id) for r in records)
    before = asked(fake)
    for _ in range(3):
        assert set(states(containers).values()) == {RUNNING}
        assert containers.get(records[0].id).state == RUNNING
    assert asked(fake) == before


def test_an_ended_monitor_is_noticed_by_list_and_status(tmp_path: Path) -> None:
    fake = FakeHandler()
    containers = service(tmp_path, fake)
    a, b = running(containers, tmp_path, "a"), running(containers, tmp_path, "b")
    fake.exit(a.id, 3)  # its monitor records the exit and ends (no exit file here: the pipe closes)
    assert states(containers) == {a.id: EXITED, b.id: RUNNING}
    assert not containers.monitors.watching(a.id) and containers.monitors.watching(b.id)
    fake.exit(b.id, 0)
    status = containers.get(b.id)
    assert (status.state, status.exit_code, status.reason) == (EXITED, 0, "Completed")


def test_an_exit_file_is_noticed_while_the_monitor_still_lives(tmp_path: Path) -> None:
    fake = FakeHandler()
    containers = service(tmp_path, fake)
    a, b = running(containers, tmp_path, "a"), running(containers, tmp_path, "b")
    for record in (a, b):  # the monitor has written its exit file and not yet exited
        fake.states.pop(record.id)
        fake.exits[record.id] = ExitStatus(1, time.time_ns())
    (containers.exits / a.id).write_text("1")
    assert states(containers)[a.id] == EXITED
    (containers.exits / b.id).write_text("1")
    assert containers.get(b.id).state == EXITED


def test_a_lost_monitor_is_noticed_without_an_exit_file(tmp_path: Path) -> None:
    fake = FakeHandler()
    containers = service(tmp_path, fake)
    created = containers.create(new(tmp_path, "created"))
    record = running(containers, tmp_path)
    fake.lose(record.id)
    fake.lose(created.id)
    listed = {r.id: r for r in containers.list()}
    assert (listed[record.id].state, listed[record.id].reason) == (EXITED, "Unknown")
    assert listed[created.id].state == EXITED


@pytest.mark.parametrize("how", ["no pidfds", "over the cap"])
def test_an_unwatched_container_is_asked_about_on_every_look(tmp_path: Path, how: str) -> None:
    fake = FakeHandler(watchable=how != "no pidfds")
    containers = service(tmp_path, fake, cap=0 if how == "over the cap" else None)
    record = running(containers, tmp_path)
    assert not containers.monitors.watching(record.id)
    before = asked(fake)
    assert states(containers) == {record.id: RUNNING}
    assert containers.get(record.id).state == RUNNING
    assert asked(fake) == before + 2
    fake.lose(record.id)
    assert states(containers) == {record.id: EXITED}


def test_a_restarted_service_watches_the_live_monitors_again(tmp_path: Path) -> None:
    fake = FakeHandler()
    first = service(tmp_path, fake)
    alive, gone = running(first, tmp_path, "alive"), running(first, tmp_path, "gone")
    first.monitors.close()  # the daemon ends; the monitors (and the fake's pipes) stay
    fake.lose(gone.id)
    again = service(tmp_path, fake)
    again.recover()
    assert again.monitors.watching(alive.id) and not again.monitors.watching(gone.id)
    assert again.table.get(gone.id).state == EXITED  # type: ignore[union-attr]
    before = asked(fake)
    assert states(again) == {alive.id: RUNNING, gone.id: EXITED}
    assert asked(fake) == before
    fake.exit(alive.id, 0)
    assert states(again) == {alive.id: EXITED, gone.id: EXITED}


def test_the_watcher_publishes_an_ended_monitor_at_once(tmp_path: Path) -> None:
    fake = FakeHandler()
    containers = service(tmp_path, fake)
    record = running(containers, tmp_path)
    stopped: list[str] = []
    containers.events.subscribe(lambda event: stopped.append(event.subject_id) if event.kind == STOPPED else None)
    watcher = ExitWatcher(containers, interval=60, sweep_interval=600).start()  # only a monitor's end wakes it
    try:
        fake.lose(record.id)
        until(lambda: stopped)
    finally:
        watcher.stop()
    assert stopped == [record.id]
    assert containers.table.get(record.id).state == EXITED  # type: ignore[union-attr]


def test_the_watcher_notices_an_unwatched_containers_exit_file_at_once(tmp_path: Path) -> None:
    fake = FakeHandler(watchable=False)
    containers = service(tmp_path, fake)
    record = running(containers, tmp_path)
    stopped: list[str] = []
    containers.events.subscribe(lambda event: stopped.append(event.subject_id) if event.kind == STOPPED else None)
    watcher = ExitWatcher(containers, interval=60, sweep_interval=600).start()  # only the exit file wakes it
    try:
        fake.states.pop(record.id)
        fake.exits[record.id] = ExitStatus(1, time.time_ns())
        temporary = containers.exits / f".{record.id}.tmp"  # as conmon writes it: a temporary name, renamed
        temporary.write_text("1")
        temporary.rename(containers.exits / record.id)
        until(lambda: stopped)
    finally:
        watcher.stop()
    assert stopped == [record.id]


def test_the_watcher_sleeps_long_while_nothing_happens_and_looks_often_after_a_wake(tmp_path: Path) -> None:
    fake = FakeHandler()
    containers = service(tmp_path, fake)
    record = running(containers, tmp_path)
    timeouts: list[float] = []
    real_wait = containers.monitors.wait

    def wait(timeout: float) -> bool:
        timeouts.append(timeout)
        return real_wait(timeout)
    containers.monitors.wait = wait  # type: ignore[method-assign]
    watcher = ExitWatcher(containers, interval=0.5, sweep_interval=600, idle_interval=300).start()
    try:
        until(lambda: len(timeouts) >= 2)
        fake.lose(record.id)  # its monitor ends: the wait returns, and the next looks come every interval
        until(lambda: len(timeouts) >= 3)
    finally:
        watcher.stop()
    assert timeouts[:3] == [0, 300, 0.5]  # a first look at once, then a long sleep until the monitor's end
    assert containers.table.get(record.id).state == EXITED  # type: ignore[union-attr]


def test_without_exit_file_wakes_the_watcher_looks_every_interval(tmp_path: Path) -> None:
    fake = FakeHandler()
    containers = service(tmp_path, fake)
    containers.monitors.watch_directory = lambda path: False  # type: ignore[method-assign]  # (no inotify)
    timeouts: list[float] = []
    real_wait = containers.monitors.wait

    def wait(timeout: float) -> bool:
        timeouts.append(timeout)
        return real_wait(0)
    containers.monitors.wait = wait  # type: ignore[method-assign]
    watcher = ExitWatcher(containers, interval=0.5, sweep_interval=600, idle_interval=300).start()
    try:
        until(lambda: len(timeouts) >= 4)
    finally:
        watcher.stop()
    assert timeouts[0] == 0 and set(timeouts[1:4]) == {0.5}


def test_the_sweep_asks_only_about_what_watching_cannot_tell(tmp_path: Path) -> None:
    fake = FakeHandler()
    containers = service(tmp_path, fake)
    records = [running(containers, tmp_path, f"c{i}") for i in range(3)]
    before = asked(fake)
    assert containers.sweep() == []
    assert asked(fake) == before  # watched monitors that live: nobody asked
    fake.states.pop(records[1].id)  # one wrote its exit file, its monitor not yet gone
    fake.exits[records[1].id] = ExitStatus(2, time.time_ns())
    (containers.exits / records[1].id).write_text("2")
    assert containers.sweep() == [records[1].id]


def test_the_sweep_finds_what_watching_missed(tmp_path: Path) -> None:
    fake = FakeHandler(watchable=False)
    containers = service(tmp_path, fake)
    record = running(containers, tmp_path)
    fake.lose(record.id)
    assert containers.notice_exits() == []  # no exit file, no watch
    assert containers.sweep() == [record.id]
    assert containers.table.get(record.id).state == EXITED  # type: ignore[union-attr]


def test_remove_drops_the_watch(tmp_path: Path) -> None:
    fake = FakeHandler()
    containers = service(tmp_path, fake)
    record = running(containers, tmp_path)
    containers.remove(record.id)
    assert not containers.monitors.watching(record.id)
    assert containers.monitors.ended() == set()


def test_a_created_container_is_watched_and_started_keeps_its_watch(tmp_path: Path) -> None:
    fake = FakeHandler()
    containers = service(tmp_path, fake)
    record = containers.create(new(tmp_path))
    assert containers.monitors.watching(record.id) and containers.get(record.id).state == CREATED
    containers.start(record.id)
    assert containers.monitors.watching(record.id) and containers.get(record.id).state == RUNNING


# -- MonitorWatches and ConmonHandler.watch ----------------------------------------------

def test_watches_report_the_ended_ones_and_close_what_they_drop() -> None:
    watches = MonitorWatches()
    ends = {}
    for name in ("a", "b"):
        read_end, ends[name] = os.pipe()
        watches.add(name, read_end)
    assert watches.ended() == set() and watches.has_ended("a") is False and watches.has_ended("x") is None
    os.close(ends["a"])
    assert watches.ended() == {"a"} and watches.has_ended("a") is True
    watches.discard("a")
    assert watches.ended() == set() and not watches.watching("a")
    assert watches.wait_ended("b", 0) is False and watches.wait_ended("x", DEADLINE) is None
    started = time.monotonic()
    os.close(ends["b"])
    assert watches.ended(DEADLINE) == {"b"} and time.monotonic() - started < DEADLINE
    assert watches.wait_ended("b", DEADLINE) is True
    watches.close()


def test_a_waiter_wakes_when_a_file_is_completed_in_the_watched_directory(tmp_path: Path) -> None:
    watches = MonitorWatches()
    assert watches.watch_directory(tmp_path) and watches.watch_directory(tmp_path)  # (once is enough)
    assert watches.wait(0) is False
    (tmp_path / "c1.tmp").write_text("0")  # written and closed
    assert watches.ended() == set() and watches.wait(DEADLINE) is True
    assert watches.wait(0) is False  # the waiter took the news
    (tmp_path / "c1.tmp").rename(tmp_path / "c1")
    assert watches.ended(DEADLINE) == set()  # a waiting look wakes (no monitor ended), and takes the news too
    assert watches.wait(0) is False
    watches.close()
    missing = MonitorWatches()
    assert not missing.watch_directory(tmp_path / "missing") and missing.wait(0) is False
    missing.close()


def test_a_waiter_wakes_when_told_or_when_a_monitor_ends() -> None:
    watches = MonitorWatches()
    read_end, write_end = os.pipe()
    watches.add("a", read_end)
    woken: list[set[str]] = []
    waiter = threading.Thread(target=lambda: woken.append(watches.ended(DEADLINE)))
    waiter.start()
    watches.wake()  # (a stopping watcher)
    waiter.join(DEADLINE)
    assert woken == [set()] and not waiter.is_alive()
    waiter = threading.Thread(target=lambda: woken.append(watches.ended(DEADLINE)))
    waiter.start()
    os.close(write_end)
    waiter.join(DEADLINE)
    assert woken == [set(), {"a"}]
    watches.close()


def test_conmon_watch_is_a_pidfd_of_the_live_monitor(tmp_path: Path) -> None:
    monitor = subprocess.Popen(["sleep", "60"])
    paths = ContainerPaths(bundle=tmp_path, persist=tmp_path, exit_file=tmp_path / "exit", log_path="")
    try:
        handler = ConmonHandler("pycri", "/bin/false", tmp_path, monitor_pid=lambda pidfile, cid: monitor.pid)
        fd = handler.watch("c", paths)
        assert fd is not None
        try:
            assert not select.select([fd], [], [], 0)[0]
            monitor.kill()
            assert select.select([fd], [], [], DEADLINE)[0]
        finally:
            os.close(fd)
    finally:
        monitor.kill()
        monitor.wait()
    gone = ConmonHandler("pycri", "/bin/false", tmp_path, monitor_pid=lambda pidfile, cid: None)
    assert gone.watch("c", paths) is None


def test_status_and_list_without_wait_never_wait_for_a_change_under_way(tmp_path: Path) -> None:
    # ContainerStatus and ListContainers run in gRPC's polling thread: an exit found while another
    # thread holds the transition lock (a remove, a start) is left for the exit watcher to record
    fake = FakeHandler()
    containers = service(tmp_path, fake)
    record = running(containers, tmp_path)
    fake.exit(record.id, 2)
    held, release = threading.Event(), threading.Event()

    def change_under_way() -> None:
        with containers._transition:
            held.set()
            release.wait(DEADLINE)

    holder = threading.Thread(target=change_under_way)
    holder.start()
    seen: list[str] = []
    try:
        assert held.wait(DEADLINE)
        reader = threading.Thread(target=lambda: seen.extend(
            [containers.get(record.id, wait=False).state, *(r.state for r in containers.list(wait=False))]))
        reader.start()
        reader.join(DEADLINE)  # (a reader that waited for the lock would still be waiting: the holder waits for us)
        assert not reader.is_alive()
        assert seen == [RUNNING, RUNNING]  # its last state, until the exit is recorded
        stopped: list[str] = []
        containers.events.subscribe(lambda event: stopped.append(event.subject_id) if event.kind == STOPPED else None)
        watcher = ExitWatcher(containers, interval=60, sweep_interval=600).start()
        try:
            release.set()
            until(lambda: stopped)
        finally:
            watcher.stop()
    finally:
        release.set()
        holder.join(DEADLINE)
    assert stopped == [record.id]
    assert (containers.get(record.id, wait=False).state, containers.get(record.id).exit_code) == (EXITED, 2)
