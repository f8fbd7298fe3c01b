"""The same bundles run by runc and by pycri-runtime give the same observable results.

Each case adjusts a `runc spec` bundle, runs it to completion with both runtimes (each with
its own --root), and compares what the container printed and its exit status. A case may
normalize output that legitimately differs (nothing does at present but the mount ids).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Callable

import pytest

from tests.integration.conftest import Bundle, Runtime, new_id, reap


@dataclass
class Outcome:
    create_code: int
    exit_code: int | None
    stdout: str
    stderr: str
    create_error: str = ""


def run_case(runtime: Runtime, bundle: Bundle, tmp_path: Path, reaped: set[int]) -> Outcome:
    cid = new_id(runtime.name[:4])
    out, err = tmp_path / f"{cid}.out", tmp_path / f"{cid}.err"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        result = runtime.create(cid, bundle, stdout=stdout, stderr=stderr, check=False)
    if result.returncode != 0:
        return Outcome(result.returncode, None, out.read_text(), "", err.read_text())
    pid = runtime.state(cid)["pid"]
    reaped.add(pid)
    runtime.run("start", cid, check=True)
    code = reap(pid)
    runtime.wait_status(cid, "stopped")
    runtime.run("delete", cid, check=True)
    return Outcome(0, code, out.read_text(), err.read_text())


def mount_lines(text: str) -> list[str]:
    """mountinfo without the mount ids and device numbers, which differ from run to run."""
    lines = []
    for line in text.splitlines():
        fields = line.split()
        lines.append(" ".join(fields[3:]))
    return lines


def _user(config: dict[str, Any]) -> None:
    config["process"]["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [29, 44]}


def _inheritable(config: dict[str, Any]) -> None:
    _user(config)
    caps = config["process"]["capabilities"]
    caps["inheritable"] = list(caps["bounding"])


def _rlimits_umask_cwd(config: dict[str, Any]) -> None:
    config["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 333, "hard": 444},
                                    {"type": "RLIMIT_NPROC", "soft": 100, "hard": 200}]
    config["process"]["user"]["umask"] = 0o077
    config["process"]["cwd"] = "/etc"


def _no_nnp_hostname(config: dict[str, Any]) -> None:
    config["process"]["noNewPrivileges"] = False
    config["hostname"] = "diff-box"


def _writable(config: dict[str, Any]) -> None:
    config["root"]["readonly"] = False


def _seccomp(config: dict[str, Any]) -> None:
    config["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
                                  "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                                                "errnoRet": 13}]}


@dataclass
class Case:
    name: str
    args: list[str]
    adjust: Callable[[dict[str, Any]], None] | None = None
    normalize: Callable[[str], Any] = field(default=lambda text: text)


CASES = [
    Case("id", ["id"]),
    Case("caps", ["sh", "-c", "grep Cap /proc/self/status"]),
    Case("hostname", ["hostname"]),
    Case("hostname-set", ["sh", "-c", "hostname; grep NoNewPrivs /proc/self/status"], _no_nnp_hostname),
    Case("ls-dev", ["ls", "-la", "/dev"], normalize=lambda t: [line.split()[0::8] for line in t.splitlines()[1:]]),
    Case("mounts", ["cat", "/proc/self/mountinfo"], normalize=mount_lines),
    Case("mounts-writable", ["cat", "/proc/self/mountinfo"], _writable, normalize=mount_lines),
    Case("user", ["sh", "-c", "id; grep Cap /proc/self/status; echo $HOME"], _user),
    Case("user-inheritable", ["sh", "-c", "grep Cap /proc/self/status"], _inheritable),
    Case("env", ["env"], normalize=lambda t: sorted(t.splitlines())),
    Case("exit-code", ["sh", "-c", "echo to-stderr >&2; exit 42"]),
    Case("signal", ["sh", "-c", "kill -9 $$"]),
    Case("readonly-root", ["sh", "-c", "touch /x; echo $?; touch /dev/shm/x; echo $?"]),
    Case("rlimits-umask-cwd", ["sh", "-c", "ulimit -n; ulimit -Hn; ulimit -u; umask; pwd"], _rlimits_umask_cwd),
    Case("proc-status", ["sh", "-c", "grep -E '^(NoNewPrivs|Seccomp|Uid|Gid|Groups):' /proc/self/status"]),
    Case("seccomp", ["sh", "-c", "mkdir /dev/shm/d; echo $?; grep Seccomp: /proc/self/status"], _seccomp),
    Case("missing-executable", ["no-such-binary"]),
    Case("masked", ["sh", "-c", "wc -c < /proc/keys; ls /sys/firmware | wc -l; echo x > /proc/sysrq-trigger; echo $?"]),
]


@pytest.mark.skipif(not Path("/usr/sbin/runc").exists() and not Path("/usr/bin/runc").exists(),
                    reason="runc is not installed")
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_same_as_runc(case: Case, pycri: Runtime, runc: Runtime, make_bundle, tmp_path: Path,
                      subreaper: set[int]) -> None:
    bundle = make_bundle(*case.args)
    if case.adjust:
        case.adjust(bundle.config)
        bundle.write()
    theirs = run_case(runc, bundle, tmp_path, subreaper)
    ours = run_case(pycri, bundle, tmp_path, subreaper)
    assert ours.create_code == theirs.create_code, (ours.create_error, theirs.create_error)
    if theirs.create_code != 0:
        # the same reason, in runc's words: `... exec: "no-such-binary": executable file not found in $PATH`
        reason = theirs.create_error.split("unable to start container process: ", 1)[-1].strip().rstrip('"')
        assert reason in ours.create_error
        return
    assert ours.exit_code == theirs.exit_code
    assert case.normalize(ours.stdout) == case.normalize(theirs.stdout)
    assert ours.stderr == theirs.stderr


def test_cli_behaviour_matches_runc(pycri: Runtime, runc: Runtime, make_bundle, tmp_path: Path,
                                    subreaper: set[int]) -> None:
    """state JSON shape, exec exit codes, kill/delete errors."""
    bundle = make_bundle("sleep", "1000")
    results: dict[str, dict[str, Any]] = {}
    base = bundle.linux["cgroupsPath"]
    for runtime in (runc, pycri):
        cid = new_id(runtime.name[:4])
        bundle.linux["cgroupsPath"] = f"{base}-{runtime.name}"
        bundle.write()
        runtime.create(cid, bundle)
        created = runtime.state(cid)
        subreaper.add(created["pid"])
        runtime.run("start", cid, check=True)
        r: dict[str, Any] = {
            "created_keys": sorted(created), "created_status": created["status"],
            "running_status": runtime.state(cid)["status"],
            "exec": (lambda p: (p.returncode, p.stdout, p.stderr))(runtime.run("exec", cid, "sh", "-c", "echo a; echo b >&2; exit 3")),
            "exec_missing": runtime.run("exec", cid, "nope").returncode,
            "delete_running": runtime.run("delete", cid).returncode,
            "start_running": runtime.run("start", cid).returncode,
        }
        runtime.run("kill", cid, "KILL", check=True)
        reap(created["pid"])
        runtime.wait_status(cid, "stopped")
        stopped = runtime.state(cid)
        kill_stopped = runtime.run("kill", cid, "TERM")
        r.update({
            "stopped_pid": stopped["pid"], "kill_stopped": (kill_stopped.returncode, "container not running" in kill_stopped.stderr),
            "exec_stopped": runtime.run("exec", cid, "true").returncode,
            "delete": runtime.run("delete", cid).returncode,
            "state_gone": runtime.run("state", cid).returncode,
            "delete_gone": runtime.run("delete", cid).returncode,
            "delete_force_gone": runtime.run("delete", "--force", cid).returncode,
        })
        results[runtime.name] = r
    assert results["pycri-runtime"] == results["runc"]
