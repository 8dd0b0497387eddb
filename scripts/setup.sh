#!/usr/bin/env bash
# Set up ./.venv with the project and its test tools. Idempotent; safe to run again.
# PyTorch: a CPU wheel on this machine's disk is installed first where one is available,
# so pip never pulls a multi-GB CUDA build onto a CPU-only machine. Elsewhere pip picks
# whatever `torch>=2.3` resolves to (a CUDA build on Linux GPU machines).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
PIP=".venv/bin/python -m pip"
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  # --no-index --no-deps: only a local wheel (pip's configured find-links), without its
  # dependencies, which the next line fetches; falls through when there is no local wheel.
  if $PIP install --quiet --no-index --no-deps "torch==2.13.0" 2>/dev/null; then
    $PIP install --quiet "torch==2.13.0"
  else
    $PIP install --quiet "torch>=2.3"
  fi
fi
# The project and its extras: pip takes about 17 s to find them all satisfied, so a stamp of pyproject.toml
# and the interpreter skips it until either changes (delete .venv/.ect-setup to force it).
STAMP=.venv/.ect-setup
WANT="$(.venv/bin/python -c 'import hashlib, sys; print(hashlib.sha256(open("pyproject.toml", "rb").read()).hexdigest(), sys.version.split()[0])')"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ] || [ ! -x .venv/bin/ect ]; then
  $PIP install --quiet -e ".[dev]"
  echo "$WANT" > "$STAMP"
fi
# A PostgreSQL server for the store's tests (tests/pg.py starts one per test session): Debian's
# package where apt-get exists and we are root; elsewhere those tests skip and say why.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 \
    && [ "$(id -u)" -eq 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
    || echo "setup: could not install postgresql; the PostgreSQL store tests will skip" >&2
fi
.venv/bin/python -c "import torch, trainer, orchestrator; print('ect: ready (torch', torch.__version__ + ')')"
