#!/usr/bin/env bash
# Make new blind-denoiser weights the bundled model and measure again everything that
# depends on those weights, in order:
#
#   bash scripts/rebundle.sh WEIGHTS.safetensors DATA_FOLDER
#
# WEIGHTS: a trained model file (e.g. training/step5/<run>.safetensors); DATA_FOLDER holds
# bsd68/, set12/ and train400/. About two hours on two CPU cores. Leave the cores to it: the
# last table step times every row again side by side, and other work on the machine would
# show in those ratios. The docs that quote numbers in prose (README.md, docs/training.md,
# docs/scripting.md, the Denoise widget's self-ensemble tooltip) are written by hand after it.
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: bash scripts/rebundle.sh WEIGHTS.safetensors DATA_FOLDER" >&2
    exit 2
fi
weights=$1
data=$2
py=${PYTHON:-.venv/bin/python}
bundled=src/napari_addunet/weights/addunet-gray-blind.safetensors

[ -f "$weights" ] || { echo "no such weights file: $weights" >&2; exit 2; }
for d in bsd68 set12 train400; do
    [ -d "$data/$d" ] || { echo "$data has no $d/ folder" >&2; exit 2; }
done

step() { echo; echo "== $(date -u '+%H:%M:%S') $*"; "$@"; }

step "$py" scripts/finalize_weights.py "$weights" "$bundled" --weights-dtype float16
step "$py" benchmarks/denoising.py --data "$data" --redo addunet-bundled addunet-bundled-x2 addunet-bundled-x8
step "$py" benchmarks/denoising.py --data "$data" --retime
step "$py" benchmarks/cli_check.py "$data/bsd68"
step "$py" benchmarks/self_supervised.py --render
step "$py" benchmarks/gate_sweep.py "$data/bsd68" --images 10 --sigmas 25,50 --points 11
step "$py" benchmarks/summary.py
echo
echo "== $(date -u '+%H:%M:%S') done: now update the numbers quoted in prose, run the tests, commit"
