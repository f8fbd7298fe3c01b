"""A real pycri daemon with its own root, state and socket, driven through the real crictl.

Used by the end-to-end tests (tests/e2e) and the benchmarks (tests/bench).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
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

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [str(VENV_BIN / "pycri"), "--config", str(self.config), "serve"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"pycri exited with {self.process.returncode}:\n{self.log.read_text()}")
            if self.socket.exists() and self.crictl("version", check=False).returncode == 0:
                return
            time.sleep(0.05)
        raise RuntimeError(f"pycri did not answer in 15 s:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=20)

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

    def crictl_json(self, *args: str) -> Any:
        return json.loads(self.crictl(args[0], "-o", "json", *args[1:]).stdout)

    # what is on disk, to check that failures leave nothing behind
    def blobs(self) -> set[str]:
        return set(os.listdir(self.root / "images/content/blobs/sha256"))

    def layer_dirs(self) -> set[str]:
        return {n for n in os.listdir(self.root / "images/layers") if not n.startswith(".")}

    def leftovers(self) -> list[str]:
        """Partial downloads and unpacks."""
        return os.listdir(self.root / "images/content/ingest") + os.listdir(self.root / "images/layers/.tmp")
