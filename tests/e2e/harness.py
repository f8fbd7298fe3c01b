"""A real pycri daemon with its own root, state and socket, driven through the real crictl.

Used by the end-to-end tests (tests/e2e) and the benchmarks (tests/bench).
"""
from __future__ import annotations

import contextlib
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
# the venv the tests run in (.venv from hack/setup.sh, or another Python's venv with pycri
# installed, e.g. to run the suite on Python 3.13): its pycri, python and pycri-runtime
VENV_BIN = Path(sys.prefix) / "bin" if (Path(sys.prefix) / "bin" / "pycri").exists() else REPO / ".venv" / "bin"
CRICTL = os.environ.get("CRICTL", "crictl")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


class Pycri:
    """One pycri daemon with its own root, state, socket and log, driven through crictl."""

    def __init__(self, base: Path, extra_config: str = "") -> None:
        self.base = base
        self.root = base / "root"
        self.state = base / "run"
        self.socket = self.state / "pycri.sock"
        self.log = base / "pycri.log"
        self.config = base / "pycri.toml"
        self.config.write_text(
            f'listen = "unix://{self.socket}"\nroot = "{self.root}"\nstate = "{self.state}"\n'
            '[log]\nlevel = "debug"\n'
            '[registry]\nplain_http = ["127.0.0.1:5000", "127.0.0.1:5001", "127.0.0.1:5002"]\n'
            "fall_back_to_upstream = true\ntimeout_seconds = 10\n"
            '[registry.mirrors]\n'
            '"docker.io" = ["http://127.0.0.1:5000/docker.io"]\n'
            '"registry.k8s.io" = ["http://127.0.0.1:5000/registry.k8s.io"]\n'
            '"gcr.io" = ["http://127.0.0.1:5000/gcr.io"]\n' + extra_config
        )
        self.crictl_config = base / "crictl.yaml"
        self.crictl_config.write_text(
            f"runtime-endpoint: unix://{self.socket}\nimage-endpoint: unix://{self.socket}\ntimeout: 60\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str] | None = None) -> None:
        """Start the daemon (with `env` as its whole environment if given)."""
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [str(VENV_BIN / "pycri"), "--config", str(self.config), "serve"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"pycri exited with {self.process.returncode}:\n{self.log.read_text()}")
            if self.socket.exists() and self.crictl("version", check=False).returncode == 0:
                return
            time.sleep(0.05)
        raise RuntimeError(f"pycri did not answer in 60 s:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=20)

    @contextlib.contextmanager
    def running(self) -> Iterator["Pycri"]:
        """Started for the `with` block; stopped, and its pin root taken down, after it."""
        self.start()
        try:
            yield self
        finally:
            self.stop()
            self.unmount_pin_root()

    def unmount_pin_root(self) -> None:
        """The daemon keeps <state>/ns mounted (like /run/netns); a test's stop takes it down."""
        ns_root = self.state / "ns"
        if str(ns_root) in Path("/proc/self/mountinfo").read_text():
            subprocess.run(["umount", "-l", str(ns_root)], check=False)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)

    def crictl(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [CRICTL, "--config", str(self.crictl_config), *args],
            capture_output=True, text=True, timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"crictl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def runtime_stub(self) -> Any:
        """A gRPC RuntimeService client, for calls crictl cannot make on their own."""
        import grpc

        from pycri.api.cri import api_pb2_grpc

        return api_pb2_grpc.RuntimeServiceStub(grpc.insecure_channel(f"unix://{self.socket}"))

    def crictl_json(self, *args: str) -> Any:
        return json.loads(self.crictl(args[0], "-o", "json", *args[1:]).stdout)

    def run_pod(self, name: str, runtime: str = "", **extra: Any) -> str:
        args = ["runp", *(["--runtime", runtime] if runtime else []), str(pod_config(self.base, name, **extra))]
        return self.crictl(*args).stdout.strip()

    def create(self, pod_id: str, pod_name: str, name: str, command: list[str], **extra: Any) -> str:
        ctr = container_config(self.base, name, command, **extra)
        self.crictl("pull", extra.get("image", "busybox"))
        return self.crictl("create", pod_id, str(ctr), str(self.base / f"pod-{pod_name}.json")).stdout.strip()

    def run(self, pod_id: str, pod_name: str, name: str, command: list[str], **extra: Any) -> str:
        container_id = self.create(pod_id, pod_name, name, command, **extra)
        self.crictl("start", container_id)
        return container_id

    def remove_everything(self) -> None:
        """Stop and remove every pod (and so every container) this daemon has."""
        for pod_id in self.crictl("pods", "-q", check=False).stdout.split():
            self.crictl("stopp", pod_id, check=False)
            self.crictl("rmp", pod_id, check=False)

    # what is on disk, to check that failures leave nothing behind
    def blobs(self) -> set[str]:
        return set(os.listdir(self.root / "images/content/blobs/sha256"))

    def layer_dirs(self) -> set[str]:
        return {n for n in os.listdir(self.root / "images/layers") if not n.startswith(".")}

    def leftovers(self) -> list[str]:
        """Partial downloads and unpacks."""
        return os.listdir(self.root / "images/content/ingest") + os.listdir(self.root / "images/layers/.tmp")


def pod_config(base: Path, name: str, **extra: Any) -> Path:
    """A pod sandbox config file for crictl (unique uid per name)."""
    config = {
        "metadata": {"name": name, "namespace": "pycri-e2e", "uid": f"uid-{name}", "attempt": 0},
        "hostname": name, "log_directory": str(base / "logs" / name),
        # like kubelet: one PID namespace per container unless the pod asks to share one
        "linux": {"security_context": {"namespace_options": {"pid": 1}}},
    }
    config.update(extra)
    path = base / f"pod-{name}.json"
    path.write_text(json.dumps(config))
    return path


def container_config(base: Path, name: str, command: list[str], image: str = "busybox", **extra: Any) -> Path:
    config = {"metadata": {"name": name}, "image": {"image": image}, "command": command,
              "log_path": f"{name}.log", "linux": {}}
    config.update(extra)
    path = base / f"ctr-{name}.json"
    path.write_text(json.dumps(config))
    return path


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """A request handler that logs nothing (the tests' own servers)."""

    def log_message(self, *args: object) -> None:
        pass


class LoopbackServer:
    """A test's own HTTP server on 127.0.0.1 (a free port), serving `handler` from a thread;
    a context manager, or start() and close()."""

    def __init__(self, handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "LoopbackServer":
        self.thread.start()
        return self

    def close(self) -> None:
        if self.thread.is_alive():
            self.server.shutdown()
            self.thread.join()
        self.server.server_close()

    def __enter__(self):  # type: ignore[no-untyped-def]
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
