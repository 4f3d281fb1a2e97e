#!/usr/bin/env bash
# Installs nginx (the trailer-dropping HTTP/1.1 hop) from Debian's packages.
# The package's own service is kept from starting: tests run their own nginx.
source "$(dirname "$0")/common.sh"

command -v nginx >/dev/null && exit 0
say "installing nginx with apt-get"
policy=/usr/sbin/policy-rc.d
created=""
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created=1
fi
apt_install nginx-light || apt_install nginx
[ -n "$created" ] && rm -f "$policy"
# Stop a copy the package may have started anyway.
nginx -s stop 2>/dev/null || true
command -v nginx >/dev/null || die "nginx did not install"
