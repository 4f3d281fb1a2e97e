#!/usr/bin/env bash
# Renders the manifests of envoy/deploy/ into DEPLOY_OUT (default
# dist/deploy) with the built module's digests, a marker key and your
# names, and fails if any @@NAME@@ placeholder is left (`make deploy`,
# docs/deploy.md).
#
#   make deploy REGISTRY=registry.example.com/team \
#               MODULE_URL=http://modules.kuma-system.svc.cluster.local/grpc_web_bridge.wasm
#
# REGISTRY     where `make oci`'s images are pushed (Istio, Envoy Gateway)
# MODULE_URL   where Kuma's Envoys fetch the module over HTTP (in-mesh)
# NATIVE_MODULE_URL  where Envoy Gateway's Envoys fetch the native build
#              (libgrpc_web_bridge.so; default: beside MODULE_URL)
# MARKER_KEY   the edge's and the origins' shared key (32+ characters of
#              A-Z a-z 0-9 . _ ~ + / = -); default: one made once and
#              kept in DEPLOY_OUT/marker-key
# NAMESPACE (default), ORIGIN_NAMESPACE (grpc-backend), ORIGIN_APP
# (grpc-backend), ORIGIN_PORT (50051), EDGE_ROUTE (grpc-edge), EDGE_GATEWAY
# (edge-gateway; also Kuma's MeshGateway), ORIGIN_GATEWAY (origin-gateway),
# ORIGIN_LISTENER (http), KUMA_MESH (default).
source "$(dirname "$0")/common.sh"
cd "$ROOT"

out="${DEPLOY_OUT:-dist/deploy}"
wasm="dist/grpc_web_bridge.wasm"
native="dist/native/libgrpc_web_bridge.so"
index="dist/oci/index.json"
[ -f "$wasm" ] && [ -f "$index" ] || die "no $wasm or $index: run make oci"
[ -f "$native" ] || die "no $native: run make build-native"

need() {
  local name="$1" value="$2" pattern="$3" what="$4"
  [ -n "$value" ] || die "$name is not set: $what (see scripts/deploy-render.sh)"
  [[ "$value" =~ $pattern ]] || die "$name=$value is not $what"
}
dns='^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'
REGISTRY="${REGISTRY:-}"
MODULE_URL="${MODULE_URL:-}"
need REGISTRY "$REGISTRY" '^[A-Za-z0-9.-]+(:[0-9]+)?(/[a-z0-9._-]+)*$' "a registry host[:port][/path]"
need MODULE_URL "$MODULE_URL" '^http://([A-Za-z0-9.-]+)(:([0-9]+))?/[A-Za-z0-9._/-]+$' \
  "an http://host[:port]/path URL (Kuma's cluster for it speaks plain HTTP)"
module_host="${BASH_REMATCH[1]}"
module_port="${BASH_REMATCH[3]:-80}"
NATIVE_MODULE_URL="${NATIVE_MODULE_URL:-${MODULE_URL%/*}/libgrpc_web_bridge.so}"
need NATIVE_MODULE_URL "$NATIVE_MODULE_URL" '^https?://[A-Za-z0-9.-]+(:[0-9]+)?/[A-Za-z0-9._/-]+$' \
  "an http(s)://host[:port]/path URL"
for name in NAMESPACE ORIGIN_NAMESPACE ORIGIN_APP EDGE_ROUTE EDGE_GATEWAY ORIGIN_GATEWAY ORIGIN_LISTENER KUMA_MESH; do
  default="$(case "$name" in
    NAMESPACE | KUMA_MESH) echo default ;; ORIGIN_NAMESPACE | ORIGIN_APP) echo grpc-backend ;;
    EDGE_ROUTE) echo grpc-edge ;; EDGE_GATEWAY) echo edge-gateway ;;
    ORIGIN_GATEWAY) echo origin-gateway ;; ORIGIN_LISTENER) echo http ;; esac)"
  printf -v "$name" '%s' "${!name:-$default}"
  need "$name" "${!name}" "$dns" "a Kubernetes name (lowercase, digits, '-')"
done
ORIGIN_PORT="${ORIGIN_PORT:-50051}"
need ORIGIN_PORT "$ORIGIN_PORT" '^[1-9][0-9]{0,4}$' "a port number"

mkdir -p "$out"
if [ -z "${MARKER_KEY:-}" ]; then
  if [ ! -s "$out/marker-key" ]; then
    (umask 077 && head -c 32 /dev/urandom | sha256sum | cut -d' ' -f1 >"$out/marker-key")
    say "made a marker key in $out/marker-key (kept for the next render)"
  fi
  MARKER_KEY="$(cat "$out/marker-key")"
fi
need MARKER_KEY "$MARKER_KEY" '^[A-Za-z0-9._~+/=-]{32,}$' "32 or more of A-Z a-z 0-9 . _ ~ + / = -"

module_sha256="$(sha256sum "$wasm" | cut -d' ' -f1)"
native_sha256="$(sha256sum "$native" | cut -d' ' -f1)"
compat_sha256="$(grep -Eo '"digest":"sha256:[0-9a-f]{64}","size":[0-9]+,"annotations":\{"org.opencontainers.image.ref.name":"compat"\}' "$index" |
  grep -Eo '[0-9a-f]{64}')" || die "no compat image in $index"

for source in "${DEPLOY_SOURCE:-envoy/deploy}"/*.yaml; do
  target="$out/$(basename "$source")"
  sed -e "s|@@REGISTRY@@|$REGISTRY|g" \
    -e "s|@@MODULE_URL@@|$MODULE_URL|g" \
    -e "s|@@MODULE_HOST@@|$module_host|g" \
    -e "s|@@MODULE_PORT@@|$module_port|g" \
    -e "s|@@MODULE_SHA256@@|$module_sha256|g" \
    -e "s|@@NATIVE_MODULE_URL@@|$NATIVE_MODULE_URL|g" \
    -e "s|@@NATIVE_SHA256@@|$native_sha256|g" \
    -e "s|@@COMPAT_SHA256@@|$compat_sha256|g" \
    -e "s|@@MARKER_KEY@@|$MARKER_KEY|g" \
    -e "s|@@NAMESPACE@@|$NAMESPACE|g" \
    -e "s|@@ORIGIN_NAMESPACE@@|$ORIGIN_NAMESPACE|g" \
    -e "s|@@ORIGIN_APP@@|$ORIGIN_APP|g" \
    -e "s|@@ORIGIN_PORT@@|$ORIGIN_PORT|g" \
    -e "s|@@EDGE_ROUTE@@|$EDGE_ROUTE|g" \
    -e "s|@@EDGE_GATEWAY@@|$EDGE_GATEWAY|g" \
    -e "s|@@ORIGIN_GATEWAY@@|$ORIGIN_GATEWAY|g" \
    -e "s|@@ORIGIN_LISTENER@@|$ORIGIN_LISTENER|g" \
    -e "s|@@KUMA_MESH@@|$KUMA_MESH|g" \
    "$source" >"$target"
done
if left="$(grep -Hno '@@[A-Z0-9_]*@@' "$out"/*.yaml)"; then
  die "placeholders left in the rendered manifests:"$'\n'"$left"
fi
echo "rendered $(ls "$out"/*.yaml | wc -l) manifests into $out: module sha256 $module_sha256, native build sha256 $native_sha256, compat image sha256 $compat_sha256"
echo "push the images first: skopeo copy --preserve-digests oci:dist/oci:compat docker://$REGISTRY/grpc-web-bridge:compat"
