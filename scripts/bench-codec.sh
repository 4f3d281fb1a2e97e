#!/usr/bin/env bash
# The codec benches (benches/codec.rs, criterion): natively, then compiled
# to wasm32-wasip1 with SIMD128 and run under Node's WASI (V8). Prints
# criterion's report of each; docs/benchmarks.md records a run.
source "$(dirname "$0")/common.sh"
cd "$ROOT"

say "codec benches, native ($(uname -m))"
cargo bench -q -p grpc-web-bridge --bench codec -- --noplot "$@"

say "codec benches, wasm32-wasip1 under Node $(node --version) (V8)"
wasm="$(cargo bench -q -p grpc-web-bridge --bench codec --target wasm32-wasip1 --no-run --message-format=json \
  | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["executable"])' | tail -1)"
[ -n "$wasm" ] || die "the wasm bench did not build"
node "$ROOT/benches/run-wasi.mjs" "$wasm" --bench "$@"
