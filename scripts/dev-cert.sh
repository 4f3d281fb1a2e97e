#!/usr/bin/env bash
# Makes the edge's development certificate by Debian's openssl: a CA
# (envoy/tls/ca.crt, what clients trust) and the edge's certificate signed
# by it (tls.crt, tls.key) for the names the edge has in tests and in
# compose: localhost, 127.0.0.1, edge. Not for production: the key is
# world-readable so that the Envoy image (uid 101) can read it from a bind
# mount. Idempotent: kept while it has over a day to live.
source "$(dirname "$0")/common.sh"

dir="$ROOT/envoy/tls"
if [ -f "$dir/ca.crt" ] && openssl x509 -checkend 86400 -noout -in "$dir/tls.crt" >/dev/null 2>&1; then
  exit 0
fi
command -v openssl >/dev/null || apt_install openssl
mkdir -p "$dir"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
  -subj "/CN=grpc-web-bridge development CA" \
  -keyout "$work/ca.key" -out "$dir/ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -subj "/CN=grpc-web-bridge edge (development)" \
  -keyout "$dir/tls.key" -out "$work/tls.csr" 2>/dev/null
printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
  "extendedKeyUsage=serverAuth" "subjectAltName=DNS:localhost,DNS:edge,IP:127.0.0.1" >"$work/ext"
openssl x509 -req -in "$work/tls.csr" -CA "$dir/ca.crt" -CAkey "$work/ca.key" -CAcreateserial \
  -days 30 -extfile "$work/ext" -out "$dir/tls.crt" 2>/dev/null
chmod 644 "$dir/tls.key" "$dir/tls.crt" "$dir/ca.crt"
say "made envoy/tls/{ca.crt,tls.crt,tls.key} (development, 30 days)"
