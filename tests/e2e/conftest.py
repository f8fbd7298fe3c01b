"""End-to-end fixtures: the real test registries, a real pycri daemon per test, the real crictl."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import REPO, VENV_BIN, Pycri

REGISTRY_STATE = Path(os.environ.get("PYCRI_REGISTRY_STATE", "/var/lib/pycri-test/registry"))

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class Registries:
    storage: Path
    logs: Path
    plain: str = "127.0.0.1:5000"
    basic: str = "127.0.0.1:5001"
    token: str = "127.0.0.1:5002"
    basic_creds: str = "pycri-basic:basic-secret"
    token_creds: str = "pycri-token:token-secret"

    def blob_data(self, repository: str, digest: str) -> Path:
        """Where the registry keeps a blob's bytes (to corrupt it on purpose)."""
        hexdigest = digest.removeprefix("sha256:")
        return self.storage / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"


@pytest.fixture(scope="session")
def registries() -> Registries:
    if os.geteuid() != 0:
        pytest.skip("end-to-end tests need root")
    subprocess.run([str(REPO / "hack/registry.sh"), "start"], check=True, capture_output=True)
    subprocess.run([str(VENV_BIN / "python"), str(REPO / "hack/testimages.py"), "--registry", "127.0.0.1:5000"],
                   check=True, capture_output=True)
    return Registries(storage=REGISTRY_STATE / "storage", logs=REGISTRY_STATE / "logs")


REACHABLE_BASE = Path("/var/tmp/pycri-tests")


@pytest.fixture
def reachable_tmp_path() -> Iterator[Path]:
    """A test directory that other users can traverse (0711 up to /), as /var/lib/pycri is: a
    user-namespace pod's root (a mapped id) must reach its rootfs and its pinned namespaces, and
    the security tests' attacker must be kept out by pycri's own modes, not by pytest's.
    pytest's tmp_path is under /tmp/pytest-of-root, which every pytest session that starts
    resets to 0700, so making it traversable raced any other session on the machine. A module
    that needs this overrides `tmp_path` with it (and so does the `pycri` daemon it runs)."""
    REACHABLE_BASE.mkdir(mode=0o711, exist_ok=True)
    REACHABLE_BASE.chmod(0o711)
    path = Path(tempfile.mkdtemp(dir=REACHABLE_BASE))
    path.chmod(0o711)
    yield path
    with open("/proc/self/mountinfo") as f:  # never follow a mount a failed test left into the host
        mounted = any(f" {path}/" in line or f" {path} " in line for line in f)
    if not mounted:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def pycri(tmp_path: Path, registries: Registries) -> Any:
    daemon = Pycri(tmp_path)
    daemon.start()
    yield daemon
    if daemon.process is not None and daemon.process.poll() is None:
        daemon.remove_everything()
    daemon.stop()
    daemon.unmount_pin_root()
