#!/usr/bin/env bash
# One call on a lent GPU machine (its python3 has torch, numpy, scikit-learn, safetensors, tqdm, Pillow):
# the test suite (CPU tests + tests/test_cuda.py) under that torch; CUDA parity and XL/2 speed and peak
# memory (bf16, eager and compiled, with and without checkpointing); the XL/2 training-memory benchmark
# (meter on 16 CPU threads + real CUDA peaks); a short digits train/sample on CUDA. Results under $OUT.
set -uo pipefail
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_check}; mkdir -p "$OUT"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
timeout 150 python3 -m pytest -q -x -p no:cacheprovider tests 2>&1 | tail -n 5
timeout 240 python3 benchmarks/gpu_check.py 2>&1 | tee "$OUT/gpu_check.jsonl"
timeout 150 python3 benchmarks/train_memory.py --threads 16 --cuda-peak --json "$OUT/train_memory.json" \
    2>&1 | tail -n 16
timeout 60 python3 -m fpdm.cli train --model FPDM-T/2 --steps 300 --device cuda --out /tmp/gpu_run \
    --no-progress --log-every 100 --precision bf16 2>&1 | tail -n 2
cp /tmp/gpu_run/log.jsonl "$OUT/gpu_train_log.jsonl" 2>/dev/null || true
