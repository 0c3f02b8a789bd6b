#!/bin/sh
# Container entrypoint: make sure the data directories exist, then replace this shell with the command, so
# gunicorn is PID 1 and gets SIGTERM directly (it drains in-flight requests before exiting).
#   docker run IMAGE                          -> gunicorn with the bundled config
#   docker run IMAGE --log-level debug        -> the same, with extra gunicorn flags
#   docker run IMAGE hugllama pull org/repo   -> any other command, run as is
set -eu

# Files written to shared volumes stay group-writable: Kubernetes' fsGroup (and OpenShift's arbitrary uid with
# gid 0) give access through the group, not the owner.
umask 0002

if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
    set -- gunicorn --config /opt/hugllama/config/gunicorn.conf.py "$@"
fi

for dir in "${HUGLLAMA_HOME:-/data/hugllama}" "${HF_HOME:-/data/hf}"; do
    # A read-only, pre-filled cache is a valid setup (with HF_HUB_OFFLINE=1), so this only warns.
    if ! mkdir -p "$dir" 2>/dev/null || [ ! -w "$dir" ]; then
        echo "entrypoint: warning: $dir is not writable by uid $(id -u); pulls and conversions there will fail" \
            "(chown the volume to 10001 or set the pod's fsGroup)" >&2
    fi
done

exec "$@"
