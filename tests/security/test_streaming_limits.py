"""Anyone who reaches the streaming server's port could open connections without end: 3,000
idle connections gave pycri 3,000 threads, each waiting (30 s per byte) for a request head.
pycri bounds the connections it serves (past the bound: 503, closed, no thread) and gives a
connection a deadline for its whole request head."""
from __future__ import annotations

import select
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

from pycri.api.cri import api_pb2 as cri
from tests.e2e.harness import Pycri

CONNECTIONS = 600
THREAD_GROWTH_BOUND = 200  # the server's bound on pending connections is 64


def threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise RuntimeError(f"no Threads for {pid}")


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server answered (503) or closed the connection."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        sock.recv(4096)
    except OSError:
        pass
    return True


def test_idle_streaming_connections_are_bounded(pycri: Pycri) -> None:
    assert pycri.process is not None
    pid = pycri.process.pid
    pod = pycri.run_pod("streamcap")
    ctr = pycri.run(pod, "streamcap", "target", ["sleep", "3600"])
    url = pycri.runtime_stub().Exec(cri.ExecRequest(container_id=ctr, cmd=["true"], stdout=True), timeout=60).url
    address = urlsplit(url)
    baseline = threads(pid)

    sockets: list[socket.socket] = []
    done: set[int] = set()
    peak = baseline
    try:
        for _ in range(CONNECTIONS):
            sockets.append(socket.create_connection((address.hostname, address.port), timeout=60))
            peak = max(peak, threads(pid))
        # until the server has dealt with every connection: refused most at once, kept (and
        # finally closed, at the head deadline) the few it admits; or has grown past the bound
        deadline = time.monotonic() + 120
        while len(done) < CONNECTIONS and peak - baseline < THREAD_GROWTH_BOUND:
            assert time.monotonic() < deadline, f"{CONNECTIONS - len(done)} idle connections still open"
            peak = max(peak, threads(pid))
            for index, sock in enumerate(sockets):
                if index not in done and closed_by_server(sock):
                    done.add(index)
            time.sleep(0.05)
        assert peak - baseline < THREAD_GROWTH_BOUND, \
            f"{CONNECTIONS} idle connections gave pycri {peak - baseline} more threads"
    finally:
        for sock in sockets:
            sock.close()
    # a legitimate exec still works
    assert pycri.crictl("exec", ctr, "echo", "still served").stdout.strip() == "still served"
    assert "streaming connections refused" in pycri.log.read_text()
