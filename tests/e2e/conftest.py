"""End-to-end fixtures: the real test registries, a real pycri daemon per test, the real crictl."""
from __future__ import annotations

import os
import subprocess
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


@pytest.fixture
def pycri(tmp_path: Path, registries: Registries) -> Any:
    daemon = Pycri(tmp_path)
    daemon.start()
    yield daemon
    if daemon.process is not None and daemon.process.poll() is None:
        daemon.remove_everything()
    daemon.stop()
    daemon.unmount_pin_root()
