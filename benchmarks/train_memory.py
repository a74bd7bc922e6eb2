"""Training memory per step, DiT-XL/2 vs FPDM-XL/2 (S-JFB at the released N = 10, M = 12), latent 32×32×4.

Memory = training state (parameters + gradients + AdamW moments + EMA, fp32, from the parameter count) +
activations. Activations are measured device-independently with `fpdm.training.memory.MemoryMeter` (every
storage
created during forward + backward, freed when it dies; gradients pre-allocated so only activations,
their gradients and transients are counted — including the recomputation inside gradient checkpoints).
Measured at two batches (default 1 and 4): per-sample = the slope, fixed = the rest (batch-independent
transients such as a weight gradient before it is accumulated); the total at `--batch` is
state + fixed + batch × per-sample. FPDM is reported at m = M = 12 and at the mean m = 6.5 (the average of
m = 6 and 7; activations are linear in m). No-gradient iterations are shown to cost nothing (n = 0, 5, 10).
With `--cuda-peak`, real fp32 AdamW steps at `--cuda-batch` on the GPU also report
torch.cuda.max_memory_allocated, to check the meter's prediction against the allocator.

    python benchmarks/train_memory.py [--size XL/2] [--batch 64] [--device cpu] [--json PATH]
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from common import table, write_json

from fpdm import IterationPlan
from fpdm.models.registry import create_model
from fpdm.training.memory import MemoryMeter, training_state_bytes

MIB = 2**20
GIB = 2**30


def activation_bytes(model: torch.nn.Module, batch: int, device: torch.device, **kw: Any) -> dict[str, int]:
    """Bytes held after forward and peak over forward + backward, of storages created by the step."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 4, 32, 32, generator=g).to(device)
    t = torch.randint(0, 1000, (batch,), generator=g).to(device)
    y = torch.randint(0, 1000, (batch,), generator=g).to(device)
    for p in model.parameters():
        if p.grad is None:
            p.grad = torch.zeros_like(p)  # state, counted separately: backward accumulates in place
    with MemoryMeter() as meter:
        loss = model(x, t, y, **kw).square().mean()
        held = meter.current
        loss.backward()
        peak = meter.peak
    return {"held_after_forward": held, "peak": peak}


def per_sample(model: torch.nn.Module, device: torch.device, batches: tuple[int, int],
               **kw: Any) -> dict[str, float]:
    (b1, b2), n = batches, batches[1] - batches[0]
    one, two = activation_bytes(model, b1, device, **kw), activation_bytes(model, b2, device, **kw)
    slope = (two["peak"] - one["peak"]) / n
    return {"per_sample_peak_mib": slope / MIB, "fixed_peak_mib": (one["peak"] - b1 * slope) / MIB,
            "per_sample_held_mib": (two["held_after_forward"] - one["held_after_forward"]) / n / MIB}


def cuda_peak(name: str, batch: int, **kw: Any) -> float:
    """Peak CUDA memory (GiB) of a real AdamW step + EMA copy, fp32."""
    dev = torch.device("cuda")
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    model = create_model(name, input_size=32, in_channels=4, num_classes=1000).to(dev).train()
    ema = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 4, 32, 32, device=dev)
    t = torch.randint(0, 1000, (batch,), device=dev)
    y = torch.randint(0, 1000, (batch,), device=dev)
    for _ in range(2):
        loss = model(x, t, y, **kw).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    peak = torch.cuda.max_memory_allocated() / GIB
    del model, opt, ema, loss
    torch.cuda.empty_cache()
    return peak


