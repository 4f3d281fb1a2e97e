# Shared helpers for the project's scripts. Source it; do not run it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
# Pinned versions; the docker-compose topology pins the same Envoy.
ENVOY_VERSION="1.40.0"
# Python gRPC peers (tests/peers/python).
GRPCIO_VERSION="1.76.0"
SONORA_VERSION="0.2.3"

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Runs apt-get as root (directly, or through sudo where we are not root).
apt_install() {
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  if [ ! -f "$TOOLS/.apt-updated" ]; then
    $sudo apt-get update -qq
    mkdir -p "$TOOLS" && touch "$TOOLS/.apt-updated"
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
