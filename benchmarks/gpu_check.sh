#!/usr/bin/env bash
# One call on a lent GPU machine (its python3 has torch, numpy, scikit-learn, safetensors, tqdm, Pillow):
#   CPU test suite under that torch, CUDA parity + XL timings, and a short digits train/sample on CUDA.
set -uo pipefail
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_check}; mkdir -p "$OUT"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
python3 -m pytest -q -x -p no:cacheprovider tests 2>&1 | tail -n 5
python3 benchmarks/gpu_check.py 2>&1 | tee "$OUT/gpu_check.jsonl"
python3 -m fpdm.cli train --model FPDM-T/2 --steps 300 --device cuda --out /tmp/gpu_run --no-progress \
    --log-every 100 2>&1 | tail -n 2
python3 -m fpdm.cli sample --ckpt /tmp/gpu_run/ckpt.pt --steps 50 --iters 4 --num 20 --device cuda \
    --out "$OUT/gpu_samples" --no-progress 2>&1 | tail -n 1
cp /tmp/gpu_run/log.jsonl "$OUT/gpu_train_log.jsonl" 2>/dev/null || true
