#!/usr/bin/env bash
# Installs a built module at its stable path: writes a new file beside it
# and renames it into place. Never copy over a module in place: Envoy maps
# the native build (dlopen), and rewriting the mapped file under a running
# Envoy makes its next request jump into changed code (a segfault; every
# Envoy that had it loaded). A rename leaves the running Envoys the old
# file, and the next Envoy that loads the path gets the new one.
# Usage: scripts/install-module.sh SOURCE DESTINATION
set -euo pipefail
source=$1 destination=$2
mkdir -p "$(dirname "$destination")"
staged=$(mktemp "$destination.XXXXXX")
trap 'rm -f "$staged"' EXIT
cp "$source" "$staged"
chmod 0644 "$staged"
mv -f "$staged" "$destination"
