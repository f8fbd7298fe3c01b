"""Interactive exec into containers, with or without a terminal, and the pumps that move a
stream's bytes (attach, which goes through the handler's monitor, uses them too).

Exec runs `<runtime> exec` for the command: with pipes for stdin/stdout/stderr, or with a
pseudo-terminal whose master the runtime hands over a console socket (SCM_RIGHTS).
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import struct
import subprocess
import tempfile
import termios
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from pycri.common.errors import RuntimeFailed
from pycri.containers.handler import StreamIO
from pycri.containers.oci import runtime_env

CHUNK = 32 * 1024


def pump(read: Callable[[], bytes], write: Callable[[bytes], Any], done: Callable[[], None] | None = None) -> threading.Thread:
    def run() -> None:
        try:
            while data := read():
                write(data)
        except (OSError, ValueError):
            pass
        finally:
            if done is not None:
                try:
                    done()
                except OSError:
                    pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def stdin_reader(io: StreamIO) -> Callable[[], bytes]:
    """Reads what the client sends, as soon as some is there."""
    stdin = io.stdin
    assert stdin is not None
    return lambda: stdin.read1(CHUNK) if hasattr(stdin, "read1") else stdin.read(CHUNK)  # type: ignore[union-attr]


def _flushing(stream: BinaryIO) -> Callable[[bytes], None]:
    def write(data: bytes) -> None:
        stream.write(data)
        stream.flush()
    return write


def set_window_size(fd: int, width: int, height: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


def resizer(io: StreamIO, apply: Callable[[int, int], None]) -> None:
    if io.resize is None:
        return

    def run() -> None:
        assert io.resize is not None
        while (size := io.resize.get()) is not None:
            try:
                apply(*size)
            except OSError:
                pass

    threading.Thread(target=run, daemon=True).start()


def exec_process(runtime_cmd: list[str], container_id: str, process: dict[str, Any], io: StreamIO) -> int:
    """Run `process` in the container, streaming its I/O; return its exit code."""
    with tempfile.TemporaryDirectory(prefix="pycri-exec-") as work:
        spec = Path(work) / "process.json"
        spec.write_text(json.dumps(process))
        if process.get("terminal"):
            return _exec_tty(runtime_cmd, container_id, spec, Path(work) / "console.sock", io)
        child = subprocess.Popen(
            [*runtime_cmd, "exec", "--process", str(spec), container_id],
            stdin=subprocess.PIPE if io.stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE if io.stdout else subprocess.DEVNULL,
            stderr=subprocess.PIPE if io.stderr else subprocess.DEVNULL, env=runtime_env(),
        )
        pumps = []
        if io.stdin and child.stdin:
            stdin = child.stdin
            pump(stdin_reader(io), _flushing(stdin), stdin.close)
        if io.stdout and child.stdout:
            out = child.stdout
            pumps.append(pump(lambda: out.read1(CHUNK), io.stdout.write))
        if io.stderr and child.stderr:
            err = child.stderr
            pumps.append(pump(lambda: err.read1(CHUNK), io.stderr.write))
        code = child.wait()
        for thread in pumps:
            thread.join(timeout=5)
        return code


def _exec_tty(runtime_cmd: list[str], container_id: str, spec: Path, console: Path, io: StreamIO) -> int:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(console))
    listener.listen(1)
    listener.settimeout(30)
    child = subprocess.Popen(
        [*runtime_cmd, "exec", "--tty", "--console-socket", str(console), "--process", str(spec), container_id],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=runtime_env(),
    )
    try:
        conn, _ = listener.accept()
    except OSError:
        child.kill()
        _, err = child.communicate()
        raise RuntimeFailed(f"exec with a terminal failed: {err.decode(errors='replace').strip()}") from None
    finally:
        listener.close()
    with conn:
        _, fds, _, _ = socket.recv_fds(conn, 1024, 1)
    if not fds:
        child.kill()
        raise RuntimeFailed("the runtime sent no terminal")
    master = fds[0]
    resizer(io, lambda w, h: set_window_size(master, w, h))
    reader = os.fdopen(os.dup(master), "rb", buffering=0)
    pumps = []
    if io.stdout:
        pumps.append(pump(lambda: _read_tty(reader), io.stdout.write))
    if io.stdin:
        writer = os.fdopen(os.dup(master), "wb", buffering=0)
        pump(stdin_reader(io), writer.write, writer.close)
    code = child.wait()
    for thread in pumps:
        thread.join(timeout=2)
    os.close(master)
    reader.close()
    return code


def _read_tty(reader: BinaryIO) -> bytes:
    try:
        return reader.read(CHUNK) or b""
    except OSError:  # EIO once the last slave closes
        return b""
