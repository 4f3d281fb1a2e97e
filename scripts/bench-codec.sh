#!/usr/bin/env bash
# The codec benches (benches/codec.rs) and a unary call through each state
# machine (benches/calls.rs), under criterion: natively, then compiled to
# wasm32-wasip1 with SIMD128 and run under Node's WASI (V8). Prints
# criterion's report of each; docs/benchmarks.md records a run.
source "$(dirname "$0")/common.sh"
cd "$ROOT"

benches=(--features fake-host --bench codec --bench calls)

say "codec and call benches, native ($(uname -m))"
cargo bench -q -p grpc-web-bridge "${benches[@]}" -- --noplot "$@"

say "codec and call benches, wasm32-wasip1 under Node $(node --version) (V8)"
mapfile -t wasm < <(cargo bench -q -p grpc-web-bridge "${benches[@]}" --target wasm32-wasip1 --no-run --message-format=json \
  | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["executable"])')
[ "${#wasm[@]}" -eq 2 ] || die "the wasm benches did not build"
for bench in "${wasm[@]}"; do
  node "$ROOT/benches/run-wasi.mjs" "$bench" --bench "$@"
done
