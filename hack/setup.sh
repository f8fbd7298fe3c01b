#!/usr/bin/env bash
# Everything a fresh machine needs, then pycri running with the default config:
#   Debian packages, the Python venv (.venv) with pycri installed, crictl built
#   from source, /etc/pycri/pycri.toml and /etc/crictl.yaml (kept if present),
#   the test registries with the project's test images, and the pycri daemon.
# Idempotent: a second run only checks and starts what is not running.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
[ "$(id -u)" = 0 ] || { echo "hack/setup.sh must run as root" >&2; exit 1; }

DEBIAN_PACKAGES=(python3.11-venv docker-registry apache2-utils busybox-static conmon containernetworking-plugins iptables runc crun tmux catatonit)
PYTHON=${PYTHON:-}
export PATH=$PATH:/usr/local/go/bin

step() { printf '\n== %s\n' "$*"; }

step "Debian packages"
missing=()
for p in "${DEBIAN_PACKAGES[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  # Debian's docker-registry starts its own registry on :5000 where an init system runs; ours is hack/registry.sh.
  if command -v service >/dev/null && service docker-registry status >/dev/null 2>&1; then service docker-registry stop || true; fi
  pkill -f '^/usr/bin/docker-registry serve /etc/docker/registry/config.yml' || true
fi
echo "ok: ${DEBIAN_PACKAGES[*]}"

step "Python venv"
# Debian's python3.11 first: its interpreter is one executable built with PGO and LTO (pyenv's
# links a shared, unoptimized libpython). Measured here (docs/performance.md): a gRPC call took
# ~15% less of the daemon's CPU, and pycri-runtime's create ~12% less CPU and ~4.7 ms less time.
if [ -z "$PYTHON" ]; then
  for candidate in /usr/bin/python3.11 python3.11 /root/.pyenv/versions/3.11*/bin/python3.11; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      PYTHON=$(command -v "$candidate"); break
    fi
  done
fi
[ -n "$PYTHON" ] || { echo "Python 3.11 not found (set PYTHON=)" >&2; exit 1; }
# The venv's interpreter is the real one, not a pyenv shim, so per-container processes start fast.
PYTHON=$("$PYTHON" -c 'import os, sys; print(os.path.realpath(sys.executable))')
# a venv made from another interpreter (an earlier choice) is made again from this one
if [ -f .venv/pyvenv.cfg ] && ! grep -qx "executable = $PYTHON" .venv/pyvenv.cfg; then
  echo "the venv's interpreter is not $PYTHON: making .venv again"
  rm -rf .venv
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=.venv/.pycri-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  # editable: setuptools' finder maps pycri.<folder> onto the checkout's folders (pyproject's
  # package-dir); a new module needs no reinstall, a new top-level folder does (pyproject changes).
  .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
  touch "$stamp"
fi
# pycri's own OCI runtime, run by conmon once per container operation: the venv's interpreter
# by absolute path, -I -S, standard library only.
.venv/bin/python -m pycri.runtime.launcher .venv/bin/pycri-runtime --python "$ROOT/.venv/bin/python" >/dev/null
echo "ok: $(.venv/bin/python --version) at $ROOT/.venv, $ROOT/.venv/bin/pycri-runtime"

step "crictl"
hack/install-crictl.sh
crictl --version

step "configuration"
if [ ! -f /etc/pycri/pycri.toml ]; then
  install -D -m 0644 hack/pycri.toml /etc/pycri/pycri.toml
  echo "wrote /etc/pycri/pycri.toml"
fi
if [ ! -f /etc/crictl.yaml ]; then
  printf 'runtime-endpoint: unix:///run/pycri/pycri.sock\nimage-endpoint: unix:///run/pycri/pycri.sock\ntimeout: 60\n' > /etc/crictl.yaml
  echo "wrote /etc/crictl.yaml"
fi

step "test registries and images"
hack/registry.sh start
.venv/bin/python hack/testimages.py --registry 127.0.0.1:5000

step "pycri"
hack/pycri.sh start
