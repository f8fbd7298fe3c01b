"""linux.seccomp loaded with libseccomp: errno rules, argument conditions, both with and
without noNewPrivileges, and applied to exec'd processes too."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.conftest import Runtime, new_id, reap

PROFILE = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "syscalls": [
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
        # chmod/fchmodat with mode 0777 only: EACCES (13)
        {"names": ["chmod"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13,
         "args": [{"index": 1, "value": 0o777, "op": "SCMP_CMP_EQ"}]},
        {"names": ["fchmodat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13,
         "args": [{"index": 2, "value": 0o777, "op": "SCMP_CMP_EQ"}]},
        {"names": ["no_such_syscall_name"], "action": "SCMP_ACT_ERRNO"},
    ],
}


@pytest.mark.parametrize("no_new_privileges", [True, False])
def test_seccomp_profile(pycri: Runtime, make_bundle, tmp_path: Path, subreaper: set[int],
                         no_new_privileges: bool) -> None:
    bundle = make_bundle("sh", "-c", "mkdir /tmp/d 2>&1; echo mkdir=$?; touch /tmp/f; chmod 777 /tmp/f 2>&1; "
                         "echo chmod777=$?; chmod 700 /tmp/f; echo chmod700=$?; "
                         "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status; sleep 1000")
    bundle.config["root"]["readonly"] = False
    bundle.config["process"]["noNewPrivileges"] = no_new_privileges
    bundle.linux["seccomp"] = PROFILE
    bundle.write()
    cid = new_id()
    out = tmp_path / "out"
    with open(out, "wb") as stdout:
        pycri.create(cid, bundle, stdout=stdout, stderr=stdout)
    pid = pycri.state(cid)["pid"]
    subreaper.add(pid)
    pycri.run("start", cid, check=True)
    exec_result = pycri.run("exec", cid, "mkdir", "/tmp/e")
    assert exec_result.returncode == 1 and "Operation not permitted" in exec_result.stderr
    pycri.run("kill", cid, "KILL", check=True)
    assert reap(pid) == 137
    text = out.read_text()
    assert "Operation not permitted" in text and "mkdir=1" in text
    assert "Permission denied" in text and "chmod777=1" in text and "chmod700=0" in text
    assert "Seccomp:\t2" in text
    assert f"NoNewPrivs:\t{1 if no_new_privileges else 0}" in text


def test_bad_seccomp_action_fails_create(pycri: Runtime, make_bundle) -> None:
    bundle = make_bundle("true")
    bundle.linux["seccomp"] = {"defaultAction": "SCMP_ACT_WHATEVER"}
    bundle.write()
    result = pycri.create(new_id(), bundle, check=False)
    assert result.returncode == 1 and b"unknown seccomp action" in result.stderr
