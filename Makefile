# grpc-web-bridge. `make demo` runs the edge -> HTTP/1.1 hop -> origin
# topology with real Envoy; `make test` runs every test. Both install what
# they need on a fresh machine (see scripts/install-*.sh).
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
WASM := dist/grpc_web_bridge.wasm
WASM_TEST_RUNNER := CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner

.PHONY: all setup build lint test test-native test-wasm clean

all: build

setup:
	@scripts/install-rust-tools.sh

## The module Envoy loads, at a stable path.
build: setup
	cargo build --release --target wasm32-wasip1
	@mkdir -p dist
	@cp target/wasm32-wasip1/release/grpc_web_bridge.wasm $(WASM)
	@echo "built $(WASM): $$(stat -c %s $(WASM)) bytes"

lint: setup
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --target wasm32-wasip1 -- -D warnings

## Unit and property tests, natively.
test-native:
	@echo "==> unit tests (native)"
	cargo test --lib

## The same unit tests compiled to wasm32 and run under Node.
test-wasm: setup
	@echo "==> unit tests (wasm32-unknown-unknown under Node)"
	$(WASM_TEST_RUNNER) cargo test --target wasm32-unknown-unknown --lib

test: lint test-native test-wasm build

clean:
	cargo clean
	rm -rf dist
