#!/usr/bin/env bash
# Makes the local images `npm run test:containers` runs on, from this machine alone (no image registry):
# a Debian bookworm base made with debootstrap, Node 20 (this machine's node and npm), PostgreSQL 15 and
# Prometheus from Debian's packages, and a stand-in for the OpenTelemetry collector (test only).
#
#   scripts/container-images.sh [--rebuild]
#
# An image that exists is kept unless --rebuild. The debootstrap root filesystem is cached as a
# tarball in $DB_GATEWAY_IMAGE_CACHE (default /var/cache/db-gateway-images): delete it to bootstrap
# anew. Needs root (debootstrap), a running dockerd and Debian's mirror (read from /etc/apt).
# Prints the images' names at the end.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
images="$root/test/containers/images"
prefix=${DB_GATEWAY_IMAGE_PREFIX:-db-gateway-local}
cache=${DB_GATEWAY_IMAGE_CACHE:-/var/cache/db-gateway-images}
rebuild=0
for arg in "$@"; do
  case "$arg" in
    --rebuild) rebuild=1 ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "container-images: unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done

debian_image="$prefix/debian:bookworm-slim"
node_image="$prefix/node:20-bookworm-slim"
postgres_image="$prefix/postgres:15"
prometheus_image="$prefix/prometheus:latest"
collector_image="$prefix/otel-collector-standin:latest"

log() { echo "container-images: $*" >&2; }

# The mirror this machine's apt uses (deb822 or one-line sources), so the images get what the machine gets.
apt_uri() { # $1: the archive's last path component (debian or debian-security)
  grep -rhoE "https?://[^ ]+/$1/?( |\$)" /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null | grep -v '^#' | head -1 | tr -d ' ' || true
}
mirror=${DEBIAN_MIRROR:-$(apt_uri debian)}
mirror=${mirror:-http://deb.debian.org/debian}
security_mirror=${DEBIAN_SECURITY_MIRROR:-$(apt_uri debian-security)}
security_mirror=${security_mirror:-http://deb.debian.org/debian-security}

exists() { docker image inspect "$1" >/dev/null 2>&1; }
wanted() { # $1: image; true when it must be built
  if [ "$rebuild" = 0 ] && exists "$1"; then log "$1 exists (--rebuild to make it again)"; return 1; fi
  return 0
}
# RUN steps fetch packages: the daemon here has no bridge network, so builds use the host's.
build() { # $1: image, $2: context, then build arguments
  local image=$1 context=$2
  shift 2
  log "building $image"
  local out previous
  out=$(mktemp)
  previous=$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
  docker build --network host --tag "$image" "$@" "$context" >"$out" 2>&1 || { tail -30 "$out" >&2; rm -f "$out"; return 1; }
  rm -f "$out"
  # The image this one replaces, now untagged, unless something still uses it.
  if [ -n "$previous" ] && [ "$previous" != "$(docker image inspect --format '{{.Id}}' "$image")" ]; then
    docker image rm "$previous" >/dev/null 2>&1 || true
  fi
}

docker info >/dev/null 2>&1 || { log "docker does not answer: start dockerd first (dockerd --bridge=none --iptables=false &)"; exit 1; }

node_bin=$(readlink -f "$(command -v node)")
node_major=$("$node_bin" -p 'process.versions.node.split(".")[0]')
[ "$node_major" = 20 ] || { log "this machine's node is $("$node_bin" --version), not 20: $node_image would be misnamed"; exit 1; }

if wanted "$debian_image"; then
  rootfs_tar="$cache/bookworm-minbase.tar"
  if [ ! -s "$rootfs_tar" ]; then
    [ "$(id -u)" = 0 ] || { log "debootstrap needs root"; exit 1; }
    command -v debootstrap >/dev/null || { log "debootstrap is not installed (apt-get install debootstrap)"; exit 1; }
    mkdir -p "$cache"
    work=$(mktemp -d "$cache/rootfs.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    log "debootstrap bookworm (minbase) from $mirror: a few minutes"
    debootstrap --variant=minbase --include=ca-certificates bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
      || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
    # What the bootstrap leaves that an image must not carry: downloaded packages, apt lists.
    rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
    tar --numeric-owner -C "$work/rootfs" -cf "$rootfs_tar.part" .
    mv "$rootfs_tar.part" "$rootfs_tar"
    rm -rf "$work"
    trap - EXIT
  fi
  log "importing $rootfs_tar"
  docker import "$rootfs_tar" "$prefix/debian-rootfs:bookworm" >/dev/null
  context=$(mktemp -d)
  cp "$images/debian/Dockerfile" "$context/"
  # This machine's own CAs (a TLS-inspecting proxy's, say), so that npm ci in image builds reaches the registry as it does here.
  mkdir -p "$context/extra-ca"
  find /usr/local/share/ca-certificates -name '*.crt' -exec cp {} "$context/extra-ca/" \; 2>/dev/null || true
  cat >"$context/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security_mirror
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  build "$debian_image" "$context" --build-arg "ROOTFS_IMAGE=$prefix/debian-rootfs:bookworm"
  rm -rf "$context"
  docker image rm "$prefix/debian-rootfs:bookworm" >/dev/null
  rebuild_dependents=1
fi
# An image built on an older base is made again with the new one.
[ "${rebuild_dependents:-0}" = 1 ] && rebuild=1

if wanted "$node_image"; then
  context=$(mktemp -d)
  cp "$images/node/Dockerfile" "$context/"
  cp "$node_bin" "$context/node"
  cp -r "$(npm root -g)/npm" "$context/npm"
  build "$node_image" "$context" --build-arg "DEBIAN_IMAGE=$debian_image"
  rm -rf "$context"
  node_rebuilt=1
fi

if wanted "$postgres_image"; then build "$postgres_image" "$images/postgres" --build-arg "DEBIAN_IMAGE=$debian_image"; fi
if wanted "$prometheus_image"; then build "$prometheus_image" "$images/prometheus" --build-arg "DEBIAN_IMAGE=$debian_image"; fi
[ "${node_rebuilt:-0}" = 1 ] && rebuild=1
if wanted "$collector_image"; then build "$collector_image" "$images/otel-collector-standin" --build-arg "NODE_IMAGE=$node_image"; fi

printf '%s\n' "$debian_image" "$node_image" "$postgres_image" "$prometheus_image" "$collector_image"
