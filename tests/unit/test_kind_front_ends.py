"""hack/kind/ctr and hack/kind/containerd, the kind node's front ends to pycri: exactly what
kind v0.33's `kind load` runs in a node maps onto `pycri images import|tag`, the rest is
refused (tests/e2e/test_image_import.py runs them against a daemon)."""
from __future__ import annotations

import importlib.machinery
import importlib.util
import subprocess
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

KIND = Path(__file__).resolve().parents[2] / "hack/kind"


def ctr() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("kind_ctr", str(KIND / "ctr"))
    spec = importlib.util.spec_from_loader("kind_ctr", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


PYCRI = ["/opt/pycri/venv/bin/pycri", "--config", "/etc/pycri/pycri.toml"]


@pytest.mark.parametrize("argv,commands", [
    # kind v0.33 pkg/cluster/nodeutils LoadImageArchive
    (["--namespace=k8s.io", "images", "import", "--all-platforms", "--digests", "--snapshotter=overlayfs", "-"],
     [PYCRI + ["images", "import", "--all-platforms", "-"]]),
    (["-n", "k8s.io", "image", "import", "--snapshotter", "overlayfs", "/tmp/a.tar"],
     [PYCRI + ["images", "import", "/tmp/a.tar"]]),
    # ReTagImage
    (["--namespace=k8s.io", "images", "tag", "--force", "sha256:" + "a" * 64, "docker.io/library/x:1"],
     [PYCRI + ["images", "tag", "sha256:" + "a" * 64, "docker.io/library/x:1"]]),
    (["--namespace", "k8s.io", "i", "tag", "src", "a:1", "b:1"],
     [PYCRI + ["images", "tag", "src", "a:1"], PYCRI + ["images", "tag", "src", "b:1"]]),
])
def test_kind_loads_invocations(argv: list[str], commands: list[list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYCRI_CLI", raising=False)
    monkeypatch.delenv("PYCRI_CONFIG", raising=False)
    assert ctr().plan(argv) == commands


@pytest.mark.parametrize("argv", [
    [], ["images", "import", "-"], ["--namespace=moby", "images", "import", "-"],
    ["--namespace=k8s.io", "images", "import", "--snapshotter=native", "-"],
    ["--namespace=k8s.io", "images", "import", "--label=io.cri-containerd.pinned=pinned", "-"],
    ["--namespace=k8s.io", "images", "import"], ["--namespace=k8s.io", "images", "import", "a", "b"],
    ["--namespace=k8s.io", "images", "list", "-q"], ["--namespace=k8s.io", "images", "tag", "only-one"],
    ["--namespace=k8s.io", "content", "fetch", "x"], ["--address=/run/x.sock", "images", "import", "-"],
])
def test_everything_else_is_refused(argv: list[str]) -> None:
    result = subprocess.run([str(KIND / "ctr"), *argv], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert result.returncode == 1
    assert "runs pycri, not containerd" in result.stderr


def test_containerd_config_dump_gives_kind_its_snapshotter() -> None:
    dump = subprocess.run([str(KIND / "containerd"), "config", "dump"], capture_output=True, text=True, check=True)
    parsed = tomllib.loads(dump.stdout)  # kind reads version 3: plugins."io.containerd.cri.v1.images".snapshotter
    assert parsed["version"] == 3
    assert parsed["plugins"]["io.containerd.cri.v1.images"]["snapshotter"] == "overlayfs"


@pytest.mark.parametrize("argv", [[], ["config"], ["config", "default"], ["--version"], ["config", "dump", "x"]])
def test_containerd_refuses_the_rest(argv: list[str]) -> None:
    result = subprocess.run([str(KIND / "containerd"), *argv], capture_output=True, text=True)
    assert result.returncode == 1 and result.stdout == ""
    assert "runs pycri, not containerd" in result.stderr
