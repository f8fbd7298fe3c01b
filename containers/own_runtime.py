"""Commands of pycri's own runtime (runtime/) that the daemon runs in its own process instead
of starting a `pycri-runtime` process for them: `start`, which reads the container's state,
checks it and opens its exec fifo to release the init (~0.2 ms, where the command's process
cost ~10 ms). The runtime's own function runs, on the handler's --root: two starts at once,
or a start and a delete, meet at the fifo and the init's pid as two commands would.

Errors are raised as `OciCli` raises a failed command's: NotFound for a container the runtime
does not have, RuntimeFailed with the runtime's message otherwise.
"""
from __future__ import annotations

from pathlib import Path

from pycri.common.errors import NotFound, RuntimeFailed
from pycri.runtime import commands
from pycri.runtime.errors import ContainerNotExist, RuntimeFailure
from pycri.runtime.state import StateStore


def start(name: str, root: Path, container_id: str) -> None:
    """`<runtime> --root ROOT start ID`, in this process; `name` is the handler's (for messages)."""
    try:
        commands.start(StateStore(str(root)), container_id)
    except ContainerNotExist as exc:
        raise NotFound(f"{name}: start {container_id}: {exc}") from None
    except RuntimeFailure as exc:
        raise RuntimeFailed(f"{name} start failed: {exc}") from None
    except OSError as exc:  # what the command reports as an internal error
        raise RuntimeFailed(f"{name} start failed: start: internal error: {type(exc).__name__}: {exc}") from None
