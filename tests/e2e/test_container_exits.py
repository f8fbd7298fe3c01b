"""A container that exits is listed as exited: ListContainers (what kubelet's PLEG relists)
and ContainerStatus report CONTAINER_EXITED once its process has exited, once its monitor
(conmon) has been killed (a lost monitor: exit code 255, reason Unknown), and so after a
daemon restart too, for containers that were running when it restarted. pycri watches the
monitors instead of asking about each container per call (containers/monitors.py); these
checks hold whatever the watching does. Polled with generous deadlines; nothing is timed."""
from __future__ import annotations

import os
import signal
from pathlib import Path

from pycri.api.cri import api_pb2 as cri

from tests.e2e.harness import Pycri
from tests.e2e.test_pods import exited, pid_of, wait_for

DEADLINE = 60.0


def listed_states(pycri: Pycri) -> dict[str, int]:
    reply = pycri.runtime_stub().ListContainers(cri.ListContainersRequest(), timeout=30)
    return {c.id: c.state for c in reply.containers}


def status(pycri: Pycri, container_id: str) -> cri.ContainerStatus:
    return pycri.runtime_stub().ContainerStatus(cri.ContainerStatusRequest(container_id=container_id),
                                                timeout=30).status


def conmon_pid(pycri: Pycri, container_id: str) -> int:
    return int((pycri.root / "containers" / container_id / "bundle" / "conmon.pid").read_text())


def wait_listed_exited(pycri: Pycri, container_id: str) -> None:
    """Polls ListContainers alone (no status call first) until it lists the container exited."""
    wait_for(lambda: listed_states(pycri)[container_id] == cri.CONTAINER_EXITED, DEADLINE)


def gated(pycri: Pycri, pod: str, pod_name: str, name: str, gate: Path, code: int) -> str:
    """A container that exits with `code` once <gate>/go exists."""
    return pycri.run(pod, pod_name, name, ["sh", "-c", f"until [ -e /gate/go ]; do sleep 0.1; done; exit {code}"],
                     mounts=[{"container_path": "/gate", "host_path": str(gate)}])


def kill_conmon(pycri: Pycri, container_id: str) -> None:
    pid = conmon_pid(pycri, container_id)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: exited(pid), DEADLINE)


def test_an_exit_and_a_lost_monitor_are_listed(pycri: Pycri, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    pod = pycri.run_pod("exits")
    quitter = gated(pycri, pod, "exits", "quitter", gate, 7)
    orphaned = pycri.run(pod, "exits", "orphaned", ["sleep", "1000"])
    sleeper = pycri.run(pod, "exits", "sleeper", ["sleep", "1000"])
    assert set(listed_states(pycri).values()) == {cri.CONTAINER_RUNNING}

    (gate / "go").touch()
    wait_listed_exited(pycri, quitter)
    done = status(pycri, quitter)
    assert (done.state, done.exit_code, done.reason) == (cri.CONTAINER_EXITED, 7, "Error")

    orphan_pid = pid_of(pycri, orphaned)
    kill_conmon(pycri, orphaned)  # the monitor dies without an exit file
    wait_listed_exited(pycri, orphaned)
    lost = status(pycri, orphaned)
    assert (lost.state, lost.exit_code, lost.reason) == (cri.CONTAINER_EXITED, 255, "Unknown")

    assert listed_states(pycri)[sleeper] == cri.CONTAINER_RUNNING
    assert status(pycri, sleeper).state == cri.CONTAINER_RUNNING
    pycri.crictl("rm", "-f", orphaned)  # its process outlived its monitor: remove kills it
    wait_for(lambda: exited(orphan_pid), DEADLINE)
    pycri.crictl("rmp", "-f", pod)


def test_exits_after_a_restart_are_listed(pycri: Pycri, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    pod = pycri.run_pod("restarted")
    quitter = gated(pycri, pod, "restarted", "quitter", gate, 0)
    orphaned = pycri.run(pod, "restarted", "orphaned", ["sleep", "1000"])
    crashed = pycri.run(pod, "restarted", "crashed", ["sleep", "1000"])
    sleeper = pycri.run(pod, "restarted", "sleeper", ["sleep", "1000"])
    pycri.kill()  # a crash: nothing is handed over
    kill_conmon(pycri, crashed)  # a monitor that dies while pycri is down
    pycri.start()
    assert listed_states(pycri)[crashed] == cri.CONTAINER_EXITED  # noticed on start-up
    assert listed_states(pycri)[quitter] == cri.CONTAINER_RUNNING

    (gate / "go").touch()  # exits after the restart: the monitors are watched again
    wait_listed_exited(pycri, quitter)
    assert (status(pycri, quitter).exit_code, status(pycri, quitter).reason) == (0, "Completed")
    kill_conmon(pycri, orphaned)
    wait_listed_exited(pycri, orphaned)
    assert status(pycri, orphaned).reason == "Unknown"
    assert listed_states(pycri)[sleeper] == cri.CONTAINER_RUNNING

    pycri.stop()  # an orderly restart keeps them as they are
    pycri.start()
    states = listed_states(pycri)
    assert (states[quitter], states[orphaned], states[crashed], states[sleeper]) == (
        cri.CONTAINER_EXITED, cri.CONTAINER_EXITED, cri.CONTAINER_EXITED, cri.CONTAINER_RUNNING)
    pycri.crictl("rmp", "-f", pod)
