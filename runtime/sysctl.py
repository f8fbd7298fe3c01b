"""linux.sysctl: only namespaced keys, each allowed only when the container has its own
namespace of that kind (as runc checks), written to /proc/sys inside the container."""
from __future__ import annotations

from pycri.runtime.errors import RuntimeFailure
from pycri.runtime.spec import Linux

IPC_KEYS = ("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
            "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced")


def _needs(key: str) -> str | None:
    if key in IPC_KEYS or key.startswith("fs.mqueue."):
        return "ipc"
    if key.startswith("net."):
        return "network"
    if key in ("kernel.hostname", "kernel.domainname"):
        return "uts"
    return None


def validate(sysctl: dict[str, str], linux: Linux) -> None:
    for key in sysctl:
        if not key or ".." in key or "/" in key or key.startswith("."):
            raise RuntimeFailure(f"sysctl {key!r}: bad name")
        kind = _needs(key)
        if kind is None:
            raise RuntimeFailure(f"sysctl {key!r} is not in a separate kernel namespace")
        if linux.namespace(kind) is None:
            raise RuntimeFailure(f"sysctl {key!r} is not allowed in the host's {kind} namespace")


def write_all(sysctl: dict[str, str], proc_sys: str = "/proc/sys") -> None:
    for key, value in sysctl.items():
        path = f"{proc_sys}/{key.replace('.', '/')}"
        try:
            with open(path, "w") as f:
                f.write(value)
        except OSError as e:
            raise RuntimeFailure(f"write sysctl key {key}: {e.strerror or e}") from None
