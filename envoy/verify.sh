#!/usr/bin/env bash
# Runs every interop case through the compose topology's edge and fails if
# any fails; on failure prints the services' logs. Start the topology first:
#   docker compose up --wait
set -euo pipefail
cd "$(dirname "$0")"

compose() {
  if docker compose version >/dev/null 2>&1; then docker compose "$@"; else docker-compose "$@"; fi
}

if ! compose --profile verify run --rm client; then
  echo "verify: interop cases failed; service logs follow" >&2
  compose logs --no-color server origin hop edge >&2
  exit 1
fi
echo "verify: all interop cases passed through edge -> hop -> origin -> server"
