#!/usr/bin/env bash
# Installs what the Open WebUI end-to-end tier needs, outside the checkout so CI reuses it on the same machine:
#   - Open WebUI 0.12.4 and the playwright driver in their own venv (never in the project's .venv), beside
#     torch==2.13.0 so pip takes the CPU wheel (Open WebUI's sentence-transformers would pull CUDA torch);
#   - Debian's chromium (playwright's own browser download cannot work offline).
# Idempotent: a stamp file marks a finished venv. First run about 5 minutes.
set -euo pipefail
root="${HUGLLAMA_E2E_CACHE:-/var/cache/hugllama-test}"
venv="$root/open-webui-venv"
stamp="$venv/.installed-0.12.4"
py="${PY:-python3}"

if [ ! -f "$stamp" ]; then
  mkdir -p "$root"
  rm -rf "$venv"
  "$py" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q torch==2.13.0 open-webui==0.12.4 playwright==1.65.3
  touch "$stamp"
fi

if ! command -v chromium >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo -n"
  { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null; } ||
    echo "tests/e2e/setup.sh: could not install chromium (apt-get): the browser test will skip"
fi
