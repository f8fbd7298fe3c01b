"""Interactive streams into containers: exec with or without a terminal, and attach.

Exec runs `<runtime> exec` for the command: with pipes for stdin/stdout/stderr, or with a
pseudo-terminal whose master the runtime hands over a console socket (SCM_RIGHTS). Attach
talks to conmon's attach socket (SOCK_SEQPACKET: output messages carry a first byte, 2 for
stdout and 3 for stderr; input goes as is) and resizes through conmon's control fifo.
"""
from __future__ import annotations

import fcntl
import json
import os
import queue
import socket
import struct
import subprocess
import tempfile
import termios
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from pycri.common.errors import FailedPrecondition, RuntimeFailed
from pycri.containers.oci import runtime_env

CHUNK = 32 * 1024
STDOUT_PIPE, STDERR_PIPE = 2, 3  # conmon's attach message prefixes
ATTACH_BUFFER = 8192 + 1


@dataclass
class StreamIO:
    stdin: BinaryIO | None = None  # read(n) -> bytes, b"" at EOF
    stdout: BinaryIO | None = None  # write(bytes)
    stderr: BinaryIO | None = None
    resize: "queue.Queue[tuple[int, int] | None] | None" = None  # (width, height); None ends it
    gone: threading.Event | None = None  # set when the client has left (attach then ends)


def _pump(read: Callable[[], bytes], write: Callable[[bytes], Any], done: Callable[[], None] | None = None) -> threading.Thread:
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


def _flushing(stream: BinaryIO) -> Callable[[bytes], None]:
    def write(data: bytes) -> None:
        stream.write(data)
        stream.flush()
    return write


def set_window_size(fd: int, width: int, height: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


def _resizer(io: StreamIO, apply: Callable[[int, int], None]) -> None:
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
            _pump(lambda: io.stdin.read1(CHUNK) if hasattr(io.stdin, "read1") else io.stdin.read(CHUNK),  # type: ignore[union-attr]
                  _flushing(stdin), stdin.close)
        if io.stdout and child.stdout:
            out = child.stdout
            pumps.append(_pump(lambda: out.read1(CHUNK), io.stdout.write))
        if io.stderr and child.stderr:
            err = child.stderr
            pumps.append(_pump(lambda: err.read1(CHUNK), io.stderr.write))
        code = child.wait()
        for pump in pumps:
            pump.join(timeout=5)
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
    _resizer(io, lambda w, h: set_window_size(master, w, h))
    reader = os.fdopen(os.dup(master), "rb", buffering=0)
    pumps = []
    if io.stdout:
        pumps.append(_pump(lambda: _read_tty(reader), io.stdout.write))
    if io.stdin:
        writer = os.fdopen(os.dup(master), "wb", buffering=0)
        _pump(lambda: io.stdin.read1(CHUNK) if hasattr(io.stdin, "read1") else io.stdin.read(CHUNK),  # type: ignore[union-attr]
              writer.write, writer.close)
    code = child.wait()
    for pump in pumps:
        pump.join(timeout=2)
    os.close(master)
    reader.close()
    return code


def _read_tty(reader: BinaryIO) -> bytes:
    try:
        return reader.read(CHUNK) or b""
    except OSError:  # EIO once the last slave closes
        return b""


def attach(bundle: Path, io: StreamIO, tty: bool) -> None:
    """Attach to a running container's stdio through conmon until its output ends."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    # through /proc/self/fd: a socket path may not exceed 108 bytes, a bundle path may
    directory = os.open(bundle, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        sock.connect(f"/proc/self/fd/{directory}/attach")
    except OSError as exc:
        sock.close()
        raise FailedPrecondition(f"cannot attach: conmon's attach socket is not there ({exc.strerror or exc})") from None
    finally:
        os.close(directory)
    ctl = bundle / "ctl"
    _resizer(io, lambda w, h: _write_ctl(ctl, f"1 {h} {w}\n"))
    if io.stdin:
        _pump(lambda: io.stdin.read1(CHUNK) if hasattr(io.stdin, "read1") else io.stdin.read(CHUNK),  # type: ignore[union-attr]
              sock.sendall, lambda: sock.shutdown(socket.SHUT_WR))
    if io.gone is not None:
        _on_event(io.gone, lambda: sock.shutdown(socket.SHUT_RD))  # wakes the recv below
    with sock:
        while True:
            try:
                message = sock.recv(ATTACH_BUFFER)
            except OSError:
                break
            if not message:
                break
            kind, data = message[0], message[1:]
            target = io.stderr if kind == STDERR_PIPE and not tty else io.stdout
            if target is not None and data:
                try:
                    target.write(data)
                except OSError:  # the client has gone
                    break


def _on_event(event: threading.Event, action: Callable[[], object]) -> None:
    def run() -> None:
        event.wait()
        try:
            action()
        except OSError:
            pass

    threading.Thread(target=run, daemon=True).start()


def _write_ctl(ctl: Path, line: str) -> None:
    fd = os.open(ctl, os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
