#!/usr/bin/env bash
# checkov over terraform/, offline. checkov pins its own bc-python-hcl2, which shadows
# python-hcl2's `hcl2` module in the main venv, so it gets a virtual env of its own.
# Skipped checks and their reasons live in terraform/.checkov.yaml (see checkov-skips.md).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
VENV="${CHECKOV_VENV:-$ROOT/.venv-checkov}"
CHECKOV_SPEC="${CHECKOV_SPEC:-checkov>=3.2,<4}"

if [[ ! -x "$VENV/bin/checkov" ]]; then
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet "$CHECKOV_SPEC"
fi

cd "$ROOT"
# --skip-download: no Bridgecrew platform, no external modules; works without internet.
exec "$VENV/bin/checkov" \
  --directory terraform \
  --framework terraform \
  --config-file terraform/.checkov.yaml \
  --skip-download \
  --quiet \
  --compact \
  "$@"
