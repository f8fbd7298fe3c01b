#!/usr/bin/env bash
# Build crictl (sigs.k8s.io/cri-tools) from source through the Go module proxy into /usr/local/bin.
# Skips the build when the installed crictl already reports the wanted version.
set -euo pipefail
CRI_TOOLS_VERSION=${CRI_TOOLS_VERSION:-v1.37.0}
BIN_DIR=${BIN_DIR:-/usr/local/bin}
if [ -x "$BIN_DIR/crictl" ] && "$BIN_DIR/crictl" --version 2>/dev/null | grep -q "$CRI_TOOLS_VERSION"; then
  exit 0
fi
export PATH=$PATH:/usr/local/go/bin
cd /tmp
GOBIN="$BIN_DIR" go install \
  -ldflags "-X sigs.k8s.io/cri-tools/pkg/version.Version=$CRI_TOOLS_VERSION" \
  "sigs.k8s.io/cri-tools/cmd/crictl@$CRI_TOOLS_VERSION"
"$BIN_DIR/crictl" --version
