"""The layering rule of docs/architecture.md, checked on the source: no package imports one
above it or beside it.

Requests flow one way, criserver → the domain (sandbox, containers, images, and the
streaming library) → runtime → cgroups and store → kernel and common. A package may import
only packages of lower layers. Packages of one layer are peers and do not import each other:
what two peers share belongs one layer down. pycri-runtime, run by the monitor once per
container operation, is held tighter still: it may reach only cgroups and kernel.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "pycri"

# top to bottom
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"criserver"}),
    frozenset({"api", "sandbox", "containers", "images", "streaming"}),
    frozenset({"runtime"}),
    frozenset({"cgroups", "store"}),
    frozenset({"kernel", "common"}),
)
# packages held to fewer imports than their layer allows
ONLY: dict[str, frozenset[str]] = {
    "runtime": frozenset({"cgroups", "kernel"}),
}


@dataclass(frozen=True)
class Violation:
    file: str
    line: int
    importer: str
    imported: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.importer} imports {NAMESPACE}.{self.imported}"


def imported_packages(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, top-level package) of every absolute import of pycri.<package>, at any depth
    of the module (imports inside functions count too)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + ([f"{node.module}.{a.name}" for a in node.names]
                                     if node.module == NAMESPACE else [])
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == NAMESPACE and len(parts) > 1:
                found.append((node.lineno, parts[1]))
    return found


def layer_of(package: str, layers: tuple[frozenset[str], ...]) -> int:
    for index, layer in enumerate(layers):
        if package in layer:
            return index
    raise KeyError(f"package {package!r} is in no layer: add it to LAYERS")


def violations(root: Path, layers: tuple[frozenset[str], ...] = LAYERS,
               only: dict[str, frozenset[str]] = ONLY) -> list[Violation]:
    found: list[Violation] = []
    for package in sorted(set().union(*layers)):
        folder = root / package
        for path in sorted(folder.rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for line, imported in imported_packages(tree):
                if imported == package:
                    continue
                allowed = only.get(package)
                upward = layer_of(imported, layers) <= layer_of(package, layers)
                if upward or (allowed is not None and imported not in allowed):
                    found.append(Violation(str(path.relative_to(root)), line, package, imported))
    return found


def test_no_package_imports_one_above_or_beside_it() -> None:
    found = violations(ROOT)
    assert not found, "layering broken (docs/architecture.md):\n" + "\n".join(map(str, found))


def test_every_top_level_package_has_a_layer() -> None:
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    assert packages == set().union(*LAYERS)


def test_conmon_lives_in_one_module_of_containers() -> None:
    """Everything about conmon is ConmonHandler's (containers/conmon.py), behind the runtime
    handler interface; criserver/server.py, which builds the handlers, names it too."""
    naming = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "containers").rglob("*.py") if "conmon" in p.read_text())
    assert naming == ["containers/conmon.py"]


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


LAYERED = {
    "criserver/__init__.py": "from pycri.containers import service\n",
    "containers/__init__.py": "",
    "containers/service.py": "import pycri.runtime.cli as cli\nfrom pycri import common\n",
    "runtime/__init__.py": "",
    "runtime/cli.py": "from pycri.kernel import linux\n",
    "kernel/__init__.py": "", "common/__init__.py": "", "sandbox/__init__.py": "",
}


def test_the_check_passes_a_downward_tree(tmp_path: Path) -> None:
    assert violations(_tree(tmp_path, LAYERED), LAYERS, ONLY) == []


def test_the_check_fails_on_a_deliberate_upward_import(tmp_path: Path) -> None:
    root = _tree(tmp_path, {**LAYERED, "kernel/linux.py": "def f():\n    from pycri.criserver import server\n"})
    assert [str(v) for v in violations(root, LAYERS, ONLY)] == [
        "kernel/linux.py:2: kernel imports pycri.criserver"]


def test_the_check_fails_on_a_peer_import(tmp_path: Path) -> None:
    root = _tree(tmp_path, {**LAYERED, "sandbox/service.py": "from pycri import containers\n"})
    assert [str(v) for v in violations(root, LAYERS, ONLY)] == [
        "sandbox/service.py:1: sandbox imports pycri.containers"]


def test_the_runtime_reaches_only_cgroups_and_kernel(tmp_path: Path) -> None:
    root = _tree(tmp_path, {**LAYERED, "runtime/log.py": "from pycri.common import log\n"})
    assert [str(v) for v in violations(root, LAYERS, ONLY)] == [
        "runtime/log.py:1: runtime imports pycri.common"]
