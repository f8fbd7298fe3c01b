"""Finding args[0] the way Go's exec.LookPath does (which is what users see from runc):
a name with a slash is used as is, a bare name is searched in the container's PATH."""
from __future__ import annotations

import os
import stat

from pycri.runtime.errors import RuntimeFailure


def _executable(path: str) -> OSError | None:
    try:
        st = os.stat(path)
    except OSError as e:
        return e
    if stat.S_ISDIR(st.st_mode) or not st.st_mode & 0o111:
        return PermissionError(13, "permission denied")
    return None


def look_path(name: str, env: list[str]) -> str:
    if "/" in name:
        error = _executable(name)
        if error is not None:
            reason = error.strerror.lower() if error.strerror else str(error)
            raise RuntimeFailure(f'exec: "{name}": stat {name}: {reason}')
        return name
    path = ""
    for entry in env:
        if entry.startswith("PATH="):
            path = entry[5:]  # the last PATH= wins, as with execve's environment
    for directory in path.split(":") if path else []:
        candidate = os.path.join(directory or ".", name)
        if _executable(candidate) is None:
            return candidate
    raise RuntimeFailure(f'exec: "{name}": executable file not found in $PATH')
