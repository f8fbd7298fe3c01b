"""The command line: flag parsing, signals, log formats, the launcher, and what the fast
paths import."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pycri.runtime import cli
from pycri.runtime.args import BOOL, INT, LIST, STRING, FlagSpec, UsageError, parse
from pycri.runtime.errors import RuntimeFailure
from pycri.runtime.launcher import launcher_text, write_launcher
from pycri.runtime.log import format_entry
from pycri.runtime.signals import parse_signal


def test_parse_runc_style_flags() -> None:
    spec = FlagSpec(("bundle|b", STRING), ("detach|d", BOOL), ("env|e", LIST), ("preserve-fds", INT))
    flags, rest = parse(spec, ["-b", "/x", "--detach", "--env=A=1", "-e", "B=2", "--preserve-fds=2", "id", "sh", "-c", "x"])
    assert flags == {"bundle": "/x", "detach": True, "env": ["A=1", "B=2"], "preserve-fds": 2}
    assert rest == ["id", "sh", "-c", "x"]
    flags, rest = parse(spec, ["-bundle", "/y", "--detach=false", "--", "-id"])
    assert flags.string("bundle") == "/y" and flags.flag("detach") is False and rest == ["-id"]
    with pytest.raises(UsageError, match="not defined: -nope"):
        parse(spec, ["--nope"])
    with pytest.raises(UsageError, match="needs an argument"):
        parse(spec, ["--bundle"])
    with pytest.raises(UsageError, match="not an integer"):
        parse(spec, ["--preserve-fds", "x"])


def test_conmon_argument_order_parses() -> None:
    create = ["create", "--bundle", "/b", "--pid-file", "/p", "--no-pivot", "--console-socket", "/s", "ctr"]
    flags, rest = parse(cli.GLOBAL_FLAGS, ["--root", "/r", "--log-format=json", *create])
    assert flags.string("root") == "/r" and flags.string("log-format") == "json" and rest == create
    flags, rest = parse(cli.COMMAND_FLAGS["create"], create[1:])
    assert flags.string("bundle") == "/b" and flags.string("pid-file") == "/p" and flags.flag("no-pivot")
    assert rest == ["ctr"]
    flags, rest = parse(cli.COMMAND_FLAGS["exec"], ["--pid-file", "/p", "--process", "/f", "--detach", "--tty", "ctr"])
    assert flags.flag("detach") and flags.flag("tty") and flags.string("process") == "/f" and rest == ["ctr"]
    assert flags.integer("preserve-fds") == 0 and flags.strings("env") == []


@pytest.mark.parametrize(("text", "number"), [("KILL", 9), ("SIGKILL", 9), ("kill", 9), ("9", 9), ("TERM", 15),
                                              ("SIGUSR1", 10), ("RTMIN+2", 36), ("SIGRTMAX", 64)])
def test_signals(text: str, number: int) -> None:
    assert parse_signal(text) == number


def test_bad_signals() -> None:
    for text in ("NOPE", "0", "65", "RTMIN+40"):
        with pytest.raises(RuntimeFailure):
            parse_signal(text)


def test_log_formats() -> None:
    assert format_entry("error", 'a "b"\nc', "text", now=0) == 'time="1970-01-01T00:00:00Z" level=error msg="a \\"b\\"\\nc"'
    assert json.loads(format_entry("warning", "w", "json", now=0)) == {"level": "warning", "msg": "w",
                                                                        "time": "1970-01-01T00:00:00Z"}


def test_main_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--root", str(tmp_path), "state", "nope"]) == 1
    assert 'msg="container does not exist"' in capsys.readouterr().err
    # --systemd-cgroup is accepted (runc's global flag); `state` does not need systemd
    assert cli.main(["--systemd-cgroup", "--root", str(tmp_path), "state", "x"]) == 1
    assert 'msg="container does not exist"' in capsys.readouterr().err
    assert cli.main(["frobnicate"]) == 1
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("pycri-runtime version")
    log = tmp_path / "log.json"
    assert cli.main(["--log", str(log), "--log-format", "json", "--root", str(tmp_path), "kill", "nope"]) == 1
    assert json.loads(log.read_text().splitlines()[0])["msg"] == "container does not exist"
    assert cli.main(["--root", str(tmp_path), "list", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert cli.main(["features"]) == 0
    features = json.loads(capsys.readouterr().out)
    assert "SCMP_ACT_ERRNO" in features["linux"]["seccomp"]["actions"]
    assert {"rro", "rbind", "ro", "rprivate"} <= set(features["mountOptions"])


def test_launcher(tmp_path: Path) -> None:
    text = launcher_text(Path("/usr/bin/python3.11"), Path("/src"))
    assert text.splitlines()[0] == "#!/usr/bin/python3.11 -IS"
    dest = write_launcher(tmp_path / "bin" / "pycri-runtime", src_root=Path(__file__).resolve().parents[2])
    assert dest.stat().st_mode & 0o111
    assert dest.read_text().splitlines()[0] == f"#!{Path(sys.executable).resolve()} -IS"
    out = subprocess.run([str(dest), "--version"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("pycri-runtime version")
    assert "gc.disable()" in text.splitlines()[3]  # before any import of ours
    with pytest.raises(ValueError):
        write_launcher(tmp_path / "x", python=Path("python3"))


OWN_PACKAGES = ("pycri",)  # pycri.runtime, pycri.cgroups, pycri.kernel
# The standard library each command may load beyond the interpreter's own start-up (an
# allowlist, so json/re/enum/dataclasses/typing/inspect/argparse/signal/socket/resource...
# stay out): the small commands need os and the JSON accelerator; create and exec also
# ctypes (for the syscalls Python 3.11 lacks) and select (to wait for their children).
# tests/integration/test_runtime_startup.py checks the same over a real container's life.
# (gc: built in, for the launcher's gc.disable().)
LIGHT = frozenset({"__future__", "_collections_abc", "_stat", "stat", "genericpath", "posixpath", "os", "_json",
                   "errno", "time", "gc"})
SYSCALLS = LIGHT | {"ctypes", "_ctypes", "ctypes._endian", "struct", "_struct", "types", "select"}


def imported_modules(stderr: str) -> set[str]:
    return {line.split("|")[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def standard_library_loaded(python: str, argv: list[str]) -> set[str]:
    """What running `argv` under -X importtime loads, less the project's own packages and
    what the bare interpreter (-IS) loads anyway."""
    baseline = subprocess.run([python, "-IS", "-X", "importtime", "-c", "pass"], capture_output=True, text=True)
    result = subprocess.run([python, "-IS", "-X", "importtime", *argv], capture_output=True, text=True)
    imported = imported_modules(result.stderr)
    assert imported, result.stderr
    return {m for m in imported - imported_modules(baseline.stderr) if m.split(".")[0] not in OWN_PACKAGES}


@pytest.mark.parametrize(("argv", "allowed"), [
    pytest.param(["--version"], LIGHT, id="version"),
    pytest.param(["state", "nope"], LIGHT, id="state"),
    pytest.param(["kill", "nope"], LIGHT, id="kill"),
    pytest.param(["delete", "nope"], LIGHT, id="delete"),
    pytest.param(["start", "nope"], LIGHT, id="start"),
    pytest.param(["create", "--bundle", "/nonexistent", "nope"], SYSCALLS, id="create"),
    pytest.param(["exec", "nope", "true"], SYSCALLS, id="exec"),
])
def test_commands_import_only_the_light_standard_library(tmp_path: Path, argv: list[str],
                                                         allowed: frozenset[str]) -> None:
    dest = write_launcher(tmp_path / "pycri-runtime", src_root=Path(__file__).resolve().parents[2])
    python = dest.read_text().splitlines()[0][2:].split()[0]
    unexpected = sorted(standard_library_loaded(python, [str(dest), "--root", str(tmp_path), *argv]) - allowed)
    assert not unexpected, f"start-up imports beyond the budget: {unexpected}"


# Own modules that only some containers need, never loaded by a plain create: user namespaces
# (idmap), terminals (process.console), seccomp, the systemd cgroup driver, the other commands.
ONLY_SOME_CONTAINERS = ("pycri.kernel.idmap", "pycri.runtime.process.console", "pycri.runtime.seccomp",
                        "pycri.cgroups.systemd", "pycri.cgroups.systemd_dbus", "pycri.runtime.commands")


def test_create_loads_what_only_some_containers_need_only_for_them(tmp_path: Path) -> None:
    """The modules of a create without a user namespace, terminal, seccomp or systemd: its own
    (cli, create) and its first stage's (init, kernel.linux, the cgroups of this host), loaded
    in a fresh -IS interpreter through the launcher's package bootstrap; sys.modules after."""
    dest = write_launcher(tmp_path / "pycri-runtime", src_root=Path(__file__).resolve().parents[2])
    python = dest.read_text().splitlines()[0][2:].split()[0]
    lines = dest.read_text().splitlines()
    bootstrap = "".join(line + "\n" for line in lines[2:lines.index("sys.modules['pycri'] = pycri") + 1])
    program = bootstrap + (
        "import pycri.runtime.cli, pycri.runtime.create, pycri.runtime.init, pycri.kernel.linux, pycri.cgroups\n"
        "print('\\n'.join(sorted(m for m in sys.modules if m.startswith('pycri.'))))\n")
    result = subprocess.run([python, "-IS", "-c", program], capture_output=True, text=True, check=True)
    loaded = set(result.stdout.split())
    assert {"pycri.runtime.create", "pycri.runtime.init", "pycri.runtime.process.setup"} <= loaded, result.stdout
    assert not loaded & set(ONLY_SOME_CONTAINERS), sorted(loaded & set(ONLY_SOME_CONTAINERS))


@pytest.mark.parametrize("value", [
    {"a": 1, "b": [1, 2.5, None, True, False], "c": {"d": "é\n\"x\"", "e": {}}, "f": [], "g": -3},
    [], "text", 0, {"nested": [[{"x": [1]}]]},
])
def test_jsonlite_matches_json(value: object) -> None:
    from pycri.runtime import jsonlite

    assert jsonlite.dumps(value) == json.dumps(value)
    assert jsonlite.dumps(value, indent=2) == json.dumps(value, indent=2)
    assert jsonlite.loads(json.dumps(value)) == value
    assert jsonlite.loads("  " + json.dumps(value, indent=4) + "\n") == value


def test_jsonlite_rejects_bad_json() -> None:
    from pycri.runtime import jsonlite

    for bad in ("", "{", '{"a": 1} x', "[1,]", "nope"):
        with pytest.raises(ValueError):
            jsonlite.loads(bad)
