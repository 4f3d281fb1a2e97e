#!/usr/bin/env bash
# Writes dist/oci, an OCI image layout with the module under two tags,
# without a Docker engine (sha256sum, tar, gzip only; byte-reproducible):
#   compat    the image Istio's WasmPlugin and Envoy Gateway pull: one
#             gzip tar layer holding /plugin.wasm, annotated
#             module.wasm.image/variant=compat
#   artifact  the CNCF Wasm OCI artifact: config
#             application/vnd.wasm.config.v0+json, one application/wasm layer
source "$(dirname "$0")/common.sh"

wasm="$ROOT/dist/grpc_web_bridge.wasm"
out="$ROOT/dist/oci"
[ -f "$wasm" ] || die "$wasm is missing: run make build"
rm -rf "$out" && mkdir -p "$out/blobs/sha256"
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT

# Stores a file as a blob; prints "digest size".
blob() {
  local digest size
  digest="$(sha256sum "$1" | cut -d' ' -f1)"
  size="$(stat -c %s "$1")"
  cp "$1" "$out/blobs/sha256/$digest"
  echo "$digest $size"
}

wasm_digest_size="$(blob "$wasm")"; read -r wasm_digest wasm_size <<<"$wasm_digest_size"

# compat: a plain image whose one layer holds /plugin.wasm.
cp "$wasm" "$work/plugin.wasm"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=posix \
  --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
  -C "$work" -cf "$work/layer.tar" plugin.wasm
diff_id="$(sha256sum "$work/layer.tar" | cut -d' ' -f1)"
gzip -n -9 <"$work/layer.tar" >"$work/layer.tar.gz"
read -r layer_digest layer_size <<<"$(blob "$work/layer.tar.gz")"
printf '{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
  "$diff_id" >"$work/compat-config.json"
read -r cconfig_digest cconfig_size <<<"$(blob "$work/compat-config.json")"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}],"annotations":{"module.wasm.image/variant":"compat"}}' \
  "$cconfig_digest" "$cconfig_size" "$layer_digest" "$layer_size" >"$work/compat-manifest.json"
read -r compat_digest compat_size <<<"$(blob "$work/compat-manifest.json")"

# artifact: the CNCF Wasm OCI artifact.
printf '{"architecture":"wasm","os":"wasip1","layerDigests":["sha256:%s"]}' "$wasm_digest" >"$work/wasm-config.json"
read -r wconfig_digest wconfig_size <<<"$(blob "$work/wasm-config.json")"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.wasm.config.v0+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/wasm","digest":"sha256:%s","size":%s}]}' \
  "$wconfig_digest" "$wconfig_size" "$wasm_digest" "$wasm_size" >"$work/wasm-manifest.json"
read -r artifact_digest artifact_size <<<"$(blob "$work/wasm-manifest.json")"

printf '{"imageLayoutVersion":"1.0.0"}' >"$out/oci-layout"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"compat"}},{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"artifact"}}]}' \
  "$compat_digest" "$compat_size" "$artifact_digest" "$artifact_size" >"$out/index.json"

echo "wrote $out: compat sha256:$compat_digest, artifact sha256:$artifact_digest (module sha256:$wasm_digest)"
# Each manifest wants the digest in its own form.
echo "  Istio WasmPlugin spec.sha256 (bare hex, the compat manifest): $compat_digest"
echo "  Envoy code.remote.sha256 (bare hex, the module itself):       $wasm_digest"
