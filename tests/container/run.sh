#!/bin/sh
# The container tier of `make test`: builds the CPU image from this checkout and runs it (tests/container/).
#   - installs docker.io, docker-compose and debootstrap with apt-get when missing (needs root);
#   - starts dockerd when no daemon answers, and stops it at the end (only the one it started);
#   - makes the local python:3.11-slim stand-in once (tests/container/base_image.sh) when no registry has it;
#   - puts pip's CPU torch wheel (the venv's version) in /var/cache/hugllama-test/wheels for the build's index;
#   - runs `pytest -m container tests/container`.
# It skips with one line only where Docker cannot run (no root to install it, no daemon that can start).
set -eu
cd "$(dirname "$0")/../.."
PY="${PY:-.venv/bin/python}"
WHEELS="${HUGLLAMA_TEST_WHEELS:-/var/cache/hugllama-test/wheels}"
work=$(mktemp -d)
began=$(date +%s)
started_dockerd=""

cleanup() {
    if [ -n "$started_dockerd" ] && kill -0 "$started_dockerd" 2>/dev/null; then
        kill -TERM "$started_dockerd"
        i=0
        while kill -0 "$started_dockerd" 2>/dev/null && [ "$i" -lt 30 ]; do sleep 1; i=$((i + 1)); done
    fi
    rm -rf "$work"
}
trap cleanup EXIT
skip() {
    echo "container tier skipped: $*"
    exit 0
}

if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker-compose >/dev/null 2>&1 \
    || ! command -v debootstrap >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        if ! docker info >/dev/null 2>&1 || ! command -v docker-compose >/dev/null 2>&1; then
            skip "Docker and docker-compose are missing and this user cannot apt-get install them"
        fi
    else
        echo "container tier: installing docker.io docker-compose debootstrap" >&2
        apt-get update -qq >"$work/apt.log" 2>&1 || { tail -5 "$work/apt.log" >&2; exit 1; }
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io docker-compose debootstrap \
            >>"$work/apt.log" 2>&1 || { tail -5 "$work/apt.log" >&2; exit 1; }
    fi
fi

if ! docker info >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ] || ! command -v dockerd >/dev/null 2>&1; then
        skip "no Docker daemon and none can be started here"
    fi
    dockerd --pidfile "$work/dockerd.pid" >"$work/dockerd.log" 2>&1 &
    started_dockerd=$!
    i=0
    until docker info >/dev/null 2>&1; do
        if ! kill -0 "$started_dockerd" 2>/dev/null || [ "$i" -ge 60 ]; then
            skip "dockerd cannot run here ($(tail -1 "$work/dockerd.log"))"
        fi
        sleep 1
        i=$((i + 1))
    done
fi

tests/container/base_image.sh python:3.11-slim

torch_version=$("$PY" -c "import torch; print(torch.__version__.split('+')[0])")
mkdir -p "$WHEELS"
if ! ls "$WHEELS"/torch-"$torch_version"*.whl >/dev/null 2>&1; then
    "$PY" -m pip download -q --no-deps "torch==$torch_version" -d "$WHEELS"
fi

HUGLLAMA_TEST_WHEELS="$WHEELS" "$PY" -m pytest -q -p no:cacheprovider -m container -s tests/container
echo "container tier: $(($(date +%s) - began))s in all"
