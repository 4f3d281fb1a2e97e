#!/usr/bin/env bash
# Installs the Debian packages the end-to-end tests use, each only if its
# command is missing: nginx (the trailer-dropping HTTP/1.1 hop),
# docker-compose (validates the compose topology without an engine),
# docker-registry and skopeo (the OCI registry round trip), chromium (the
# browser clients, driven by playwright-core), and the intermediaries of
# the hop matrix (docs/hops.md): HAProxy, Apache httpd with ModSecurity and
# the OWASP CRS, Squid, Varnish, Caddy; valgrind only when named (the
# instruction counts of make bench).
# Package services are kept from starting: tests run their own.
#
#   scripts/install-debian-tools.sh          all but valgrind (make test)
#   scripts/install-debian-tools.sh nginx    only these commands (make demo)
source "$(dirname "$0")/common.sh"

declare -A package=([nginx]=nginx-light [docker-compose]=docker-compose [docker-registry]=docker-registry [skopeo]=skopeo [chromium]=chromium
  [haproxy]=haproxy [apache2]=apache2 [squid]=squid [varnishd]=varnish [caddy]=caddy
  [modsecurity]="libapache2-mod-security2 modsecurity-crs" [valgrind]=valgrind)
# What shows a package is there: its command, or for a module its file.
present() {
  case "$1" in
    modsecurity) [ -f /usr/lib/apache2/modules/mod_security2.so ] && [ -d /usr/share/modsecurity-crs ] ;;
    *) command -v "$1" >/dev/null ;;
  esac
}
commands=("$@")
[ ${#commands[@]} -gt 0 ] || commands=(nginx docker-compose docker-registry skopeo chromium haproxy apache2 squid varnishd caddy modsecurity)
missing=()
for command in "${commands[@]}"; do
  [ -n "${package[$command]:-}" ] || die "no package known for $command"
  # shellcheck disable=SC2206 # an entry may name two packages
  present "$command" || missing+=(${package[$command]})
done
[ ${#missing[@]} -eq 0 ] && exit 0

say "installing ${missing[*]} with apt-get"
policy=/usr/sbin/policy-rc.d
created=""
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created=1
fi
apt_install "${missing[@]}"
[ -n "$created" ] && rm -f "$policy"
# Stop copies a package may have started anyway.
nginx -s stop 2>/dev/null || true
pkill -x docker-registry 2>/dev/null || true
for daemon in apache2 haproxy squid varnishd caddy; do
  pkill -x "$daemon" 2>/dev/null || true
done
for command in "${commands[@]}"; do
  present "$command" || die "$command did not install"
done
