"""ExecSync output had no bound (containerd CVE-2022-31030, CRI-O CVE-2022-1708): any exec
probe could make pycri hold all a container printed (500 MB of output peaked pycri at 2 GiB,
an endless `yes` under a 10 s timeout at 11 GiB), and a timed-out command's background
processes ran on. pycri keeps the first 16 MiB of each stream and drops the rest, and at the
timeout kills the command and what it started."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from pycri.api.cri import api_pb2 as cri
from pycri.api.cri import api_pb2_grpc
from tests.e2e.harness import Pycri, rss_kib

LIMIT = 16 * 1024 * 1024
GROWTH_BOUND_KIB = 200 * 1024


def stub(pycri: Pycri) -> Any:
    channel = grpc.insecure_channel(f"unix://{pycri.socket}", options=[
        ("grpc.max_receive_message_length", 256 * 1024 * 1024)])
    return api_pb2_grpc.RuntimeServiceStub(channel)


def peak_growth_kib(pid: int, call: Callable[[], Any]) -> tuple[int, Any]:
    """Run `call` in a thread and sample the daemon's RSS until it returns: (peak growth, result)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test below
            outcome["error"] = exc

    baseline = rss_kib(pid)
    peak = baseline
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    while thread.is_alive():
        peak = max(peak, rss_kib(pid))
        thread.join(0.02)  # a sampling period, not a synchronisation
    peak = max(peak, rss_kib(pid))
    return peak - baseline, outcome


def wait_for(predicate: Callable[[], bool], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


@pytest.fixture
def container(pycri: Pycri) -> str:
    pod = pycri.run_pod("execout")
    return pycri.run(pod, "execout", "noisy", ["sleep", "3600"])


def test_exec_sync_output_is_capped(pycri: Pycri, container: str) -> None:
    assert pycri.process is not None
    command = ["sh", "-c", "head -c 500000000 /dev/zero; head -c 40000000 /dev/zero >&2; echo done >&2"]
    request = cri.ExecSyncRequest(container_id=container, cmd=command, timeout=600)
    growth, outcome = peak_growth_kib(pycri.process.pid, lambda: stub(pycri).ExecSync(request, timeout=900))
    assert "error" not in outcome, outcome.get("error")
    reply = outcome["result"]
    assert reply.exit_code == 0
    # at most 16 MiB a stream, and both together in one message kubelet accepts (16 MiB)
    assert 0 < len(reply.stdout) <= LIMIT and set(reply.stdout) == {0}
    assert 0 < len(reply.stderr) <= LIMIT and set(reply.stderr) == {0}, "stderr keeps its beginning"
    assert len(reply.SerializeToString()) <= LIMIT
    assert growth < GROWTH_BOUND_KIB, f"pycri grew by {growth // 1024} MiB for one exec"
    assert "exec output truncated" in pycri.log.read_text()


@pytest.mark.parametrize("handler", ["", "runc"])
def test_exec_sync_timeout_kills_the_command_and_what_it_started(pycri: Pycri, handler: str) -> None:
    assert pycri.process is not None
    pod = pycri.run_pod(f"execyes{handler}", runtime=handler)
    container = pycri.run(pod, f"execyes{handler}", "noisy", ["sleep", "3600"])
    # two endless writers: one the exec'd shell waits for, one in the background
    request = cri.ExecSyncRequest(container_id=container, cmd=["sh", "-c", "yes >&2 & yes"], timeout=3)
    growth, outcome = peak_growth_kib(pycri.process.pid, lambda: stub(pycri).ExecSync(request, timeout=600))
    error = outcome.get("error")
    assert isinstance(error, grpc.RpcError), outcome
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED, error
    assert growth < GROWTH_BOUND_KIB, f"pycri grew by {growth // 1024} MiB for one exec"

    def no_yes_left() -> bool:
        """No live `yes` in the container (a killed one may stay a zombie: `sleep` reaps nothing)."""
        stats = pycri.crictl("exec", container, "sh", "-c", "cat /proc/[0-9]*/stat 2>/dev/null; true").stdout
        return not any(line.split(") ", 1)[1][:1] not in ("Z", "X")
                       for line in stats.splitlines() if "(yes) " in line)

    wait_for(no_yes_left)
    # and the container is still usable
    assert pycri.crictl("exec", container, "echo", "still here").stdout.strip() == "still here"
