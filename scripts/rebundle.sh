#!/usr/bin/env bash
# Make new blind-denoiser weights the bundled model and measure again everything that
# depends on those weights, in order:
#
#   bash scripts/rebundle.sh WEIGHTS.safetensors DATA_FOLDER
#
# WEIGHTS: a trained model file (e.g. training/step5/<run>.safetensors); DATA_FOLDER holds
# bsd68/, set12/ and train400/. About two hours on two CPU cores (three when a classical row
# is measured again, as BM3D is once after it was set to one thread). Leave the cores to it:
# a step times every row again side by side, and other work on the machine would show in
# those ratios; do not run it while a training run writes. The prose that quotes numbers is
# written by hand after it: README.md, docs/training.md, docs/scripting.md,
# training/step5/README.md, the Denoise widget's self-ensemble tooltip, and the "decision"
# text in docs/benchmarks/config-selection.json (then `python benchmarks/summary.py` again).
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: bash scripts/rebundle.sh WEIGHTS.safetensors DATA_FOLDER" >&2
    exit 2
fi
weights=$(realpath "$1")
data=$(realpath "$2")
cd "$(dirname "$0")/.."  # the repository root: the paths below are relative to it
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
