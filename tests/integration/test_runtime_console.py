"""--console-socket: the runtime sends the pty master over a unix socket (as conmon expects)
and the container process has the slave as controlling terminal and stdio."""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from tests.integration.conftest import Runtime, new_id, reap


def _listen(path: Path) -> socket.socket:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    return server


def _receive_master(server: socket.socket) -> int:
    server.settimeout(10)
    conn, _ = server.accept()
    with conn:
        _, fds, _, _ = socket.recv_fds(conn, 1024, 1)
    assert len(fds) == 1
    return fds[0]


def _read_all(fd: int, timeout: float = 10) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the slave side is closed
            break
        if not chunk:
            break
        data += chunk
    return data


def test_create_with_console_socket(pycri: Runtime, make_bundle, tmp_path: Path, subreaper: set[int]) -> None:
    bundle = make_bundle("sh", "-c", "tty; test -t 0 && test -t 1 && echo stdio-is-tty; "
                         "ls -l /dev/console | cut -c1; cat /proc/self/stat | cut -d' ' -f6,7")
    bundle.config["process"]["terminal"] = True
    bundle.write()
    server = _listen(tmp_path / "console.sock")
    cid = new_id()
    try:
        pycri.create(cid, bundle, "--console-socket", str(tmp_path / "console.sock"))
        master = _receive_master(server)
    finally:
        server.close()
    pid = pycri.state(cid)["pid"]
    subreaper.add(pid)
    try:
        pycri.run("start", cid, check=True)
        output = _read_all(master).decode().replace("\r\n", "\n").splitlines()
    finally:
        os.close(master)
    assert reap(pid) == 0
    assert output[0] == "/dev/pts/0"
    assert output[1] == "stdio-is-tty"
    assert output[2] == "c"  # /dev/console: the pty slave bound over it
    session, tty_nr = output[3].split()
    assert session == "1" and tty_nr != "0"  # session leader with a controlling terminal


def test_terminal_needs_console_socket(pycri: Runtime, make_bundle) -> None:
    bundle = make_bundle("true")
    bundle.config["process"]["terminal"] = True
    bundle.write()
    result = pycri.create(new_id(), bundle, check=False)
    assert result.returncode == 1 and b"console socket" in result.stderr


def test_exec_with_tty(pycri: Runtime, make_bundle, tmp_path: Path, subreaper: set[int]) -> None:
    bundle = make_bundle("sleep", "1000")
    cid = new_id()
    pycri.create(cid, bundle)
    pid = pycri.state(cid)["pid"]
    subreaper.add(pid)
    pycri.run("start", cid, check=True)
    server = _listen(tmp_path / "exec.sock")
    try:
        result = pycri.run("exec", "-d", "--tty", "--console-socket", str(tmp_path / "exec.sock"),
                           "--pid-file", str(tmp_path / "exec.pid"), cid, "sh", "-c", "tty; echo hello")
        assert result.returncode == 0, result.stderr
        master = _receive_master(server)
    finally:
        server.close()
    exec_pid = int((tmp_path / "exec.pid").read_text())
    subreaper.add(exec_pid)
    try:
        output = _read_all(master).decode().replace("\r\n", "\n").splitlines()
    finally:
        os.close(master)
    assert output[0].startswith("/dev/pts/") and output[1] == "hello"
    assert reap(exec_pid) == 0
