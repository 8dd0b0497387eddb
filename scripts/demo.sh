#!/usr/bin/env bash
# The main job: set up, pretrain a small DDPM++ UNet as a diffusion model on scikit-learn's
# digits (r = 0), tune it with ECT, and write 1- and 2-step sample grids under runs/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
ECT=.venv/bin/ect
$ECT train configs/mini/digits_pretrain.yaml --out runs/digits_pretrain
$ECT train configs/mini/digits_ect.yaml --out runs/digits_ect
$ECT sample runs/digits_pretrain/checkpoint.pt --heun --out runs/digits_pretrain/samples_heun35.png
for steps in 1 2; do
  $ECT sample runs/digits_ect/checkpoint.pt --steps $steps --out runs/digits_ect/samples_${steps}step.png
done
echo "demo done: see runs/digits_ect/samples_1step.png and samples_2step.png"