def main() -> None:
    p = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--size", default="XL/2", help="model size/patch")
    p.add_argument("--batch", type=int, default=64, help="per-device batch for the totals (paper: 512/8)")
    p.add_argument("--max-with-grad", type=int, default=12, help="M (released: 12)")
    p.add_argument("--batches", default="1,4", help="the two batches the per-sample slope is measured at")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads on CPU")
    p.add_argument("--device", default="cpu", help="where the meter runs: cpu or cuda")
    p.add_argument("--cuda-peak", action="store_true", help="also measure real steps' peak CUDA memory")
    p.add_argument("--cuda-batch", type=int, default=16, help="batch of the real steps with --cuda-peak")
    p.add_argument("--json", default=None, help="output JSON (default: benchmarks/results/train_memory.json)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    b1, b2 = (int(v) for v in a.batches.split(","))
    if not 1 <= b1 < b2:
        raise SystemExit(f"--batches needs two increasing batch sizes >= 1, got {a.batches!r}")
    dev = torch.device(a.device)
    M = a.max_with_grad
    mean_lo, mean_hi = M // 2, M // 2 + 1  # m ~ U{1..M}: mean (M+1)/2 lies between these (exact for even M)
    rows: list[dict[str, Any]] = []
    for arch in ("DiT", "FPDM"):
        name = f"{arch}-{a.size}"
        torch.manual_seed(0)
        model = create_model(name, input_size=32, in_channels=4, num_classes=1000).to(dev).train()
        state = training_state_bytes(model)["total"]
        for ckpt in (False, True):
            variants: list[tuple[str, dict[str, Any] | tuple[dict, dict]]] = []
            if arch == "DiT":
                variants.append(("-", {}))
            else:
                variants.append((f"m = {M}", {"iters": IterationPlan(0, M)}))
                variants.append((f"mean m = {(M + 1) / 2}", ({"iters": IterationPlan(0, mean_lo)},
                                                             {"iters": IterationPlan(0, mean_hi)})))
            for label, kw in variants:
                if isinstance(kw, tuple):
                    lo, hi = (per_sample(model, dev, (b1, b2), grad_checkpoint=ckpt, **k) for k in kw)
                    r = {k: (lo[k] + hi[k]) / 2 for k in lo}
                else:
                    r = per_sample(model, dev, (b1, b2), grad_checkpoint=ckpt, **kw)
                total = state + (r["fixed_peak_mib"] + a.batch * r["per_sample_peak_mib"]) * MIB
                rows.append({"model": name, "grad iterations": label, "checkpointing": ckpt,
                             "state_gib": state / GIB, **r, f"total_gib_batch{a.batch}": total / GIB})
                print(rows[-1], flush=True)
        if arch == "FPDM":
            no_grad = {n: activation_bytes(model, 1, dev, iters=IterationPlan(n, 1)) for n in (0, 5, 10)}
        del model
    key = f"total_gib_batch{a.batch}"

    def total(model: str, ckpt: bool, label: str = "-") -> float:
        return next(r[key] for r in rows if r["model"] == model and r["checkpointing"] == ckpt
                    and r["grad iterations"] == label)

    dit, fp = f"DiT-{a.size}", f"FPDM-{a.size}"
    full, mean = f"m = {M}", f"mean m = {(M + 1) / 2}"
    ratios = {f"FPDM(m={M}) / DiT, no checkpointing": total(fp, False, full) / total(dit, False),
              "FPDM(mean m) / DiT, no checkpointing": total(fp, False, mean) / total(dit, False),
              f"FPDM(m={M}) no ckpt / DiT ckpt (released)": total(fp, False, full) / total(dit, True),
              f"FPDM(m={M}) ckpt / DiT ckpt": total(fp, True, full) / total(dit, True),
              "FPDM(mean m) ckpt / DiT ckpt": total(fp, True, mean) / total(dit, True)}
    payload: dict[str, Any] = {"size": a.size, "batch": a.batch, "measured_at": [b1, b2], "rows": rows,
                               "ratios": ratios,
                               "no_grad_iterations_bytes": {str(n): v for n, v in no_grad.items()}}
    if a.cuda_peak:
        cuda = {}
        for arch, kw in (("DiT", {}), ("FPDM", {"iters": IterationPlan(0, M)})):
            for ckpt in (False, True):
                cuda[f"{arch}-{a.size} ckpt={ckpt}"] = cuda_peak(f"{arch}-{a.size}", a.cuda_batch,
                                                                 grad_checkpoint=ckpt, **kw)
        payload["cuda_peak_gib"] = {"batch": a.cuda_batch, **cuda}
        # what the meter predicts for the same batch: state + fixed + batch × per-sample (fp32, m = M)
        payload["meter_prediction_gib"] = {
            f"{r['model']} ckpt={r['checkpointing']}": r["state_gib"] + (r["fixed_peak_mib"] + a.cuda_batch
                                                                         * r["per_sample_peak_mib"]) / 1024
            for r in rows if r["grad iterations"] in ("-", full)}
    print(f"\n{a.size}, latent 32×32×4, fp32; activations per sample measured, totals at batch {a.batch}\n")
    print(table(rows, ["model", "grad iterations", "checkpointing", "state_gib", "per_sample_peak_mib",
                       "per_sample_held_mib", "fixed_peak_mib", key]))
    print()
    for k, v in ratios.items():
        print(f"{k}: {v:.3f}")
    print("no-grad iterations (batch 1, m = 1):",
          {n: f"held {v['held_after_forward'] / MIB:.1f} MiB, peak {v['peak'] / MIB:.1f} MiB"
           for n, v in no_grad.items()})
    if "cuda_peak_gib" in payload:
        print("CUDA peak (GiB):", payload["cuda_peak_gib"])
    print(f"\nwrote {write_json('train_memory', payload, a.json)}")


if __name__ == "__main__":
    main()
