"""Writes the `pycri-runtime` executable: a two-line script that starts fast.

    python -m pycri.runtime.launcher DEST [--python PYTHON] [--src-root DIR]

The shebang runs the interpreter with `-IS` (isolated, no site: no site-packages scan, no
.pth files, no user site), which is safe because the runtime imports only the standard
library and its own packages. Without site there is no installed `pycri` to find, so the script
makes the `pycri` package itself, whose path is the folder that holds runtime/, kernel/, cgroups/
(the checkout, or site-packages/pycri in a wheel install).

The script turns the cyclic garbage collector off first: a call lives for milliseconds and makes
next to no cycles, while the collector's passes over the objects its imports make (a dozen on a
create, in the runtime and again in the init's first stage) cost about a millisecond of each.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

SRC_ROOT = Path(__file__).resolve().parent.parent


def default_python() -> Path:
    """This interpreter, symlinks resolved (a venv's python links to the real binary; a shim
    script, as pyenv's, would cost its own start-up on every call)."""
    return Path(sys.executable).resolve()


def launcher_text(python: Path, src_root: Path) -> str:
    return (
        f"#!{python} -IS\n"
        "# pycri-runtime: pycri's OCI runtime (runc's command line). Written by runtime/launcher.py.\n"
        "import gc, sys\n"
        "gc.disable()  # a short-lived process: see runtime/launcher.py\n"
        "pycri = type(sys)('pycri')  # the module type, without importing types\n"
        f"pycri.__path__ = [{str(src_root)!r}]\n"
        "sys.modules['pycri'] = pycri\n"
        "if 'create' in sys.argv or 'exec' in sys.argv:  # runtime/cgroup_lock.py\n"
        "    from pycri.runtime.cgroup_lock import warm\n"
        "    warm()\n"
        "from pycri.runtime.cli import run\n"
        "run()\n"
    )


def write_launcher(dest: Path, python: Path | None = None, src_root: Path | None = None) -> Path:
    python = Path(python or default_python())
    src_root = Path(src_root or SRC_ROOT)
    if not python.is_absolute():
        raise ValueError(f"the interpreter path must be absolute: {python}")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.write_text(launcher_text(python, src_root.resolve()))
    os.chmod(tmp, 0o755)
    os.replace(tmp, dest)
    return dest


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m pycri.runtime.launcher", description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path)
    parser.add_argument("--python", type=Path, default=None)
    parser.add_argument("--src-root", type=Path, default=None)
    args = parser.parse_args(argv)
    print(write_launcher(args.dest, args.python, args.src_root))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
