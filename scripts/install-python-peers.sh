#!/usr/bin/env bash
# Installs the Python gRPC peers' packages from PyPI (pinned) into
# .tools/python: grpcio (a real gRPC client and server that sends no
# response headers before its first message) and grpcio-tools (generates
# the interop service's Python code from tests/peers/proto). Idempotent.
source "$(dirname "$0")/common.sh"

target="$TOOLS/python"
stamp="$target/.grpcio-$GRPCIO_VERSION"
[ -f "$stamp" ] && exit 0
say "installing grpcio==$GRPCIO_VERSION and grpcio-tools into $target"
rm -rf "$target"
python3 -m pip install --quiet --disable-pip-version-check --target "$target" \
  "grpcio==$GRPCIO_VERSION" "grpcio-tools==$GRPCIO_VERSION"
PYTHONPATH="$target" python3 -c "import grpc, grpc_tools" || die "grpcio did not install"
touch "$stamp"
