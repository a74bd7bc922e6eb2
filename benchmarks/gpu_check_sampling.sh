#!/usr/bin/env bash
# One call on a lent GPU machine: budgeted sampling on CUDA — exact block counts with every option,
# whether a seed's sample is bit-identical across batch sizes there too, and sampler throughput.
set -uo pipefail
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_check}; mkdir -p "$OUT"
python3 -m fpdm.cli train --model FPDM-T/2 --steps 300 --device cuda --out /tmp/g --no-progress | tail -n 1
for extra in "--iters 4" "--steps 105 --profile increasing --reuse" "--steps 105 --tol 0.1 --solver anderson"; do
  python3 -m fpdm.cli sample --ckpt /tmp/g/ckpt.pt --budget 840 $extra --device cuda --seeds 0-255 \
      --cfg-scale 1.5 --out "$OUT/s" --no-progress | tail -n 1
done
python3 - <<'PY'
import torch
from fpdm.sampling.loop import SamplerSettings, load_model, sample
m, d, _ = load_model("/tmp/g/ckpt.pt")
m = m.cuda()
labels = torch.arange(7) % 10
for s in (SamplerSettings(), SamplerSettings(reuse=True, cfg_scale=2.0)):
    batch, rec = sample(m, d, labels, list(range(7)), steps=20, iters=3, settings=s, device="cuda")
    diffs = [(batch[i:i + 1] - sample(m, d, labels[i:i + 1], [i], steps=20, iters=3, settings=s,
                                      device="cuda")[0]).abs().max().item() for i in range(7)]
    print("cuda batch 7 vs 1, max abs diff per seed:", [f"{v:.1e}" for v in diffs], "settings", s.reuse)
PY
