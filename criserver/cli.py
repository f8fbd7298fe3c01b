"""The `pycri` command: `pycri serve` runs the daemon, `pycri config` prints the effective config."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pycri.common import log
from pycri.common.errors import PycriError
from pycri.criserver import config as config_file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pycri", description="A Kubernetes CRI runtime in Python")
    parser.add_argument("--config", type=Path, default=None,
                        help=f"config file (default {config_file.DEFAULT_PATH}, if it exists)")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the CRI daemon")
    serve.add_argument("--log-format", choices=config_file.LOG_FORMATS, help="override [log] format")
    serve.add_argument("--pid-file", type=Path, help="write the daemon's pid here")
    sub.add_parser("config", help="print the effective configuration")
    args = parser.parse_args(argv)
    try:
        config = config_file.load(args.config)
    except PycriError as exc:
        print(f"pycri: {exc}", file=sys.stderr)
        return 2
    if args.command == "config":
        print(config_file.to_toml(config), end="")
        return 0
    log.configure(config.log_level, args.log_format or config.log_format)
    from pycri.criserver.server import Daemon, write_pid_file  # grpc is imported only to serve

    if args.pid_file:
        write_pid_file(args.pid_file)
    Daemon(config).run_until_signalled()
    return 0


if __name__ == "__main__":
    sys.exit(main())
