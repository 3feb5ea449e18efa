#!/usr/bin/env bash
# Continue the shipped tiny SAM's pre-training on a CUDA GPU for a wall-clock budget, in one call.
#
# For a session that is lent a GPU (the `device` tool: 15 minutes in all, one command at most 10):
# the tiny SAM's pre-training is the lever the box target waits on (docs/demo/NOTES.md, item 2), and minutes
# of a datacenter GPU are hours of the two build cores. Prepare here, once:
#
#     mkdir -p .whl && python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#         --implementation cp --platform manylinux2014_x86_64 -d .whl segment-anything pycocotools
#
# then run it there, carrying the wheels (`run` with carry [".whl"], timeout_s 600):
#
#     bash benchmarks/gpu_pretrain.sh "$OUT"
#
# and rebuild the weights here from the parts it leaves in OUT (each file that comes back is under
# 16 MiB; OUT is read-only here): `cat OUT/sam_tiny.part-* > sam_tiny.safetensors`, whose `sha256sum`
# must equal the one in OUT/sam_tiny.sha256.
# Then score it as PRETRAIN_LOG.md does (the mask targets, the probe, `wps-sam demo --sam-checkpoint`).
#
# Settings (environment): BUDGET_S (pre-training wall time, default 300), DEVICE (cuda), STEPS (the
# schedule's length in steps, default 20000: the budget ends it first), BATCH (generic scenes and
# object images per step, 32), PROMPTS (prompts per scene, 4), LR (4e-4, warmed up again over 100
# steps, cosine to 5% by the budget), WORKERS (processes drawing batches, 14), INIT (the starting
# weights, default the shipped ones), LOG_EVERY (25). A dry run on the CPU: BUDGET_S=60 DEVICE=cpu
# BATCH=2 PROMPTS=2 WORKERS=1 LOG_EVERY=1.
set -euo pipefail
out=${1:?usage: gpu_pretrain.sh OUT_DIR}
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ -d .whl ] && ! python3 -c "import segment_anything, pycocotools" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
  nproc; } > "$out/machine.txt"
run=/tmp/wps-sam-gpu-pretrain
rm -rf "$run"
start=$(date +%s)
python3 -m wps_sam.cli pretrain-sam --out "$run" --device "${DEVICE:-cuda}" \
    --init "${INIT:-src/wps_sam/weights/sam_tiny.safetensors}" \
    --steps "${STEPS:-20000}" --low-res-steps 0 --batch-size "${BATCH:-32}" \
    --object-batch-size "${BATCH:-32}" --prompts-per-image "${PROMPTS:-4}" --lr "${LR:-4e-4}" \
    --warmup-steps 100 --eval-every 1000 --eval-images 32 --time-budget-s "${BUDGET_S:-300}" \
    --log-every "${LOG_EVERY:-25}" --threads 2 --workers "${WORKERS:-14}" --seed 1 -v 2>&1 | tee "$out/pretrain.log"
echo "wall_s $(( $(date +%s) - start ))" >> "$out/machine.txt"
cp "$run/pretrain_log.jsonl" "$out/"
(cd "$run" && sha256sum sam_tiny.safetensors) > "$out/sam_tiny.sha256"
split -b 15M -d "$run/sam_tiny.safetensors" "$out/sam_tiny.part-"
ls -l "$out"
