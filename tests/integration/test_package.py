"""pycri as a wheel: it installs one name, `pycri`, and its console script, so it can sit in a
virtualenv beside any other project, even one with a top-level `common` or `api` package.

The wheel is built from a copy of this checkout without build isolation (no network: the
venv's own setuptools builds it) and installed without dependencies into a fresh venv; what is
imported there needs only the standard library.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SKIP = shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "__pycache__", ".hypothesis", "tests")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    shutil.copytree(ROOT, source, ignore=SKIP)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "-q", "-w", str(work / "dist"), str(source)],
                   check=True, capture_output=True)
    (built,) = (work / "dist").glob("pycri-*.whl")
    return built


def test_the_wheel_holds_only_pycri(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"pycri", f"{wheel.name.split('-py3')[0]}.dist-info"}
    # every folder of the checkout is under pycri/, the CRI proto and its record with it
    for module in ("pycri/criserver/cli.py", "pycri/runtime/cli.py", "pycri/kernel/linux.py",
                   "pycri/api/cri/api_pb2.py", "pycri/api/cri/api.proto", "pycri/api/cri/UPSTREAM"):
        assert module in names
    entry_points = zipfile.ZipFile(wheel).read(f"{wheel.name.split('-py3')[0]}.dist-info/entry_points.txt")
    assert b"pycri = pycri.criserver.cli:main" in entry_points


def test_it_installs_beside_a_project_with_common_and_api_packages(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    for other in ("common", "api", "store", "runtime"):  # another project's generic packages
        (site / other).mkdir(parents=True)
        (site / other / "__init__.py").write_text(f"OWNER = 'someone else ({other})'\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                    "--disable-pip-version-check", "-q", str(wheel)], check=True, capture_output=True)
    assert sorted(p.name for p in site.iterdir() if not p.name.endswith(".dist-info")) == \
        ["api", "common", "pycri", "runtime", "store"]
    assert (venv / "bin" / "pycri").exists()
    probe = ("import common, api, store, runtime, pycri.common.ids, pycri.runtime.cli, pycri.kernel.linux\n"
             "assert common.OWNER.startswith('someone else') and runtime.OWNER.startswith('someone else')\n"
             "assert pycri.common.ids.__file__.endswith('pycri/common/ids.py')\n")
    subprocess.run([python, "-c", probe], check=True, cwd=tmp_path)  # not the checkout, whose folders would shadow


def test_the_runtime_launcher_of_an_installed_wheel_runs(wheel: Path, tmp_path: Path) -> None:
    """pycri-runtime starts with -IS (no site-packages scan), so its launcher makes the pycri
    package itself: that must work from site-packages as it does from the checkout."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                    "--disable-pip-version-check", "-q", str(wheel)], check=True, capture_output=True)
    launcher = tmp_path / "pycri-runtime"
    subprocess.run([python, "-m", "pycri.runtime.launcher", str(launcher)], check=True, capture_output=True)
    assert "site-packages/pycri" in launcher.read_text()
    version = subprocess.run([str(launcher), "--version"], check=True, capture_output=True, text=True,
                             cwd=tmp_path).stdout
    assert version.startswith("pycri-runtime version")
