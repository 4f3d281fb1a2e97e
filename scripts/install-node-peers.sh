#!/usr/bin/env bash
# Installs the Node gRPC clients (tests/peers/node: @grpc/grpc-js and
# @grpc/proto-loader, pinned by package-lock.json) from the npm registry.
# Idempotent: reinstalls only when the lock file changed.
source "$(dirname "$0")/common.sh"

dir="$ROOT/tests/peers/node"
stamp="$dir/node_modules/.installed-lock"
command -v npm >/dev/null || die "npm is missing (Node.js is on this kind of machine)"
if [ -f "$stamp" ] && cmp -s "$stamp" "$dir/package-lock.json"; then
  exit 0
fi
say "npm ci in tests/peers/node"
npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error >/dev/null
cp "$dir/package-lock.json" "$stamp"
