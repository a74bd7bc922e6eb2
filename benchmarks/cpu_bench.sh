#!/usr/bin/env bash
# The CPU benchmarks in one go, one intra-op thread each, JSON under $OUT (default benchmarks/results).
# On a lent GPU machine (16 idle cores) this is also the quickest way to get uncontended CPU numbers.
set -uo pipefail
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
OUT=${OUT:-benchmarks/results}; mkdir -p "$OUT"
PY=${PYTHON:-python3}
$PY benchmarks/params.py --json "$OUT/params.json" | tail -n 4
$PY benchmarks/roofline.py --json "$OUT/roofline.json"
$PY benchmarks/iteration.py --json "$OUT/iteration.json"
$PY benchmarks/train_step.py --json "$OUT/train_step.json" | tail -n 8
$PY benchmarks/sampling.py --repeats 2 --json "$OUT/sampling.json" | tail -n 12
