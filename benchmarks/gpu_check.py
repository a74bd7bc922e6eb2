"""GPU checks: official parity on CUDA (fp32, TF32 off), and forward / training-step time and peak memory of
DiT-XL/2 vs FPDM-XL/2 at latent 32×32×4 (bf16 autocast; eager and compiled; with and without gradient
checkpointing). Prints one JSON line per check. Run via benchmarks/gpu_check.sh."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

import fpdm
from fpdm.fixed_point.solvers import IterationPlan, draw_plan

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
dev = torch.device("cuda")
REF = load_file(str(Path(__file__).parent.parent / "tests" / "data" / "official_outputs.safetensors"))
SMALL = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=32, num_heads=2, num_classes=10,
             learn_sigma=True, class_dropout_prob=0.0)


def sub(prefix):
    return {k[len(prefix):]: v for k, v in REF.items() if k.startswith(prefix)}


def parity() -> None:
    x, t, y = (REF[k].to(dev) for k in ("input.x", "input.t", "input.y"))
    worst = 0.0
    for pptc in (0, 1):
        cfg = fpdm.ModelConfig(arch="fpdm", depth=4, pre_post_timestep_conditioning=bool(pptc), **SMALL)
        m = fpdm.FPDM(cfg)
        m.load_state_dict(sub("fpdm."), strict=True)
        m = m.to(dev).eval()
        for k in (1, 3, 7):
            with torch.no_grad():
                out = m(x, t, y, iters=k).cpu()
            worst = max(worst, (out - REF[f"out.fpdm.iters{k}.pptc{pptc}"]).abs().max().item())
    m = fpdm.FPDM(fpdm.ModelConfig(arch="fpdm", depth=4, **SMALL))
    m.load_state_dict(sub("fpdm."), strict=True)
    m = m.to(dev).train()
    out = m(x, t, y, iters=IterationPlan(2, 3))
    (out * REF["input.r"].to(dev)).sum().backward()
    g = sub("grad.fpdm.sjfb_n2_m3.")
    grad_rel = max(((p.grad.cpu() - g[n]).norm() / g[n].norm()).item() for n, p in m.named_parameters())
    print(json.dumps({"check": "cuda_parity", "max_abs_out_err": worst, "max_rel_grad_err": grad_rel,
                      "ok": worst <= 1e-5 and grad_rel <= 1e-4}))


def timed(fn, reps=10, warmup=3) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - t0) / reps


def xl_timings(batch: int = 32) -> None:
    """Forward (28 blocks' worth: FPDM 1 + 26 + 1) and training step (S-JFB at the released N = 10, M = 12,
    plans drawn per step from a generator reset for every variant) under bf16 autocast, eager and with
    `compile_blocks`, with and without gradient checkpointing. One JSON line per (model, variant)."""
    x = torch.randn(batch, 4, 32, 32, device=dev)
    t = torch.randint(0, 1000, (batch,), device=dev)
    y = torch.randint(0, 1000, (batch,), device=dev)
    for compiled in (False, True):
        for name in ("DiT-XL/2", "FPDM-XL/2"):
            torch.manual_seed(0)
            m = fpdm.create_model(name, input_size=32, in_channels=4, num_classes=1000).to(dev)
            is_fpdm = name.startswith("FPDM")
            res = {"check": "xl_timings", "model": name, "batch": batch, "dtype": "bf16 autocast",
                   "compiled": compiled, "device": torch.cuda.get_device_name()}
            if compiled:
                t0 = time.perf_counter()
                fpdm.compile_blocks(m)
                with torch.no_grad(), torch.autocast("cuda", torch.bfloat16):
                    m(x, t, y, **({"iters": 26} if is_fpdm else {}))
                torch.cuda.synchronize()
                res["first compiled forward s"] = round(time.perf_counter() - t0, 1)
            opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
            with torch.no_grad(), torch.autocast("cuda", torch.bfloat16):
                m.eval()
                kw = {"iters": 26} if is_fpdm else {}
                res["fwd ms (28 blocks)"] = round(timed(lambda m=m, kw=kw: m(x, t, y, **kw)), 2)
            m.train()
            for ckpt in (False, True):
                gen = torch.Generator()

                def step(m=m, opt=opt, ckpt=ckpt, gen=gen, is_fpdm=is_fpdm):
                    kw = {"iters": draw_plan("sjfb", 10, 12, gen)} if is_fpdm else {}
                    with torch.autocast("cuda", torch.bfloat16):
                        loss = m(x, t, y, grad_checkpoint=ckpt, **kw).float().square().mean()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()

                gen.manual_seed(0)
                step()  # optimizer states exist from here on
                torch.cuda.reset_peak_memory_stats()
                gen.manual_seed(1)
                res[f"train step ms ckpt={ckpt}"] = round(timed(step, reps=12, warmup=0), 2)
                res[f"peak GiB ckpt={ckpt}"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
            print(json.dumps(res), flush=True)
            del m, opt
            torch.cuda.empty_cache()


if __name__ == "__main__":
    for check in (parity, xl_timings):
        try:
            check()
        except Exception as e:  # report and go on: one call on a lent GPU must return every check it can
            print(json.dumps({"check": check.__name__, "error": f"{type(e).__name__}: {e}"}), flush=True)
