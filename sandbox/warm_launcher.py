"""A warm launcher of pods' infra processes: one `python -IS` with the launcher imported
(sandbox/pause.py `serve`), started at the first pod that shares its PID namespace and kept,
which forks a launcher per pod. An infra process then starts in ~5 ms instead of ~15, and a
RunPodSandbox's infra no longer outlasts its CNI ADD (the two run side by side).

It leaks nothing: it holds no pod state (each launcher it forks exits once it has replied, and
the infra process goes to pycri, a subreaper, as a launcher started by pycri does); it ends at
EOF on its socket (pycri closed it or exited) and is SIGKILLed if pycri dies (PR_SET_PDEATHSIG,
asked for by the launcher itself, bound to the thread that started it: a thread of its own here
that waits for it). If it is gone or does not answer, `launch` raises `WarmLauncherGone` and
the caller starts a cold launcher; the next launch starts a new warm one.

Requests go over a socketpair no other process holds; each carries a socketpair of its own for
the reply, so pods start side by side.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading

import structlog

from pycri.sandbox.pause import REQUEST_BYTES, serve_bootstrap

log = structlog.get_logger("pycri.sandbox.warm_launcher")


class WarmLauncherGone(Exception):
    """The warm launcher is not there, or died while launching: start a cold one."""


class LaunchError(Exception):
    """The launcher ran and the infra process did not start (the message says why)."""


class WarmLauncher:
    def __init__(self, python: str, src_root: str, timeout: float) -> None:
        self.python = python
        self.src_root = src_root
        self.timeout = timeout
        self._lock = threading.Lock()
        self._channel: socket.socket | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def launch(self, argv: list[str], pause_fd: int | None) -> int:
        """The host pid of the infra process a launcher with `argv` (launcher_command's options
        and pause binary, without --pause-fd) started; `pause_fd` is passed on."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            fds = [theirs.fileno()] + ([pause_fd] if pause_fd is not None else [])
            message = "\0".join(argv).encode()
            with self._lock:
                channel = self._channel_locked()
                try:
                    socket.send_fds(channel, [message], fds)
                except OSError as exc:
                    self._drop_locked()
                    raise WarmLauncherGone(f"the warm launcher is gone: {exc}") from None
            theirs.close()
            mine.settimeout(self.timeout)
            try:
                reply = mine.recv(REQUEST_BYTES).decode(errors="replace")
            except TimeoutError:
                raise LaunchError("the pod's infra process did not start in time") from None
        finally:
            mine.close()
            theirs.close()
        if reply.startswith("pid ") and reply[4:].isdigit():
            return int(reply[4:])
        if reply.startswith("error "):
            raise LaunchError(reply[6:])
        raise WarmLauncherGone("the warm launcher's child died before it replied")

    def start(self) -> None:
        """Start it now if it is not running (launch starts it when needed)."""
        with self._lock:
            self._channel_locked()

    def close(self) -> None:
        """End the warm launcher (EOF on its socket) and wait for it."""
        with self._lock:
            process = self._process
            self._drop_locked()
        if process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(self.timeout)

    def _channel_locked(self) -> socket.socket:
        if self._channel is not None and self._process is not None and self._process.poll() is None:
            return self._channel
        self._drop_locked()
        ours, its = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        started = threading.Event()
        failure: list[BaseException] = []

        def own() -> None:  # starts it, and lives as long as it does (PR_SET_PDEATHSIG's thread)
            try:
                self._process = subprocess.Popen(
                    [self.python, "-IS", "-c", serve_bootstrap(self.src_root, its.fileno(), os.getpid())],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    pass_fds=(its.fileno(),), cwd="/", start_new_session=True,
                    env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")})
            except BaseException as exc:  # noqa: BLE001 - raised by the caller below
                failure.append(exc)
                return
            finally:
                its.close()
                started.set()
            process = self._process
            process.wait()
            log.info("the warm infra launcher exited", pid=process.pid, status=process.returncode)

        threading.Thread(target=own, name="warm-launcher", daemon=True).start()
        started.wait()
        if failure:
            ours.close()
            raise WarmLauncherGone(f"the warm launcher did not start: {failure[0]}")
        self._channel = ours
        log.info("started the warm infra launcher", pid=self._process.pid if self._process else None)
        return ours

    def _drop_locked(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        self._process = None
