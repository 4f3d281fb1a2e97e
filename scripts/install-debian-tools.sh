#!/usr/bin/env bash
# Installs the Debian packages the end-to-end tests use, each only if its
# command is missing: nginx (the trailer-dropping HTTP/1.1 hop),
# docker-compose (validates the compose topology without an engine),
# docker-registry and skopeo (the OCI registry round trip), chromium (the
# browser clients, driven by playwright-core).
# Package services are kept from starting: tests run their own.
#
#   scripts/install-debian-tools.sh          all of them (make test)
#   scripts/install-debian-tools.sh nginx    only these commands (make demo)
source "$(dirname "$0")/common.sh"

declare -A package=([nginx]=nginx-light [docker-compose]=docker-compose [docker-registry]=docker-registry [skopeo]=skopeo [chromium]=chromium)
commands=("$@")
[ ${#commands[@]} -gt 0 ] || commands=(nginx docker-compose docker-registry skopeo chromium)
missing=()
for command in "${commands[@]}"; do
  [ -n "${package[$command]:-}" ] || die "no package known for $command"
  command -v "$command" >/dev/null || missing+=("${package[$command]}")
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
for command in "${commands[@]}"; do
  command -v "$command" >/dev/null || die "$command did not install"
done
