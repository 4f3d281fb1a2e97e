#!/usr/bin/env bash
# Installs the Python gRPC peers' packages from PyPI (pinned) into
# .tools/python: grpcio (a real gRPC client and server that sends no
# response headers before its first message) and grpcio-tools (generates
# the interop service's Python code from tests/peers/proto), and sonora (a
# gRPC-web client, sync and asyncio). Idempotent.
source "$(dirname "$0")/common.sh"

target="$TOOLS/python"
stamp="$target/.grpcio-$GRPCIO_VERSION-sonora-$SONORA_VERSION"
[ -f "$stamp" ] && exit 0
say "installing grpcio==$GRPCIO_VERSION, grpcio-tools and sonora==$SONORA_VERSION into $target"
rm -rf "$target"
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --target "$target" \
  "grpcio==$GRPCIO_VERSION" "grpcio-tools==$GRPCIO_VERSION" "sonora==$SONORA_VERSION"
PYTHONPATH="$target" python3 -c "import grpc, grpc_tools, sonora.client, sonora.aio" \
  || die "the Python peers did not install"
touch "$stamp"
