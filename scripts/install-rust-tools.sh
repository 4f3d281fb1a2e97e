#!/usr/bin/env bash
# Installs the Rust targets, components and wasm-bindgen test runner the
# build and tests need. Idempotent: a second run only checks.
#
#   scripts/install-rust-tools.sh          everything (make test)
#   scripts/install-rust-tools.sh build    only the module's target (make build, make demo)
source "$(dirname "$0")/common.sh"

if [ "${1:-}" = build ]; then
  rustup target list --installed | grep -qx wasm32-wasip1 || {
    say "rustup target add wasm32-wasip1"
    rustup target add wasm32-wasip1
  }
  exit 0
fi

targets=(wasm32-wasip1 wasm32-unknown-unknown)
installed="$(rustup target list --installed)"
for target in "${targets[@]}"; do
  grep -qx "$target" <<<"$installed" || { say "rustup target add $target"; rustup target add "$target"; }
done
for component in clippy rustfmt; do
  rustup component list --installed | grep -q "^$component" || rustup component add "$component"
done

# wasm-bindgen-test-runner must match the wasm-bindgen crate in Cargo.lock exactly.
want="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' "$ROOT/Cargo.lock")"
[ -n "$want" ] || die "wasm-bindgen not found in Cargo.lock"
have="$(wasm-bindgen-test-runner --version 2>/dev/null | awk '{print $2}' || true)"
if [ "$have" != "$want" ]; then
  say "cargo install wasm-bindgen-cli $want (have: ${have:-none})"
  # Not --locked: its lock file names a webpki-roots the registry no longer
  # serves, which fails with an error line before any fallback.
  cargo install wasm-bindgen-cli --version "$want" --quiet
fi
