"""Calibrated allocation of a block budget (beyond the paper): iterations go where they reduce the error.

The seed's profiles are hand-shaped ramps, and an adaptive tolerance stops a step on its own residual, which
says nothing about how much that step's error hurts the sample. Here the allocation is measured:

1. `step_errors`: along a sampling trajectory with converged solves (calibration seeds, disjoint from any
   evaluation seeds), for each step j and each iteration count k, how far the sampler's next state
   x_{t-1} moves when step j's prediction comes from k iterations instead of the converged fixed point
   (mean squared difference; the same noise, guidance and clipping as sampling, and with reuse the
   warm start the step would get).
2. `allocate_by_table`: the integer counts (>= 1 each, spending the budget exactly) minimising the summed
   errors — an exact dynamic programme, since the tables are small (steps × iterations).
3. `calibrate`: step 1 and 2 for each candidate number of steps; the candidates' errors are not comparable
   (fewer steps also discretise the chain more coarsely), so the step count is chosen by a measured score
   of samples drawn on the calibration seeds (digits-FID for digits models), or given.

The schedule is JSON (`write_schedule`): budget, steps, iterations per step, the sampler settings, the hash
of the weights it was measured on, the calibration seeds, what was measured, and what it cost.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fpdm.diffusion.samplers import SAMPLERS
from fpdm.sampling.budget import BudgetError

__all__ = ["DEFAULT_SEEDS", "SCHEDULE_FORMAT", "allocate_by_table", "calibrate", "candidate_steps",
           "check_schedule", "read_schedule", "step_errors", "weights_hash", "write_schedule"]

SCHEDULE_FORMAT = "fpdm-schedule/1"
# Evaluation seed blocks start at 0, 100000, 200000, ... (reproduce) and the built-in weights are scored on
# 0-99: calibrating on these would tune on the test set.
DEFAULT_SEEDS = range(900_000, 900_200)


def allocate_by_table(errors: np.ndarray, total: int) -> list[int]:
    """Iterations per step minimising sum_j errors[j, k_j - 1] subject to sum_j k_j == total and
    1 <= k_j <= errors.shape[1]. Exact (dynamic programme over steps and iterations spent); among equal
    optima the one that gives more iterations to earlier steps is chosen, so the result is deterministic."""
    e = np.asarray(errors, dtype=np.float64)
    if e.ndim != 2 or e.shape[0] < 1 or e.shape[1] < 1:
        raise ValueError(f"errors must be a (steps, max_iters) table, got shape {e.shape}")
    if not np.isfinite(e).all():
        raise ValueError("errors must be finite")
    steps, kmax = e.shape
    if not steps <= total <= steps * kmax:
        raise BudgetError(f"{total} iterations cannot be spread over {steps} steps with 1..{kmax} each")
    # best[t]: least error of the steps so far having spent t iterations; choice[j, t]: step j's k there
    inf = np.inf
    best = np.full(total + 1, inf)
    best[0] = 0.0
    choice = np.zeros((steps, total + 1), dtype=np.int64)
    for j in range(steps):
        new = np.full(total + 1, inf)
        for k in range(1, min(kmax, total) + 1):  # smaller k first: on ties a later step takes fewer
            cand = np.full(total + 1, inf)
            cand[k:] = best[:total + 1 - k] + e[j, k - 1]
            better = cand < new
            new[better] = cand[better]
            choice[j, better] = k
        best = new
    alloc = []
    t = total
    for j in range(steps - 1, -1, -1):
        k = int(choice[j, t])
        alloc.append(k)
        t -= k
    assert t == 0
    return alloc[::-1]


def weights_hash(model: torch.nn.Module) -> str:
    """A hash of the weights a model samples with (a schedule is only valid for these)."""
    from fpdm.common.digest import digest_state, hash_json

    return f"{hash_json(digest_state(dict(model.state_dict()))['tensors']):016x}"


def candidate_steps(model: Any, budget: int, max_iters: int, n: int = 6, sampler: str = "ddpm") -> list[int]:
    """Step counts that can spend `budget` with 1..max_iters iterations per model evaluation (DiT: the one
    count), at most `n` of them, spread geometrically between the fewest and the most."""
    from fpdm.sampling.budget import plan_budget

    cfg = model.config
    if cfg.arch == "dit":
        return [plan_budget(cfg, budget, sampler=sampler).steps]
    fixed = cfg.pre_depth + cfg.post_depth
    evals = SAMPLERS[sampler].evaluations
    fits = [m for m in range(1, budget // (fixed + 1) + 1)
            if evals(m) * (fixed + 1) <= budget <= evals(m) * (fixed + max_iters)]
    lo, hi = (fits[0], fits[-1]) if fits else (1, 0)
    if hi < 1 or lo > hi:
        raise BudgetError(f"budget {budget} is below one step: a step costs {fixed + 1} blocks or more")
    if hi - lo + 1 <= n:
        return list(range(lo, hi + 1))
    return sorted({int(round(v)) for v in np.geomspace(lo, hi, n)})


@torch.no_grad()
def step_errors(model: Any, diffusion: Any, steps: int, seeds: Sequence[int], labels: Tensor,
                settings: Any = None, max_iters: int = 26, ref_iters: int | None = None,
                device: str = "cpu") -> np.ndarray:
    """(evaluations, max_iters) table: entry [e, k - 1] is the mean squared change of the sampler's state
    when model evaluation e (sampling order; one per step for DDPM/DDIM) comes from k Picard iterations
    instead of `ref_iters` (default 2 × max_iters) — along the trajectory that converged solves take, with
    the sampler's own noise, guidance, clipping and (with `settings.reuse`) warm starts.

    One-evaluation samplers without history (DDPM, DDIM): the change of the next state x_{t-1}. The others
    (Heun, DPM-Solver++, UniPC): the evaluation is put through the solver's own update, and since their
    history carries it into the next step, the change is measured after that next step too (its own
    evaluations held at their converged values): the state two steps on (one on the last step)."""
    from fpdm.sampling.loop import SamplerSettings, _guided, _per_sample_randn, chain_timesteps

    s = settings or SamplerSettings()
    if s.solver != "picard" or s.tol is not None:
        raise ValueError("calibration measures fixed iteration counts of the Picard solver: drop --tol and "
                         "--solver")
    ref_iters = ref_iters or 2 * max_iters
    if ref_iters < max_iters:
        raise ValueError(f"ref_iters ({ref_iters}) must be >= max_iters ({max_iters})")
    spaced = diffusion.respace(chain_timesteps(diffusion, steps, s.spacing))
    cfg, n = model.config, len(seeds)
    generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
    shape = (cfg.in_channels, cfg.input_size, cfg.input_size)
    x = _per_sample_randn(generators, shape).to(device)
    guidance = s.cfg_scale != 1.0
    y = labels.to(device)
    if guidance:
        y = torch.cat([y, torch.full_like(y, cfg.num_classes)])
    channels = 3 if s.cfg_legacy else cfg.in_channels
    rule = SAMPLERS[s.sampler]
    state: dict[str, Any] = {"z": None}

    def outputs(x_cur: Tensor, i: int) -> list[Tensor]:
        """The model's (guided) outputs at x_cur from 1..max_iters iterations, then the reference's."""
        x_in = torch.cat([x_cur, x_cur]) if guidance else x_cur
        t = torch.full((x_in.shape[0],), int(spaced.timesteps[i]), dtype=torch.long, device=device)
        h, c, c_pp = model.encode(x_in, t, y)
        f = model.fixed_point_map(h, c)
        z = state["z"] if (s.reuse and state["z"] is not None) else h
        outs = []
        for k in range(1, ref_iters + 1):
            z = f(z)
            if k <= max_iters:
                outs.append(model.decode(z, c_pp))
        outs.append(model.decode(z, c_pp))  # the reference, last
        state["z"] = z
        return [_guided(o, n, s.cfg_scale, channels) for o in outs] if guidance else outs

    if rule.advance is None:
        errors = np.zeros((spaced.num_timesteps, max_iters))
        for j, i in enumerate(range(spaced.num_timesteps - 1, -1, -1)):
            outs = outputs(x, i)
            noise = _per_sample_randn(generators, shape).to(device) if rule.stochastic(s.eta) else None

            def step(out: Tensor, x: Tensor = x, i: int = i, noise: Tensor | None = noise) -> Tensor:
                return rule.step(spaced, out, x, i, noise, eta=s.eta, clip_denoised=s.clip_denoised)

            ref = step(outs[-1])
            for k, out in enumerate(outs[:-1]):
                errors[j, k] = float(((step(out) - ref) ** 2).mean())
            x = ref
        return errors
    return _advance_errors(rule, spaced, x, outputs, max_iters, s.clip_denoised)


def _advance_errors(rule: Any, spaced: Any, x: Tensor, outputs: Callable[[Tensor, int], list[Tensor]],
                    max_iters: int, clip: bool) -> np.ndarray:
    """`step_errors` for samplers with `advance`: each step is run once with converged evaluations
    (recording every evaluation's candidate outputs), then replayed — pure solver arithmetic — with one
    evaluation's output swapped for its k-iteration one, through this step and the next."""
    n_steps = spaced.num_timesteps
    errors = np.zeros((rule.evaluations(n_steps), max_iters))

    def replay(x0: Tensor, i: int, history: tuple, given: list[Tensor]) -> tuple[Tensor, tuple]:
        feed = iter(given)
        return rule.advance(spaced, lambda x_, i_: next(feed), x0, i, history, clip_denoised=clip)

    history: tuple = ()
    pending = None  # the previous step: (its start, its history, its candidates, first evaluation index)
    e = 0
    for i in range(n_steps - 1, -1, -1):
        cands: list[list[Tensor]] = []

        def evaluate(x_cur: Tensor, i_cur: int, cands: list = cands) -> Tensor:
            cands.append(outputs(x_cur, i_cur))
            return cands[-1][-1]

        start, start_history = x, history
        x, history = rule.advance(spaced, evaluate, x, i, history, clip_denoised=clip)
        refs = [c[-1] for c in cands]
        if pending is not None:  # the previous step's evaluations, seen after this step
            _score(errors, pending, replay, max_iters, (i, refs), x)
        pending = (start, start_history, cands, e, i)
        e += len(cands)
    _score(errors, pending, replay, max_iters, None, x)
    return errors


def _score(errors: np.ndarray, pending: tuple, replay: Callable, max_iters: int,
           after: tuple[int, list[Tensor]] | None, ref_state: Tensor) -> None:
    """Fill the rows of one step's evaluations: the state after that step and, when `after` gives the next
    step (its chain index and converged outputs), after that one too, against `ref_state`."""
    start, history, cands, first, i = pending
    refs = [c[-1] for c in cands]
    for m, cand in enumerate(cands):
        for k in range(max_iters):
            given = refs[:m] + [cand[k]] + refs[m + 1:]
            out, hist = replay(start, i, history, given)
            if after is not None:
                out, _ = replay(out, after[0], hist, after[1])
            errors[first + m, k] = float(((out - ref_state) ** 2).mean())


def calibrate(model: Any, diffusion: Any, budget: int, *, seeds: Sequence[int] = DEFAULT_SEEDS,
              labels: Tensor | None = None, settings: Any = None, steps: int | None = None,
              max_iters: int = 26, ref_iters: int | None = None, measure_samples: int = 64,
              score: Callable[[Tensor, Tensor], float] | None = None, device: str = "cpu",
              checkpoint: str = "", progress: bool = False) -> dict[str, Any]:
    """A schedule for `budget` blocks per sample: for each candidate step count (`steps`, or
    `candidate_steps`), the measured error table of the first `measure_samples` calibration seeds and its
    optimal allocation; among several candidates, the one whose samples on all `seeds` score lowest
    (`score(samples, labels)`, e.g. digits-FID) is chosen. A DiT has one feasible step count and nothing
    to allocate. Returns the schedule (see `write_schedule`)."""
    from fpdm.models.instrument import count_block_calls
    from fpdm.sampling.loop import SamplerSettings, chain_timesteps
    from fpdm.sampling.many import class_labels, sample_seeds

    s = settings or SamplerSettings()
    seeds = [int(v) for v in seeds]
    labels = class_labels(model.config.num_classes, len(seeds)) if labels is None else labels
    cfg = model.config
    t0 = time.perf_counter()
    blocks = 0  # block evaluations, sample by sample (guidance's second half included)
    rows_per_sample = 2 if s.cfg_scale != 1.0 else 1
    candidates = [steps] if steps is not None else \
        candidate_steps(model, budget, max_iters, sampler=s.sampler)
    if len(candidates) > 1 and score is None:
        raise ValueError("choosing the number of steps needs a score of samples (digits-FID for digits "
                         "models); give --steps")
    rows: list[dict[str, Any]] = []
    for n_steps in candidates:
        row: dict[str, Any] = {"steps": n_steps}
        if cfg.arch == "dit":
            from fpdm.sampling.budget import plan_budget

            plan_budget(cfg, budget, steps=n_steps, sampler=s.sampler)  # a BudgetError if it does not fit
            row["iters"] = None
        else:
            evals = SAMPLERS[s.sampler].evaluations(n_steps)
            total = budget - evals * (cfg.pre_depth + cfg.post_depth)
            if not evals <= total <= evals * max_iters:
                what = f"{n_steps} steps" if evals == n_steps else f"{evals} evaluations ({n_steps} steps)"
                raise BudgetError(f"--steps {n_steps} cannot spend budget {budget}: that leaves {total} "
                                  f"iterations for {what} of 1..{max_iters} each")
            m = min(measure_samples, len(seeds))
            # no evaluation can get more than what is left when every other has its one: measure no further
            cap = min(max_iters, total - (evals - 1))
            row["ref_iters"] = ref_iters or 2 * cap  # the reference: twice the most any step can get
            with count_block_calls(model) as counted:
                table = step_errors(model, diffusion, n_steps, seeds[:m], labels[:m], s, cap,
                                    row["ref_iters"], device)
            blocks += counted["blocks"] * m * rows_per_sample  # block calls × the batch they ran on
            row["iters"] = allocate_by_table(table, total)
            row["predicted_error"] = float(sum(table[j, k - 1] for j, k in enumerate(row["iters"])))
            row["errors"] = table.tolist()
        if len(candidates) > 1:
            schedule_here = {"steps": n_steps, "iters": row["iters"], "budget": budget}
            with count_block_calls(model) as counted:
                run = sample_seeds(model, diffusion, seeds, labels=labels, settings=s, device=device,
                                   schedule=schedule_here, batch_size=len(seeds))
            blocks += counted["blocks"] * len(seeds) * rows_per_sample
            row["score"] = float(score(run.samples, labels))
        rows.append(row)
        if progress:
            print(f"calibrate: {n_steps} steps" + (f", score {row['score']:.3f}" if "score" in row else ""),
                  flush=True)
    best = min(rows, key=lambda r: r.get("score", 0.0))
    return {
        "format": SCHEDULE_FORMAT, "budget": budget, "steps": best["steps"], "iters": best["iters"],
        "arch": cfg.arch, "settings": asdict(replace(s)), "checkpoint": checkpoint,
        "weights_hash": weights_hash(model), "calibration_seeds": [seeds[0], seeds[-1], len(seeds)],
        "max_iters": max_iters, "ref_iters": ref_iters or "twice the most one step can get",
        "measure_samples": min(measure_samples, len(seeds)), "candidates": rows,
        "timesteps": sorted(chain_timesteps(diffusion, best["steps"], s.spacing), reverse=True),
        "cost": {"seconds": round(time.perf_counter() - t0, 3), "blocks": blocks,
                 "as_many_blocks_as_sampling_images": round(blocks / (budget * rows_per_sample), 1)},
    }


# the sampler settings a schedule was measured with and must be sampled with
_MATCHED = ("sampler", "eta", "cfg_scale", "cfg_legacy", "reuse", "clip_denoised", "spacing")
_LATER = {"spacing": "uniform"}  # settings older schedules predate: theirs is the default


def check_schedule(schedule: dict[str, Any], model: Any, settings: Any, budget: int | None = None,
                   source: str = "the schedule") -> None:
    """Refuse a schedule made for other weights, another budget or other sampler settings (a ValueError
    naming what differs), or one whose steps and iterations do not spend its budget."""
    if schedule.get("format") != SCHEDULE_FORMAT:
        raise ValueError(f"{source} is not an fpdm schedule (expected format {SCHEDULE_FORMAT!r})")
    if schedule["weights_hash"] != weights_hash(model):
        made_for = schedule.get("checkpoint") or "another checkpoint"
        raise ValueError(f"{source} was calibrated for other weights ({made_for}); calibrate this checkpoint "
                         "with `fpdm calibrate`")
    if budget is not None and budget != schedule["budget"]:
        raise ValueError(f"--budget {budget} but {source} spends {schedule['budget']}; calibrate for "
                         f"{budget} or drop --budget")
    mine = asdict(settings)
    for key in _MATCHED:
        theirs = schedule["settings"].get(key, _LATER.get(key))
        if mine[key] != theirs:
            raise ValueError(f"{source} was calibrated with {key}={theirs!r}, this run "
                             f"has {mine[key]!r}: calibrate with the settings you sample with")
    if settings.tol is not None or settings.solver != "picard":
        raise ValueError("a calibrated schedule fixes every step's iterations: drop --tol and --solver")
    cfg = model.config
    iters = schedule["iters"]
    evals = SAMPLERS[settings.sampler].evaluations(schedule["steps"])
    spent = evals * cfg.depth if cfg.arch == "dit" else evals * (cfg.pre_depth + cfg.post_depth) + sum(iters)
    if spent != schedule["budget"] or (iters is not None and len(iters) != evals):
        raise ValueError(f"{source} is inconsistent: its steps and iterations spend {spent} blocks, not its "
                         f"budget {schedule['budget']}")


def write_schedule(path: str | Path, schedule: dict[str, Any], plot: bool = True) -> list[Path]:
    """The schedule as JSON at `path` (with a digest) and, with `plot`, a PNG beside it: iterations per
    step against t, over the measured error curves. Returns the files written."""
    from fpdm.common.checkpoint import atomic_write
    from fpdm.common.digest import with_json_digest

    path = Path(path)
    text = json.dumps(with_json_digest(schedule), indent=1) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))
    written = [path]
    if plot and schedule["iters"] is not None:
        from fpdm.common.plots import plot_schedule

        written.append(path.with_suffix(".png"))
        plot_schedule(schedule, written[-1])
    return written


