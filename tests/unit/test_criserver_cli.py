"""criserver/cli.py: the daemon's gRPC settings from the environment, set before grpc is
imported, and never over what the environment already says."""
from __future__ import annotations

import subprocess
import sys

from pycri.criserver import cli


def test_grpc_settings_default_and_yield_to_the_environment() -> None:
    environ: dict[str, str] = {}
    cli.grpc_settings(environ)
    assert environ == {"GRPC_EXPERIMENTS": cli.GRPC_EXPERIMENTS}
    chosen = {"GRPC_EXPERIMENTS": ""}  # an operator's choice, even empty, stands
    cli.grpc_settings(chosen)
    assert chosen == {"GRPC_EXPERIMENTS": ""}


def test_the_cli_does_not_import_grpc_before_serve_sets_it() -> None:
    code = "import sys; from pycri.criserver import cli; print('grpc' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_grpc_knows_every_experiment_named() -> None:
    """An experiment gRPC no longer has is only logged; this says when the setting has gone stale."""
    env = {"GRPC_EXPERIMENTS": cli.GRPC_EXPERIMENTS, "GRPC_VERBOSITY": "error"}
    code = ("import grpc; from concurrent.futures import ThreadPoolExecutor; "
            "s = grpc.server(ThreadPoolExecutor(1)); s.add_insecure_port('127.0.0.1:0'); s.start(); s.stop(None)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0
    assert "Unknown experiment" not in result.stderr
