#!/usr/bin/env bash
# Fetch the CRI v1 api.proto of k8s.io/cri-api through the Go module proxy (the go
# client, GOPROXY as configured) and regenerate the Python stubs in api/cri/.
#   hack/gen-cri-api.sh            newest release (no pre-releases)
#   hack/gen-cri-api.sh v0.37.2    a given version
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
version=${1:-}
if [ -z "$version" ]; then
  version=$(cd /tmp && go list -m -versions k8s.io/cri-api | tr ' ' '\n' | grep -E '^v[0-9]+\.[0-9]+\.[0-9]+$' | sort -V | tail -1)
fi
json=$(cd /tmp && go mod download -json "k8s.io/cri-api@$version")
dir=$(printf '%s' "$json" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
modsum=$(printf '%s' "$json" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["Sum"])')
install -m 0644 "$dir/pkg/apis/runtime/v1/api.proto" api/cri/api.proto
sha=$(sha256sum api/cri/api.proto | cut -d' ' -f1)
cat > api/cri/UPSTREAM <<EOT
module: k8s.io/cri-api
version: $version
go-sum: $modsum
file: pkg/apis/runtime/v1/api.proto
sha256: $sha
EOT
"$PY" -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. api/cri/api.proto
# protoc names the module after the proto's path (api.cri); pycri installs it as pycri.api.cri.
sed -i 's/^from api\.cri import /from pycri.api.cri import /' api/cri/api_pb2_grpc.py
echo "api/cri: k8s.io/cri-api $version ($sha)"
