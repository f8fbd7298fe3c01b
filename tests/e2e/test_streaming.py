"""Exec, attach and port-forward through pycri's streaming server, driven by the real crictl over
both transports it speaks (SPDY, the default, and WebSocket). The interactive ones run crictl on
a pseudo-terminal, as a person at a terminal would: keys typed into it, a window resized."""
from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import termios
import time
import urllib.request
from collections.abc import Iterator

import pytest

from tests.e2e.harness import CRICTL, Pycri
from tests.e2e.test_pods import wait_for

TRANSPORTS = ["spdy", "websocket"]
TIMEOUT = 20.0


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class Terminal:
    """crictl on a pseudo-terminal of its own (its controlling terminal, as in a shell)."""

    def __init__(self, pycri: Pycri, *args: str, rows: int = 30, cols: int = 100) -> None:
        self.master, slave = os.openpty()
        set_size(slave, rows, cols)
        self.process = subprocess.Popen(
            [CRICTL, "--config", str(pycri.crictl_config), *args],
            stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
            env={**os.environ, "TERM": "xterm"},
        )
        os.close(slave)
        self.seen = b""

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def expect(self, pattern: str, timeout: float = TIMEOUT) -> re.Match[bytes]:
        """Read until `pattern` (a regexp) appears in what was seen since the last match."""
        deadline = time.monotonic() + timeout
        regexp = re.compile(pattern.encode())
        while not (match := regexp.search(self.seen)):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{pattern!r} not seen; the terminal shows {self.seen!r}"
            ready, _, _ = select.select([self.master], [], [], remaining)
            if ready:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:  # EIO: crictl has gone and closed the terminal
                    chunk = b""
                assert chunk, f"{pattern!r} not seen before crictl left; the terminal showed {self.seen!r}"
                self.seen += chunk
        self.seen = self.seen[match.end():]
        return match

    def resize(self, rows: int, cols: int) -> None:
        set_size(self.master, rows, cols)  # the kernel sends crictl SIGWINCH

    def wait(self, timeout: float = TIMEOUT) -> int:
        """crictl's exit code, once it has left; what it wrote until then is added to `seen`."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self.master], [], [], remaining)
            try:
                chunk = os.read(self.master, 4096) if ready else b""
            except OSError:  # EIO: every slave fd is closed
                chunk = b""
            if not chunk:
                break
            self.seen += chunk
        return self.process.wait(timeout=max(remaining, 1))

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=TIMEOUT)
        os.close(self.master)


def web_pod(pycri: Pycri, name: str) -> str:
    pod = pycri.run_pod(name)
    pycri.run(pod, name, "web",
              ["sh", "-c", "mkdir /www && echo served-by-the-pod > /www/index.html && exec httpd -f -p 8080 -h /www"])
    return pod


def sessions_done(pycri: Pycri) -> int:
    return pycri.log.read_text().count('"streaming session done"')


# --- exec ------------------------------------------------------------------------------------

def test_exec_streams_and_exit_code(pycri: Pycri, transport: str) -> None:
    pod = pycri.run_pod("exec")
    ctr = pycri.run(pod, "exec", "main", ["sleep", "1000"])
    ok = pycri.crictl("exec", "--transport", transport, ctr, "sh", "-c", "echo to-out; echo to-err >&2")
    assert (ok.stdout, ok.stderr) == ("to-out\n", "to-err\n")  # two streams, kept apart
    failed = pycri.crictl("exec", "--transport", transport, ctr, "sh", "-c", "exit 7", check=False)
    assert failed.returncode != 0 and "command terminated with exit code 7" in failed.stderr
    piped = subprocess.run([CRICTL, "--config", str(pycri.crictl_config), "exec", "--transport", transport, "-i",
                            ctr, "sh", "-c", "tr a-z A-Z; echo stdin-closed"],
                           input="through stdin\n", capture_output=True, text=True, timeout=TIMEOUT)
    assert piped.returncode == 0 and piped.stdout == "THROUGH STDIN\nstdin-closed\n"
    missing = pycri.crictl("exec", "--transport", transport, ctr, "/no/such/program", check=False)
    assert missing.returncode != 0


def test_exec_with_a_terminal_and_resize(pycri: Pycri, transport: str) -> None:
    pod = pycri.run_pod("tty")
    ctr = pycri.run(pod, "tty", "main", ["sleep", "1000"])
    term = Terminal(pycri, "exec", "--transport", transport, "-it", ctr, "sh", rows=30, cols=100)
    try:
        term.type("stty size; echo term=$TERM; tty\r")
        term.expect(r"\r\n30 100\r\n")  # the size crictl's terminal had when it started
        term.expect(r"term=xterm")
        term.expect(r"/dev/pts/\d+")
        term.resize(40, 120)
        deadline = time.monotonic() + TIMEOUT
        while True:  # the resize travels asynchronously: ask until the shell sees it
            term.type("stty size\r")
            size = term.expect(r"\r\n(\d+ \d+)\r\n").group(1)
            if size == b"40 120" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert size == b"40 120"
        term.type("printf 'a\\tb' | od -c | head -1; exit 5\r")  # bytes through the terminal unchanged
        term.expect(r"a +\\t +b")
        assert term.wait() != 0
        assert b"exit code 5" in term.seen
    finally:
        term.close()


# --- attach ----------------------------------------------------------------------------------

def test_attach_output_and_leaving(pycri: Pycri, transport: str) -> None:
    pod = pycri.run_pod("attach")
    ctr = pycri.run(pod, "attach", "counter",
                    ["sh", "-c", "n=0; while true; do n=$((n+1)); echo out-$n; echo err-$n >&2; sleep 0.2; done"])
    before = sessions_done(pycri)
    client = subprocess.Popen([CRICTL, "--config", str(pycri.crictl_config), "attach", "--transport", transport, ctr],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert client.stdout is not None and client.stderr is not None
        first = int(client.stdout.readline().decode().strip().removeprefix("out-"))
        second = int(client.stdout.readline().decode().strip().removeprefix("out-"))
        assert second == first + 1  # live output, line by line
        assert client.stderr.readline().decode().strip().startswith("err-")  # stderr apart
    finally:
        client.kill()  # SIGKILL: crictl's first SIGTERM only cancels its RPCs
        client.wait()
    wait_for(lambda: sessions_done(pycri) > before, TIMEOUT)  # the session ends with the connection
    assert pycri.crictl_json("inspect", ctr)["status"]["state"] == "CONTAINER_RUNNING"


def test_attach_stdin_once_closes_the_containers_stdin(pycri: Pycri, transport: str) -> None:
    pod = pycri.run_pod("once")
    ctr = pycri.run(pod, "once", "cat", ["sh", "-c", "tr a-z A-Z; echo stdin-closed"], stdin=True, stdin_once=True)
    attached = subprocess.run([CRICTL, "--config", str(pycri.crictl_config), "attach", "--transport", transport,
                               "-i", ctr], input="typed line\n", capture_output=True, text=True, timeout=TIMEOUT)
    assert attached.stdout == "TYPED LINE\nstdin-closed\n"
    wait_for(lambda: pycri.crictl_json("inspect", ctr)["status"]["state"] == "CONTAINER_EXITED", TIMEOUT)
    assert pycri.crictl_json("inspect", ctr)["status"]["exitCode"] == 0


def test_attach_stdin_stays_open_for_the_next_client(pycri: Pycri, transport: str) -> None:
    pod = pycri.run_pod("open")
    ctr = pycri.run(pod, "open", "cat", ["sh", "-c", "while read line; do echo got-$line; done"], stdin=True)
    for word in ("first", "second"):
        client = subprocess.Popen([CRICTL, "--config", str(pycri.crictl_config), "attach", "--transport", transport,
                                   "-i", ctr], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            assert client.stdin is not None and client.stdout is not None
            client.stdin.write(f"{word}\n".encode())
            client.stdin.flush()
            assert client.stdout.readline() == f"got-{word}\n".encode()
        finally:
            client.kill()
            client.wait()
        assert pycri.crictl_json("inspect", ctr)["status"]["state"] == "CONTAINER_RUNNING"


def test_attach_to_a_terminal(pycri: Pycri, transport: str) -> None:
    pod = pycri.run_pod("ttyattach")
    ctr = pycri.run(pod, "ttyattach", "shell", ["sh"], stdin=True, tty=True)
    term = Terminal(pycri, "attach", "--transport", transport, "-it", ctr, rows=25, cols=90)
    try:
        term.type("echo $((6*7)); stty size\r")
        term.expect(r"\r\n42\r\n")
        term.expect(r"25 90\r\n")  # crictl sent its size on attach
        term.type("exit 3\r")
        term.wait()
    finally:
        term.close()
    wait_for(lambda: pycri.crictl_json("inspect", ctr)["status"]["state"] == "CONTAINER_EXITED", TIMEOUT)
    assert pycri.crictl_json("inspect", ctr)["status"]["exitCode"] == 3


def test_attach_refuses_a_stopped_container(pycri: Pycri) -> None:
    pod = pycri.run_pod("stopped")
    ctr = pycri.run(pod, "stopped", "quick", ["true"])
    wait_for(lambda: pycri.crictl_json("inspect", ctr)["status"]["state"] == "CONTAINER_EXITED", TIMEOUT)
    refused = pycri.crictl("attach", ctr, check=False, timeout=TIMEOUT)
    assert refused.returncode != 0 and "not running" in refused.stderr


# --- port-forward ----------------------------------------------------------------------------

@pytest.fixture
def forwarding(pycri: Pycri, transport: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    pod = web_pod(pycri, "pf")
    client = subprocess.Popen([CRICTL, "--config", str(pycri.crictl_config), "port-forward", "--transport", transport,
                               pod, ":8080"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert client.stdout is not None
        line = client.stdout.readline()  # Forwarding from 127.0.0.1:PORT -> 8080
        match = re.search(r"127\.0\.0\.1:(\d+) -> 8080", line)
        assert match, line
        yield f"http://127.0.0.1:{match.group(1)}/", client
    finally:
        client.kill()
        client.wait()


def test_port_forward_to_the_web_server(pycri: Pycri, forwarding: tuple[str, subprocess.Popen[str]]) -> None:
    url, _ = forwarding
    deadline = time.monotonic() + TIMEOUT
    while True:  # httpd may still be starting
        try:
            body = urllib.request.urlopen(url, timeout=5).read()
            break
        except OSError:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert body == b"served-by-the-pod\n"
    for _ in range(5):  # one forwarded connection each
        assert urllib.request.urlopen(url, timeout=5).read() == b"served-by-the-pod\n"


def test_port_forward_to_a_closed_port(pycri: Pycri, transport: str) -> None:
    pod = pycri.run_pod("closed")
    pycri.run(pod, "closed", "idle", ["sleep", "1000"])
    client = subprocess.Popen([CRICTL, "--config", str(pycri.crictl_config), "port-forward", "--transport", transport,
                               pod, ":9999"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert client.stdout is not None
        port = re.search(r"127\.0\.0\.1:(\d+) ->", client.stdout.readline())
        assert port
        with pytest.raises(OSError):  # nothing listens on 9999 in the pod: the connection is dropped
            urllib.request.urlopen(f"http://127.0.0.1:{port.group(1)}/", timeout=5).read()
    finally:
        client.send_signal(signal.SIGKILL)
        client.wait()
    assert pycri.process is not None and pycri.process.poll() is None