def read_schedule(path: str | Path) -> dict[str, Any]:
    """A schedule written by `write_schedule` (its digest checked)."""
    from fpdm.common.digest import read_json

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"--schedule {p} not found (write one with `fpdm calibrate`)")
    return read_json(p)


def calibrate_to_file(model: Any, diffusion: Any, budget: int, *, ckpt: str, out: str | None = None,
                      settings: Any = None, seeds: Sequence[int] = DEFAULT_SEEDS, steps: int | None = None,
                      max_iters: int = 26, ref_iters: int | None = None, measure_samples: int = 64,
                      device: str = "cpu", progress: bool = False) -> tuple[dict[str, Any], list[Path]]:
    """`fpdm calibrate`: check the options before any work, calibrate (step counts scored by digits-FID for
    a digits model, else `steps` is needed) and write the schedule to `out` (default:
    <ckpt dir>/schedules/B<budget>-<sampler>[-reuse][-cfg<scale>].json) with its plot. Returns the schedule
    and the files written."""
    from fpdm.common.checkpoint import writable_folder
    from fpdm.evaluation.evaluate import digits_eval
    from fpdm.sampling.loop import SamplerSettings
    from fpdm.sampling.many import check_settings

    for flag, value in (("--max-iters", max_iters), ("--measure-samples", measure_samples)):
        if value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    s = settings or SamplerSettings()
    model.to(device)
    check_settings(model, s, budget=budget, steps=steps, profile="constant", label=None, n_steps=steps or 1,
                   per_step=None)
    cfg = model.config
    default = Path(ckpt).parent / "schedules" / "-".join(
        v for v in (f"B{budget}", s.sampler, s.spacing != "uniform" and s.spacing, s.reuse and "reuse",
                    s.cfg_scale != 1 and f"cfg{s.cfg_scale}") if v)
    path = Path(out) if out else default.with_suffix(".json")
    writable_folder(path.parent, f"--out {path}")

    def score(x: Tensor, labels: Tensor) -> float:
        return digits_eval(x, labels, cfg)["digits_fid"]

    digits = (cfg.input_size, cfg.in_channels) == (8, 1)
    schedule = calibrate(model, diffusion, budget, seeds=seeds, settings=s, steps=steps, max_iters=max_iters,
                         ref_iters=ref_iters, measure_samples=measure_samples,
                         score=score if digits else None, device=device, checkpoint=str(ckpt),
                         progress=progress)
    return schedule, write_schedule(path, schedule)
