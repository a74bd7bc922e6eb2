"""`fpdm budget-table`: the feasible (iterations, steps) pairs of a budget."""

from __future__ import annotations

import argparse

from fpdm.cli.common import _add_threads, _Formatter
from fpdm.diffusion.samplers import SAMPLERS
from fpdm.models.registry import model_config


def _add_budget_table(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("budget-table", formatter_class=_Formatter, help="feasible (iterations, steps) pairs",
                       description="List the constant-k settings that spend --budget exactly, with FLOPs.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--ckpt", help="read the architecture from a checkpoint (this or --model is required)")
    src.add_argument("--model", help="a model name, e.g. FPDM-XL/2, with --input-size/--in-channels (this or "
                     "--ckpt is required)")
    p.add_argument("--input-size", type=int, default=32, help="with --model: input size")
    p.add_argument("--in-channels", type=int, default=4, help="with --model: input channels")
    p.add_argument("--budget", type=int, required=True, help="blocks per sample (required)")
    p.add_argument("--max-iters", type=int, default=None, help="list k up to this (default: all)")
    p.add_argument("--sampler", choices=SAMPLERS, default="ddpm", help="whose steps: Heun makes 2 model "
                   "evaluations per step (1 on the last), the others 1")
    _add_threads(p)
    p.set_defaults(func=_cmd_budget_table)


def _cmd_budget_table(a: argparse.Namespace) -> int:
    from fpdm.sampling.budget import feasible_pairs, forward_flops

    if a.ckpt:
        from fpdm.weights.loading import load_model

        cfg = load_model(a.ckpt)[0].config
    else:
        cfg = model_config(a.model, input_size=a.input_size, in_channels=a.in_channels)
    pairs = feasible_pairs(cfg, a.budget, a.max_iters, sampler=a.sampler)
    evals = SAMPLERS[a.sampler].evaluations
    if not pairs:
        raise ValueError(f"no constant setting spends budget {a.budget} exactly for this {cfg.arch}; use "
                         f"`fpdm sample --budget {a.budget} --steps S` to spread iterations unevenly")
    print(f"budget {a.budget} blocks per sample ({cfg.arch}, width {cfg.hidden_size}, "
          f"input {cfg.input_size}, sampler {a.sampler})")
    print(f"{'iters/eval':>10} {'steps':>6} {'evals':>6} {'blocks/eval':>11} {'GFLOPs/sample':>14}")
    for k, n in pairs:
        per, e = forward_flops(cfg, k), evals(n)
        kk = k if cfg.arch == "fpdm" else "-"
        print(f"{kk:>10} {n:>6} {e:>6} {a.budget // e:>11} {e * per / 1e9:>14.3f}")
    return 0
