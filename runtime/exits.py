"""Leaving a short-lived pycri process (pycri-runtime, the infra launcher) without the
interpreter's teardown: there is nothing to clean up, and tearing down the modules costs a call
~10 ms. Imports only os and sys: both processes start with `python -IS` and import little."""
from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn


def exit_now(code: int) -> NoReturn:
    """Flush stdout and stderr (a failed flush makes a 0 code 1), then _exit(code)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = code or 1
    os._exit(code)
