"""Runtime logging in runc's formats: `--log FILE` and `--log-format text|json`.

Text lines look like logrus's: `time="2024-01-02T03:04:05Z" level=error msg="..."`; JSON
lines are `{"level": ..., "msg": ..., "time": ...}`. Errors also go to stderr (conmon reads
the runtime's stderr when `create` fails); warnings go to the log file, or to stderr when
there is none.
"""
from __future__ import annotations

import os
import sys
import time

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


def _quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{escaped}"'


def format_entry(level: str, message: str, fmt: str, now: float | None = None) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if now is None else now))
    if fmt == "json":
        from pycri.runtime import jsonlite

        return jsonlite.dumps({"level": level, "msg": message, "time": stamp})
    return f"time={_quote(stamp)} level={level} msg={_quote(message)}"


class Logger:
    def __init__(self, path: str | None = None, fmt: str = "text", debug: bool = False) -> None:
        if fmt not in ("text", "json"):
            raise ValueError(f"unknown log-format {fmt!r} (text or json)")
        self.path = path
        self.fmt = fmt
        self.threshold = LEVELS["debug"] if debug else LEVELS["info"]

    def _write(self, level: str, message: str, to_stderr: bool) -> None:
        if LEVELS[level] < self.threshold:
            return
        line = format_entry(level, message, self.fmt) + "\n"
        if self.path:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
                try:
                    os.write(fd, line.encode())
                finally:
                    os.close(fd)
            except OSError:
                to_stderr = True
        if to_stderr or not self.path:
            try:
                sys.stderr.write(line)
                sys.stderr.flush()
            except (OSError, ValueError):
                pass

    def debug(self, message: str) -> None:
        self._write("debug", message, False)

    def info(self, message: str) -> None:
        self._write("info", message, False)

    def warning(self, message: str) -> None:
        self._write("warning", message, False)

    def error(self, message: str) -> None:
        self._write("error", message, True)


# the logger of this process, set up by the CLI from the global flags
current = Logger()
