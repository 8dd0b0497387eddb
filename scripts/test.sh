#!/usr/bin/env bash
# Set up (idempotent) and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Two workers, one per core of the 2-core machines we run on (a later `-n N` overrides it); tests of one
# xdist_group (one multi-node cluster) stay on one worker.
.venv/bin/python -m pytest -q -n 2 --dist loadgroup "$@"
