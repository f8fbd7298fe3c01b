"""Fixtures for the runtime integration tests: real kernel, as root.

- `launcher`: the pycri-runtime script (runtime/launcher.py) in a tmp dir;
- `make_bundle`: OCI bundles from `runc spec`'s default config, each with a fresh rootfs:
  an overlay over a busybox tree (busybox + applet links, /etc/passwd, /etc/group), unmounted
  at teardown;
- `pycri` / `runc`: the runtime CLIs with their own --root in tmp; at teardown every container
  is deleted with --force and the test fails if a cgroup, state dir or process is left over;
- `subreaper`: this process as child subreaper during the test, so container inits whose
  runtime exited become our children (we see their exit status, and reap them).
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Iterator

import pytest

from pycri.kernel.linux import LinuxSyscall
from pycri.kernel.syscall import PR_SET_CHILD_SUBREAPER
from pycri.runtime.launcher import write_launcher

BUSYBOX = "/bin/busybox"
CGROUP_PARENT = "/pycri-it"
CGROUP_ROOT = Path("/sys/fs/cgroup")
RUNC = shutil.which("runc")
CONMON = shutil.which("conmon")



def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if not Path(str(item.fspath)).name.startswith("test_runtime_"):
            continue
        if os.geteuid() != 0:
            item.add_marker(pytest.mark.skip(reason="runtime integration tests need root"))
        elif not os.path.exists(BUSYBOX):
            item.add_marker(pytest.mark.skip(reason="needs busybox-static (/bin/busybox)"))


@pytest.fixture(scope="session")
def launcher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_launcher(tmp_path_factory.mktemp("bin") / "pycri-runtime")


@pytest.fixture(scope="session")
def busybox_lower(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("busybox-lower")
    for d in ("bin", "etc", "proc", "sys", "dev", "tmp", "root", "home/user", "data"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (root / "bin" / applet).symlink_to("busybox")
    (root / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    (root / "etc" / "group").write_text(
        "root:x:0:\nuser:x:1000:\naudio:x:29:user\nvideo:x:44:user\nnogroup:x:65534:\n")
    (root / "etc" / "hostname").write_text("image\n")
    (root / "tmp").chmod(0o1777)
    return root


@pytest.fixture(scope="session")
def default_config(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`runc spec`'s config.json when runc is installed, else an equivalent one."""
    if RUNC:
        where = tmp_path_factory.mktemp("runc-spec")
        subprocess.run([RUNC, "spec", "--bundle", str(where)], check=True)
        config = json.loads((where / "config.json").read_text())
    else:  # pragma: no cover - the machines this project runs on have runc
        config = json.loads((Path(__file__).parent / "runc-spec.json").read_text())
    config["process"]["terminal"] = False
    return config


@dataclass
class Bundle:
    path: Path
    rootfs: Path
    config: dict[str, Any]
    cleanups: list[Any] = field(default_factory=list)

    def write(self) -> Bundle:
        (self.path / "config.json").write_text(json.dumps(self.config, indent=2))
        return self

    def set_args(self, *args: str) -> Bundle:
        self.config["process"]["args"] = list(args)
        return self.write()

    @property
    def linux(self) -> dict[str, Any]:
        return self.config.setdefault("linux", {})


def mount_overlay(lower: Path, base: Path) -> Path:
    upper, work, merged = base / "upper", base / "work", base / "rootfs"
    for d in (upper, work, merged):
        d.mkdir(parents=True)
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={lower},upperdir={upper},workdir={work}", str(merged)], check=True)
    return merged


@pytest.fixture
def make_bundle(tmp_path: Path, busybox_lower: Path, default_config: dict[str, Any]) -> Iterator[Any]:
    made: list[Bundle] = []

    def make(*args: str, name: str = "") -> Bundle:
        path = tmp_path / (name or f"bundle{len(made)}")
        path.mkdir()
        rootfs = mount_overlay(busybox_lower, path)
        config = copy.deepcopy(default_config)
        config["linux"]["cgroupsPath"] = f"{CGROUP_PARENT}/{path.name}-{uuid.uuid4().hex[:8]}"
        bundle = Bundle(path, rootfs, config)
        made.append(bundle)
        if args:
            bundle.set_args(*args)
        else:
            bundle.write()
        return bundle

    yield make
    for bundle in made:
        subprocess.run(["umount", "-l", str(bundle.rootfs)], check=False)
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(tmp_path) not in mounts, "a mount under the test's tmp dir was left behind"


