#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) for FUZZ_SECONDS each with
# libFuzzer through cargo-fuzz, on the corpus kept in fuzz/corpus, and
# prints each target's executions. Fails on the first crash; its input is
# left in fuzz/artifacts/<target>/ (keep it as a regression test).
# cargo-fuzz needs nightly flags: RUSTC_BOOTSTRAP=1 lets stable Rust use them.
source "$(dirname "$0")/common.sh"

seconds="${FUZZ_SECONDS:-10}"
# FUZZ_GROW_CORPUS=1 (make fuzz) adds what a run finds to fuzz/corpus;
# otherwise (make test) the run works on a copy and leaves the tree as it was.
grow="${FUZZ_GROW_CORPUS:-0}"
command -v cargo-fuzz >/dev/null || {
  say "cargo install cargo-fuzz"
  cargo install cargo-fuzz --locked --quiet
}
export RUSTC_BOOTSTRAP=1
cd "$ROOT"
cargo fuzz build -O
for target in frame_scanner trailer_block base64_stream state_machines; do
  mkdir -p "fuzz/corpus/$target"
  corpus="fuzz/corpus/$target"
  if [ "$grow" != 1 ]; then
    corpus="$(mktemp -d)"
    cp -r "fuzz/corpus/$target/." "$corpus/"
  fi
  log="$(mktemp)"
  if ! cargo fuzz run -O "$target" "$corpus" -- \
      -max_total_time="$seconds" -max_len=512 -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log" >&2
    die "fuzz target $target crashed; the input is in fuzz/artifacts/$target/"
  fi
  runs="$(grep -o 'Done [0-9]* runs' "$log" | tail -1)"
  printf '%-16s %s in %ss, corpus %s inputs\n' "$target" "${runs#Done }" "$seconds" \
    "$(ls "$corpus" | wc -l)"
  rm -f "$log"
  [ "$grow" = 1 ] || rm -rf "$corpus"
done
