#!/usr/bin/env bash
# The main job: set up, then run the mini compute-scaling study on scikit-learn's digits
# (diffusion pretraining, ECT at six compute budgets, FD at 1 and 2 steps and the Heun baseline),
# then 4-step and tuned-t_mid 2-step sampling of the stored checkpoints (the study's evaluate: section),
# fit the power laws and draw the figures into out/mini-compute-scaling/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
ECT=.venv/bin/ect
STUDY=studies/presets/mini/compute_scaling.yaml
mkdir -p out
$ECT study run "$STUDY" --db out/ect.db --storage out/store
$ECT study evaluate mini-compute-scaling --db out/ect.db --storage out/store
$ECT study report mini-compute-scaling --db out/ect.db --out out/mini-compute-scaling
