"""The runtime exposed to the container during exec (the CVE-2019-5736 class): the runtime's
process that joins the container (pycri-runtime, a Python program) is visible in the
container's /proc from its fork to its execve. A process in the container could open its
`/proc/<pid>/exe` (the host's interpreter) and read its `/proc/<pid>/environ`, which was
pycri's whole environment. pycri gives the runtime only a PATH, and the runtime makes itself
non-dumpable (PR_SET_DUMPABLE 0) before it joins any of the container's namespaces."""
from __future__ import annotations

import os
import secrets
import subprocess
import time

from pycri.api.cri import api_pb2 as cri
from tests.e2e.harness import Pycri

TRIES = 100  # the issue saw 5 hits in about 35 tries without the fix
DEADLINE_SECONDS = 600.0
# the container's PATH: the runtime looks the command up along it after it has dropped to the
# container's capabilities (from then on a process of the container passes the ptrace checks
# of a dumpable process), which holds the race open long enough to be won most times
LONG_PATH = ":".join(f"/nonexistent/{i}" for i in range(3000)) + ":/bin"

# Watches the newest process of the container's PID namespace (each exec is the newest one
# for a while: the scanner forks nothing) with shell builtins only: one whose command line names
# the host's python is the runtime before its execve. Records each one seen, and a hit when its
# environ holds the canary or its exe opens while it is still the runtime.
SCANNER = r"""
exec 2>/dev/null
seen=0
while true; do
  read -r _ _ _ _ p < /proc/loadavg  # its last field: the newest pid of the reader's namespace
  c=""
  read -r c < /proc/$p/cmdline  # fails at the end without a newline: c is read
  case "$c" in
    *python*)
      e=""
      read -r e < /proc/$p/environ
      case "$e" in *PYCRI_SECRET_CANARY*) echo "environ $p" >> /tmp/hits ;; esac
      if true < /proc/$p/exe; then
        # the exe opened: a hit if the process was still the runtime after that (not yet execed)
        c=""
        read -r c < /proc/$p/cmdline
        case "$c" in *python*) echo "exe $p" >> /tmp/hits ;; esac
      fi
      if [ $seen != $p ]; then seen=$p; echo "seen $p" >> /tmp/seen; fi
      ;;
  esac
done
"""


def read_file(stub: object, container: str, path: str) -> list[str]:
    reply = stub.ExecSync(cri.ExecSyncRequest(container_id=container, cmd=["sh", "-c", f"cat {path} 2>/dev/null; true"],  # type: ignore[attr-defined]
                                              timeout=60), timeout=120)
    return reply.stdout.decode(errors="replace").splitlines()


def test_exec_does_not_expose_the_runtime_or_pycris_environment(pycri: Pycri) -> None:
    canary = secrets.token_hex(16)
    pycri.stop()
    pycri.start(env={**os.environ, "PYCRI_SECRET_CANARY": canary})
    assert pycri.process is not None
    assert canary.encode() in open(f"/proc/{pycri.process.pid}/environ", "rb").read()

    pod = pycri.run_pod("exposure")
    ctr = pycri.run(pod, "exposure", "scanner", ["sh", "-c", SCANNER], envs=[{"key": "PATH", "value": LONG_PATH}])
    stub = pycri.runtime_stub()
    deadline = time.monotonic() + DEADLINE_SECONDS
    hits: list[str] = []
    seen: list[str] = []
    for attempt in range(1, TRIES + 1):
        reply = stub.ExecSync(cri.ExecSyncRequest(container_id=ctr, cmd=["true"], timeout=60), timeout=120)
        assert reply.exit_code == 0
        if attempt % 10 == 0 or attempt == TRIES or time.monotonic() > deadline:
            hits = read_file(stub, ctr, "/tmp/hits")
            seen = read_file(stub, ctr, "/tmp/seen")
            if hits or time.monotonic() > deadline:
                break
    reached = sorted({hit.split()[1] for hit in hits})
    assert not hits, f"the container reached the runtime in {len(reached)} of {len(seen)} execs it saw: {hits[:4]}"
    assert seen, "the scanner never saw the runtime in the container: the race was not run"


def test_a_created_containers_init_is_not_exposed(pycri: Pycri) -> None:
    """The init of a created, not yet started, container is still the runtime, waiting for
    `start` before its execve: it is in the pod's namespaces already (and, in a pod that shares
    its PID namespace, visible to the pod's other containers). A process with the container's
    uid and capabilities (here: root without any) must not get at its exe or environ."""
    pod = pycri.run_pod("exposure-init")
    ctr = pycri.create(pod, "exposure-init", "waiting", ["sleep", "3600"], linux={
        "security_context": {"capabilities": {"drop_capabilities": ["ALL"]}}})
    # (CreateContainer returns once the runtime's create is on its way: its pid file comes after)
    pidfile = pycri.root / "containers" / ctr / "bundle" / "pidfile"
    deadline = time.monotonic() + 60
    while not (pidfile.exists() and pidfile.read_text().strip()):
        assert time.monotonic() < deadline, "the runtime wrote no pid file"
        time.sleep(0.05)
    pid = int(pidfile.read_text())
    cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
    assert b"pycri-runtime" in cmdline, "the init has exec'd already"
    for path in (f"/proc/{pid}/exe", f"/proc/{pid}/environ"):
        # uid 0 with no capabilities, like the container's processes
        result = subprocess.run(["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--", "head", "-c", "1", path],
                                capture_output=True, timeout=60)
        assert result.returncode != 0, f"{path} of the runtime was readable"
        assert b"Permission denied" in result.stderr, result.stderr
