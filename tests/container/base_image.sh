#!/bin/sh
# Makes a local stand-in for `python:3.11-slim` when no registry is reachable: Debian bookworm (minbase) with
# its python3 3.11, imported as an image under that name. Cached by name: nothing happens when the image exists
# (a real pulled python:3.11-slim is used as is). Needs root, debootstrap and a Debian mirror in apt's sources.
#   tests/container/base_image.sh [IMAGE]       (default python:3.11-slim; about 2 minutes)
set -eu
image="${1:-python:3.11-slim}"
docker=${DOCKER:-docker}
if $docker image inspect "$image" >/dev/null 2>&1; then
    exit 0
fi
# The first Debian mirror apt uses (deb822 "URIs:" or one-line "deb URL suite" sources).
mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null \
    | awk '/^URIs:/ && $2 ~ /debian\/?$/ {print $2; exit} /^deb / && $0 ~ /debian\/? bookworm/ {for (i=2;i<=NF;i++) if ($i ~ /^https?:/) {print $i; exit}}')
mirror="${mirror:-http://deb.debian.org/debian}"
rootfs=$(mktemp -d /var/tmp/hugllama-base.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "base_image: debootstrap bookworm from $mirror into $image" >&2
debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || { tail -20 "$rootfs.log" >&2; exit 1; }
rm -f "$rootfs.log"
chroot "$rootfs" apt-get update -qq
DEBIAN_FRONTEND=noninteractive chroot "$rootfs" apt-get install -y -qq --no-install-recommends \
    python3 python3-venv ca-certificates >/dev/null
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
# An imported image has no config: PATH and LANG as the official image sets them.
tar -C "$rootfs" -c . | $docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'ENV LANG=C.UTF-8' \
    -c 'CMD ["python3"]' \
    -m "local stand-in for python:3.11-slim (Debian bookworm python3)" - "$image" >/dev/null
echo "base_image: $image ready" >&2
