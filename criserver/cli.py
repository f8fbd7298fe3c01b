"""The `pycri` command: `pycri serve` runs the daemon, `pycri config` prints the effective config,
`pycri images import FILE|-` has the running daemon import an image archive (`docker save`, an
OCI layout tar) and `pycri images tag IMAGE NAME` names an image."""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import MutableMapping
from pathlib import Path

from pycri.common import log
from pycri.common.errors import PycriError
from pycri.criserver import config as config_file

# gRPC core's own I/O (its "iomgr": the thread that waits for the next call also reads the
# socket) instead of its EventEngine threads for the listener and the connections. Same calls,
# fewer thread hand-offs: at kubelet's ~3.5 calls a second the daemon took ~12% less CPU
# (docs/performance.md). gRPC reads this once, when it starts; a GRPC_EXPERIMENTS already in
# the environment (even empty) is left as it is.
GRPC_EXPERIMENTS = "-event_engine_listener,-event_engine_for_all_other_endpoints,-event_engine_callback_cq"


def grpc_settings(environ: MutableMapping[str, str]) -> None:
    """The daemon's gRPC settings that only the environment carries: set before grpc is imported."""
    environ.setdefault("GRPC_EXPERIMENTS", GRPC_EXPERIMENTS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pycri", description="A Kubernetes CRI runtime in Python")
    parser.add_argument("--config", type=Path, default=None,
                        help=f"config file (default {config_file.DEFAULT_PATH}, if it exists)")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the CRI daemon")
    serve.add_argument("--log-format", choices=config_file.LOG_FORMATS, help="override [log] format")
    serve.add_argument("--pid-file", type=Path, help="write the daemon's pid here")
    sub.add_parser("config", help="print the effective configuration")
    images = sub.add_parser("images", help="image archives, through the running daemon")
    images_sub = images.add_subparsers(dest="images_command", required=True)
    load = images_sub.add_parser("import", help="import a docker save or OCI layout tar (every image and name in it)")
    load.add_argument("archive", help="the archive's path, or - for standard input")
    load.add_argument("--all-platforms", action="store_true",
                      help="accepted for ctr's sake; pycri keeps this node's platform of each image")
    tag = images_sub.add_parser("tag", help="name an image (move the name if another image has it)")
    tag.add_argument("source", help="an image id or name")
    tag.add_argument("target", help="the new name, name:tag")
    args = parser.parse_args(argv)
    try:
        config = config_file.load(args.config)
    except PycriError as exc:
        print(f"pycri: {exc}", file=sys.stderr)
        return 2
    if args.command == "config":
        print(config_file.to_toml(config), end="")
        return 0
    if args.command == "images":
        return images_command(args, config.socket_path)
    log.configure(config.log_level, args.log_format or config.log_format)
    grpc_settings(os.environ)
    from pycri.criserver.server import Daemon, write_pid_file  # grpc is imported only to serve

    if args.pid_file:
        write_pid_file(args.pid_file)
    Daemon(config).run_until_signalled()
    return 0


def images_command(args: argparse.Namespace, socket_path: Path) -> int:
    import grpc  # only for the commands that talk to the daemon

    from pycri.criserver import admin_client

    try:
        if args.images_command == "tag":
            image_id = admin_client.tag(socket_path, args.source, args.target)
            print(f"{args.target} -> {image_id}")
            return 0
        if args.archive == "-":
            imported = admin_client.import_archive(socket_path, sys.stdin.buffer)
        else:
            with open(args.archive, "rb") as archive:
                imported = admin_client.import_archive(socket_path, archive)
    except OSError as exc:
        print(f"pycri: images {args.images_command}: {exc}", file=sys.stderr)
        return 1
    except grpc.RpcError as exc:
        details = exc.details() if hasattr(exc, "details") else str(exc)  # type: ignore[attr-defined]
        code = exc.code().name if hasattr(exc, "code") else ""  # type: ignore[attr-defined]
        print(f"pycri: images {args.images_command} failed ({code}): {details} [daemon at {socket_path}]",
              file=sys.stderr)
        return 1
    for image in imported:
        names = " ".join(image["repo_tags"]) or "(no name: use its id)"
        print(f"imported {image['id']} {names}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
