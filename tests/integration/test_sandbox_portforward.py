"""A socket opened in a pod's network namespace reaches the pod's localhost, not the host's."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from pycri.common.errors import Unavailable
from pycri.sandbox import namespaces, portforward


def test_connect_reaches_the_pods_localhost(tmp_path: Path) -> None:
    pins = namespaces.pin(["network"], tmp_path / "ns" / "pod", None)
    server = None
    try:
        subprocess.run(["nsenter", f"--net={pins['network']}", "ip", "link", "set", "lo", "up"], check=True)
        server = subprocess.Popen(["nsenter", f"--net={pins['network']}", "busybox", "nc", "-l", "-p", "18123",
                                   "-e", "echo", "from-the-pod"])
        deadline = time.monotonic() + 60
        while True:
            try:
                sock = portforward.connect(pins["network"], 18123)
                break
            except Unavailable:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert sock.recv(100) == b"from-the-pod\n"
        sock.close()
        with pytest.raises(Unavailable):
            portforward.connect(None, 18123)  # nothing listens on the host's port
    finally:
        if server is not None:
            server.kill()
            server.wait()
        namespaces.unpin(tmp_path / "ns" / "pod")
        subprocess.run(["umount", "-l", str(tmp_path / "ns")], check=False)