class Runtime:
    """A runc-compatible CLI with its own state root."""

    def __init__(self, binary: str, root: Path, name: str) -> None:
        self.binary = binary
        self.root = root
        self.name = name
        self.created: list[str] = []
        self.cgroups: dict[str, str] = {}

    def cmd(self, *args: str) -> list[str]:
        return [self.binary, "--root", str(self.root), *args]

    def run(self, *args: str, check: bool = False, timeout: float = 60, **kwargs: Any) -> subprocess.CompletedProcess:
        kwargs.setdefault("capture_output", True)
        result = subprocess.run(self.cmd(*args), text=True, timeout=timeout, **kwargs)
        if check and result.returncode != 0:
            raise AssertionError(f"{self.name} {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result

    def create(self, cid: str, bundle: Bundle, *extra: str, stdout: Any = None, stderr: Any = None,
               stdin: Any = subprocess.DEVNULL, check: bool = True) -> subprocess.CompletedProcess:
        """`create` with the container's stdout/stderr on the given files. Not pipes: the
        container keeps them open, so reading them to the end would wait for its exit. The
        result's stderr is what `create` wrote (when stderr was not given)."""
        self.created.append(cid)
        self.cgroups[cid] = bundle.linux.get("cgroupsPath", "")
        with tempfile.TemporaryFile() as errors:
            result = subprocess.run(self.cmd("create", "--bundle", str(bundle.path), *extra, cid), stdin=stdin,
                                    stdout=stdout if stdout is not None else subprocess.DEVNULL,
                                    stderr=stderr if stderr is not None else errors, timeout=60)
            errors.seek(0)
            result.stderr = errors.read()
        if check and result.returncode != 0:
            raise AssertionError(f"{self.name} create {cid} failed: {result.stderr!r}")
        return result

    def state(self, cid: str) -> dict[str, Any]:
        return json.loads(self.run("state", cid, check=True).stdout)

    def wait_status(self, cid: str, status: str = "stopped", timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            current = self.state(cid)
            if current["status"] == status or time.monotonic() > deadline:
                assert current["status"] == status, f"{cid}: {current['status']} after {timeout} s"
                return current
            time.sleep(0.02)

    def cleanup(self) -> list[str]:
        """Delete every container; returns what was left behind."""
        leaks: list[str] = []
        for cid in self.created:
            self.run("delete", "--force", cid)
        if self.root.exists() and any(self.root.iterdir()):
            leaks.append(f"{self.name} state: {sorted(p.name for p in self.root.iterdir())}")
        for cid, path in self.cgroups.items():
            for found in cgroup_dirs(path):
                leaks.append(f"{self.name} cgroup of {cid}: {found}")
                remove_cgroup(found)
        return leaks


@dataclass(frozen=True)
class CgroupLayout:
    """The host's cgroup layout, read at run time: `v2` on a pure cgroup v2 host (the root holds
    cgroup.controllers and is a cgroup2 mount), else v1 (hybrid or legacy: one hierarchy a
    controller). Tests ask it for a controller's directory of a cgroup path, and pick the file
    names of their layout: `layout.pick(v1="memory.limit_in_bytes", v2="memory.max")`."""

    root: Path
    v2: bool

    @property
    def name(self) -> str:
        return "v2" if self.v2 else "v1"

    def dir(self, controller: str, path: str) -> Path:
        """The directory of cgroup `path` in `controller`'s hierarchy (v2: the one tree)."""
        relative = path.lstrip("/")
        return self.root / relative if self.v2 else self.root / controller / relative

    def file(self, controller: str, path: str, *, v1: str, v2: str) -> Path:
        return self.dir(controller, path) / (v2 if self.v2 else v1)

    def read(self, controller: str, path: str, *, v1: str, v2: str) -> str:
        return self.file(controller, path, v1=v1, v2=v2).read_text().strip()

    def pick(self, *, v1: Any, v2: Any) -> Any:
        return v2 if self.v2 else v1

    def dirs(self, path: str) -> list[Path]:
        """Every directory cgroup `path` has: one on v2; one a hierarchy on v1 (and the unified
        tree of a hybrid host)."""
        if not path.startswith("/"):
            return []
        relative = path.lstrip("/")
        if self.v2:
            return [self.root / relative] if (self.root / relative).is_dir() else []
        return [h / relative for h in self.root.iterdir() if not h.is_symlink() and (h / relative).is_dir()]


def is_cgroup2(path: Path) -> bool:
    """Whether `path` is a cgroup2 mount point (its filesystem type in /proc/self/mountinfo)."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return False
    found = False
    for line in lines:
        fields = line.split()
        if len(fields) > 4 and fields[4] == str(path) and " - " in line:
            found = line.split(" - ", 1)[1].split()[0] == "cgroup2"  # the last mount on top wins
    return found


def cgroup_layout(root: Path = CGROUP_ROOT) -> CgroupLayout:
    return CgroupLayout(root, (root / "cgroup.controllers").exists() and is_cgroup2(root))


LAYOUT = cgroup_layout()


def cgroup_dirs(path: str) -> list[Path]:
    return LAYOUT.dirs(path)


def remove_cgroup(path: Path) -> None:
    for _ in range(100):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            for pid in (path / "cgroup.procs").read_text().split():
                try:
                    os.kill(int(pid), 9)
                except ProcessLookupError:
                    pass
            time.sleep(0.02)


@pytest.fixture(scope="session", autouse=True)
def _cgroup_parent_cleanup() -> Iterator[None]:
    yield
    hierarchies = [CGROUP_ROOT] if LAYOUT.v2 else (list(CGROUP_ROOT.iterdir()) if CGROUP_ROOT.exists() else [])
    for hierarchy in hierarchies:
        parent = hierarchy / CGROUP_PARENT.lstrip("/")
        if parent.is_dir() and not hierarchy.is_symlink():
            for child in parent.iterdir():
                if child.is_dir():
                    remove_cgroup(child)
            try:
                parent.rmdir()
            except OSError:
                pass


@pytest.fixture
def subreaper() -> Iterator[set[int]]:
    """Orphaned container processes become our children while the test runs; the set
    collects pids the test wants reaped at the end."""
    kernel = LinuxSyscall()
    kernel.prctl(PR_SET_CHILD_SUBREAPER, 1)
    to_reap: set[int] = set()
    yield to_reap
    kernel.prctl(PR_SET_CHILD_SUBREAPER, 0)
    for pid in to_reap:
        reap(pid, timeout=5)


def reap(pid: int, timeout: float = 10) -> int | None:
    """Wait for a child (one we are subreaper of); its exit code, 128+signal, or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None
        if done:
            return 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        time.sleep(0.01)
    return None


@pytest.fixture
def pycri(launcher: Path, tmp_path: Path, subreaper: set[int]) -> Iterator[Runtime]:
    runtime = Runtime(str(launcher), tmp_path / "pycri-state", "pycri-runtime")
    yield runtime
    leaks = runtime.cleanup()
    assert not leaks, f"left behind: {leaks}"


@pytest.fixture
def runc(tmp_path: Path, subreaper: set[int]) -> Iterator[Runtime]:
    if not RUNC:
        pytest.skip("runc is not installed")
    runtime = Runtime(RUNC, tmp_path / "runc-state", "runc")
    yield runtime
    leaks = runtime.cleanup()
    assert not leaks, f"left behind: {leaks}"


def ns_link(pid: int | str, name: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/{name}")


def new_id(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def spec_has_namespace(bundle: Bundle, kind: str) -> bool:
    """Whether the bundle's spec asks for a namespace of this type (new or joined)."""
    return any(ns.get("type") == kind for ns in bundle.linux.get("namespaces", []))
