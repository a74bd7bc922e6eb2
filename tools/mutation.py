"""Curated mutation testing for fpdm: does the test suite notice realistic one-line bugs in the core modules?

Each mutant in `MUTANTS` is an exact text substitution that models a plausible bug. The runner copies the
working tree into a temporary directory once per worker, applies one mutant at a time there (never to the
real `src/`, which a running experiment may be importing), runs the mutant's scoped tests with
`PYTHONPATH=<copy>/src`, restores the file, and writes a Markdown report. A failing test run kills the
mutant; a passing one means the suite would not have noticed that bug.

    .venv/bin/python tools/mutation.py --list
    .venv/bin/python tools/mutation.py --only ema --report /tmp/ema.md
    .venv/bin/python tools/mutation.py --jobs 2            # everything; report in docs/mutation.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = "src/fpdm"


@dataclass(frozen=True)
class Mutant:
    module: str  # path relative to the repository root
    old: str  # must occur exactly once in the module, so a stale entry fails loudly instead of no-op'ing
    new: str
    description: str
    tests: tuple[str, ...]  # pytest arguments: test files or node ids that exercise this code
    equivalent: str | None = None  # why this mutant cannot change behaviour (excluded from the kill rate)

    @property
    def name(self) -> str:
        return Path(self.module).name


def M(module: str, old: str, new: str, description: str, tests: Sequence[str],
      equivalent: str | None = None) -> Mutant:
    return Mutant(f"{PKG}/{module}", old, new, description, tuple(tests), equivalent)


FP, FPDM_T, PARITY = "tests/test_fixed_point.py", "tests/test_fpdm.py", "tests/test_official_parity.py"
BLOCKS, TRAIN, EMA = "tests/test_blocks.py", "tests/test_train.py", "tests/test_ema.py"
SAMPLE = "tests/test_sample.py"
ODE = "tests/test_ode_samplers.py"
BUDGET, DIFF, SCHED = "tests/test_budget.py", "tests/test_diffusion.py", "tests/test_schedules.py"
METRICS, CKPT, MEMORY = "tests/test_metrics.py", "tests/test_checkpoint.py", "tests/test_memory.py"
PR_BY_HAND = "tests/test_inception.py::test_precision_recall_by_hand"
DIGEST, LATENTS, CALIB = "tests/test_digest.py", "tests/test_latents.py", "tests/test_calibrate.py"
KEEP = "tests/test_train.py::test_keep_last_rotates_and_a_damaged_checkpoint_falls_back_only_when_asked"
SERVE = "tests/test_serve.py"
LONGER = "tests/test_reproduce_longer.py"

FASH = "tests/test_reproduce_fashion.py::test_"  # the Fashion study's tests, by name
MUTANTS: list[Mutant] = [
    # ------------------------------------------------------------------------------------- fixed_point.py
    M("fixed_point/solvers.py",
      "        with torch.no_grad():\n            z = iterate(f, z, plan.no_grad)",
      "        z = iterate(f, z, plan.no_grad).detach()",
      "no-grad iterations run with autograd on, then detached (same values, a graph built and dropped)",
      [FP, MEMORY]),
    M("fixed_point/solvers.py", "    return out\n", "    return f(x) if max_evals > 1 else out\n",
      "anderson makes one extra, unrecorded evaluation of f at the end (hidden compute)", [FP]),
    M("fixed_point/solvers.py", "torch.randint(low, high + 1, (1,)", "torch.randint(low, high, (1,)",
      "plan draws exclude the upper bound (randint's exclusive high)", [FP]),
    M("fixed_point/solvers.py",
      "return IterationPlan(0, n + m, detach_init=False)", "return IterationPlan(0, n + m)",
      "backprop mode detaches z0, so no gradient reaches the pre blocks through the initial point", [FP]),
    M("fixed_point/solvers.py", "        return IterationPlan(n, 1)", "        return IterationPlan(n, m)",
      "jfb uses the random m with-grad iterations (S-JFB) instead of exactly one", [FP]),
    M("fixed_point/solvers.py", "z = z0.detach() if plan.detach_init else z0", "z = z0",
      "the initial point is never detached: JFB gradient leaks into z0", [FP]),
    M("fixed_point/solvers.py", "return diff / fz.flatten(1).norm(dim=1).clamp_min(1e-12)",
      "return diff / z.flatten(1).norm(dim=1).clamp_min(1e-12)",
      "relative residual normalised by ||z|| instead of ||f(z)||", [FP]),
    M("fixed_point/solvers.py", "        if len(xs) > window:", "        if len(xs) >= window:",
      "anderson keeps window - 1 past iterates (off-by-one history)", [FP]),
    M("fixed_point/solvers.py",
      "alpha = (w / w.sum(dim=1, keepdim=True)).to(X.dtype)", "alpha = w.to(X.dtype)",
      "anderson mixing weights not normalised to sum to one", [FP]),
    M("evaluation/metrics.py", "ref_root = _psd_sqrt(ref_sigma)", "ref_root = ref_sigma",
      "bootstrap FID takes the reference covariance for its square root", ["tests/test_metrics.py"]),
    # ------------------------------------------------------------------------------------------- fpdm.py
    M("models/fpdm.py", "w_u = fc1.weight[:, d:]", "w_u = fc1.weight[:, :d]",
      "injection multiplied by the z-half of fc1 (wrong slice of the concatenated weight)", [FPDM_T, PARITY]),
    M("models/fpdm.py", "w_z = fc1.weight[:, :d]", "w_z = fc1.weight[:, d:]",
      "z multiplied by the injection half of fc1 (concat order [u ; z] vs [z ; u])", [FPDM_T, PARITY]),
    M("models/fpdm.py", "c_pp = c if self.config.pre_post_timestep_conditioning else y_emb",
      "c_pp = y_emb if self.config.pre_post_timestep_conditioning else c",
      "pre/post-block conditioning flag inverted", [FPDM_T, PARITY]),
    M("models/fpdm.py", "f = checkpointed(self.fixed_point_map(h, c), grad_checkpoint)",
      "f = checkpointed(self.fixed_point_map(h, c_pp), grad_checkpoint)",
      "fixed-point block conditioned on c_pp (label only) instead of t + y", [FPDM_T, PARITY]),
    M("models/fpdm.py", "return max(1, self.config.depth - self.config.pre_depth - self.config.post_depth)",
      "return max(1, self.config.depth - self.config.pre_depth)",
      "default iterations forget the post blocks (budget not equal to the DiT's)", [FPDM_T]),
    M("models/fpdm.py", "z = solve(f, h if z_init is None else z_init,", "z = solve(f, h,",
      "warm start ignored: z_init silently dropped", [FPDM_T, PARITY]),
    M("models/blocks.py", 'return torch.ops.aten.gelu_backward(grad, x, approximate="tanh")',
      'return torch.ops.aten.gelu_backward(grad, x, approximate="none")',
      "tanh-GELU's gradient under autograd is the erf-GELU's", ["tests/test_blocks.py"]),
    M("models/fpdm.py", "return fc2(gelu_tanh(a))", "return fc2(F.gelu(a))",
      "exact GELU in the fixed-point projection where the released model uses the tanh approximation",
      [FPDM_T, PARITY]),
    # -------------------------------------------------------------------------------------------- dit.py
    M("models/dit.py", "        c = t_emb + y_emb  # (N, D)", "        c = y_emb  # (N, D)",
      "DiT blocks lose the timestep conditioning", [PARITY, BLOCKS]),
    M("models/dit.py", "        for block in self.blocks:", "        for block in self.blocks[:-1]:",
      "last DiT block skipped (off-by-one over the stack)", [PARITY, BLOCKS]),
    M("models/dit.py", "h = checkpointed(block, grad_checkpoint)(h, c)",
      "h = checkpointed(block, not grad_checkpoint)(h, c)",
      "activation-checkpointing flag inverted (same values, memory the other way round)", [BLOCKS, PARITY]),
    # ----------------------------------------------------------------------------------------- blocks.py
    M("models/blocks.py", "return torch.addcmul(shift.unsqueeze(1), x, 1 + scale.unsqueeze(1))",
      "return torch.addcmul(shift.unsqueeze(1), x, scale.unsqueeze(1))",
      "adaLN modulate without the 1 + scale (zero-init blocks would zero their input)", [PARITY, BLOCKS]),
    M("models/blocks.py", "F.scaled_dot_product_attention(q, k, v)",
      "F.scaled_dot_product_attention(k, q, v)",
      "queries and keys swapped in attention (transposed score matrix)", [BLOCKS, PARITY]),
    M("models/blocks.py", "shift, scale = batch_invariant(self.adaLN_modulation, c).chunk(2, dim=1)",
      "scale, shift = batch_invariant(self.adaLN_modulation, c).chunk(2, dim=1)",
      "final layer's shift and scale chunks swapped", [PARITY, BLOCKS]),
    M("models/blocks.py", "        if not torch.is_grad_enabled():\n            return fn(*args)",
      "        pass",
      "checkpoint() wraps calls even without autograd (sampling pays for the wrapper)", [BLOCKS]),
    M("models/blocks.py", "MIN_ROWS = 16", "MIN_ROWS = 1",
      "batch-invariance padding disabled: per-sample linears run at the batch's own row count",
      ["tests/test_blocks.py"]),
    M("models/blocks.py", "self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))",
      "self.mlp(modulate(self.norm1(x), shift_mlp, scale_mlp))",
      "MLP branch normalised by norm1 instead of norm2", [PARITY, BLOCKS],
      equivalent="norm1 and norm2 are identical parameter-free LayerNorms (no affine, same eps)"),
    M("models/blocks.py", "return g.mul_(x).sigmoid_()", "return g.mul_(x).tanh_()",
      "fast GELU gate uses tanh(2u) where the sigmoid form needs sigmoid(2u)", [BLOCKS, PARITY]),
    M("models/blocks.py", "return tuple(v[i:i + step] for v in a) if isinstance(a, tuple) else a[i:i + step]",
      "return tuple(v[:step] for v in a) if isinstance(a, tuple) else a[i:i + step]",
      "every chunk of samples gets the first chunk's modulation", [BLOCKS, PARITY]),
    # ------------------------------------------------------------------------------------------ train.py
    M("training/loop.py", 'kw["iters"] = plan', "pass",
      "the drawn S-JFB plan is never passed to the model (it runs its default iteration count)", [TRAIN]),
    M("training/loop.py",
      "return cfg.lr * (step + 1) / cfg.warmup_steps", "return cfg.lr * step / cfg.warmup_steps",
      "warm-up starts at lr 0 (off-by-one: the first step does not train)", [TRAIN]),
    M("training/ema.py", "return min(cfg.ema_decay, (1 + step) / (10 + step))",
      "return max(cfg.ema_decay, (1 + step) / (10 + step))",
      "EMA warm-up uses max instead of min (no warm-up at all)", [TRAIN]),
    M("training/batches.py",
      "                self.epoch_start_state = generator_state(self.generator)\n                self.perm",
      "                self.perm",
      "batch stream does not record the new epoch's generator state (resume after a wrap replays an epoch)",
      [TRAIN]),
    M("training/loop.py", "opt.zero_grad(set_to_none=True)", "pass",
      "gradients never cleared between steps (they accumulate)", [TRAIN]),
    M("training/run_folder.py",
      'if json.loads(line).get("step", 0) <= step:', 'if json.loads(line).get("step", 0) < step:',
      "resume truncates the log one record too many (the checkpoint's own step is dropped)", [TRAIN]),
    M("training/loop.py", "update_ema(ema, model, ema_decay_at(step, train_cfg))",
      "update_ema(ema, model, ema_decay_at(step + 1, train_cfg))",
      "EMA decay schedule evaluated one step late", [TRAIN]),
    # -------------------------------------------------------------------------------------------- ema.py
    M("training/ema.py", "torch._foreach_lerp_(ema_params, params, 1.0 - decay)",
      "torch._foreach_lerp_(ema_params, params, decay)",
      "lerp weight is decay instead of 1 - decay (the EMA follows the model almost exactly)", [EMA, TRAIN]),
    M("training/ema.py", "ema = copy.deepcopy(model).eval()", "ema = copy.deepcopy(model)",
      "EMA copy left in train mode (dropout active when sampling from it)", [EMA, TRAIN]),
    M("training/ema.py", "ema.requires_grad_(False)", "ema.requires_grad_(True)",
      "EMA parameters left trainable", [EMA, TRAIN]),
    M("training/ema.py", "@torch.no_grad()\ndef update_ema", "def update_ema",
      "update_ema without torch.no_grad()", [EMA, TRAIN],
      equivalent="the sources are detached and make_ema froze the targets, so the in-place lerp records "
                 "no graph either way"),
    # ------------------------------------------------------------------------------------- embeddings.py
    M("models/embeddings.py", "permute(0, 2, 4, 1, 3, 5)  # (N, g, g, C, p, p)",
      "permute(0, 4, 2, 1, 3, 5)  # (N, g, g, C, p, p)",
      "patch tokens in column-major order (grid axes swapped in the matmul patch embedding)",
      ["tests/test_embeddings.py", PARITY]),
    M("models/embeddings.py", "weight = self.proj.weight.reshape(self.proj.out_channels, -1)",
      "weight = self.proj.weight.transpose(2, 3).reshape(self.proj.out_channels, -1)",
      "pixels inside a patch transposed against the convolution weight's (c, i, j) order",
      ["tests/test_embeddings.py", PARITY]),
    # ----------------------------------------------------------------------------------------- sample.py
    M("sampling/loop.py", "range(n_steps - 1, -1, -1)", "range(n_steps - 1, 0, -1)",
      "sampling loop stops before the final (i = 0) step", [SAMPLE]),
    M("sampling/loop.py", 'state["unspent"] += limits - spent', 'state["unspent"] = limits - spent',
      "unspent budget carried only one step (accumulated carry forgotten)", [SAMPLE]),
    M("sampling/loop.py", "    if remaining <= 1:  # the last step", "    if remaining < 1:  # the last step",
      "the last step may also stop early, so the total budget is not spent exactly", [SAMPLE]),
    M("sampling/loop.py", 'z_init=state["z"] if s.reuse else None', 'z_init=state["z"]',
      "warm start always on, even without --reuse", [SAMPLE]),
    M("sampling/loop.py", "return torch.cat([mixed, cond[:, channels:]], dim=1)",
      "return torch.cat([mixed, uncond[:, channels:]], dim=1)",
      "unguided channels (learned variance) taken from the unconditional half", [SAMPLE]),
    M("sampling/loop.py", "(len(r) >= 3 and r[-1] > bound)", "(len(r) > 3 and r[-1] > bound)",
      "divergence judged only after 4 evaluations (off-by-one)", [SAMPLE]),
    M("diffusion/samplers/ddim.py", "stochastic=lambda eta: eta > 0,", "stochastic=lambda eta: False,",
      "DDIM with eta > 0 gets no noise", [SAMPLE]),
    M("diffusion/samplers/dpmpp.py", "(alpha_t * phi * 0.5 / r) * (d - d_prev)",
      "(alpha_t * phi / r) * (d - d_prev)",
      "DPM-Solver++(2M) without the midpoint's 1/2 on the second-order term", [ODE]),
    M("diffusion/samplers/dpmpp.py", "    return x_next, (d, lam_s)", "    return x_next, ()",
      "DPM-Solver++(2M) forgets its history (first order throughout)", [ODE]),
    M("diffusion/samplers/edm.py", "    if heun and sigma_next > 0.0:",
      "    if heun and sigma_next > 0.0 and i > 1:",
      "Heun skips its corrector on the step into t = 0", [ODE]),
    M("diffusion/samplers/edm.py", "xs_next = xs + (sigma_next - sigma) * 0.5 * (slope + slope_next)",
      "xs_next = xs_next + (sigma_next - sigma) * 0.5 * (slope + slope_next)",
      "Heun's corrector applied from the Euler point instead of the step's start", [ODE]),
    M("diffusion/samplers/unipc.py", "    if history:  # correct the step",
      "    if False:  # correct the step",
      "UniPC without its corrector (UniP alone)", [ODE]),
    M("diffusion/samplers/unipc.py", "    rhos = [0.5] if order == 1 else np.linalg.solve(rows, b).tolist()",
      "    rhos = [0.5] * order",
      "UniC's weights not solved from the order conditions", [ODE]),
    M("diffusion/samplers/unipc.py", "    h_phi_1 = b_h = math.expm1(hh)",
      "    h_phi_1, b_h = math.expm1(hh), hh",
      "UniPC with B(h) = h (bh1) where bh2 is meant", [ODE]),
    M("diffusion/schedules.py", "        targets = np.log(np.linspace(hi, lo, steps) ** KARRAS_RHO)",
      "        targets = np.log(np.linspace(hi, lo, steps))",
      "the Karras spacing without its ρ (uniform in σ^(1/ρ) exponentiated away)", [ODE]),
    M("diffusion/schedules.py", "        if kept and t >= kept[-1]:\n            t = kept[-1] - 1",
      "        if False:\n            t = kept[-1] - 1",
      "snapped spacings may repeat a timestep", [ODE]),
    M("sampling/loop.py", "    spaced = diffusion.respace(chain_timesteps(diffusion, steps, s.spacing))",
      "    spaced = diffusion.respace(space_timesteps(diffusion.num_timesteps, steps))",
      "--spacing ignored by the sampler (uniform always)", ["tests/test_sample_many.py"]),
    M("sampling/calibrate.py", "    _score(errors, pending, replay, max_iters, None, x)\n", "\n",
      "the last step's evaluations are never scored in a solver's error table", [CALIB]),
    M("sampling/calibrate.py", "            return cands[-1][-1]", "            return cands[-1][0]",
      "a solver's calibration trajectory runs on 1-iteration predictions, not converged ones", [CALIB]),
    M("studies/selection.py", "    return order[:top]", "    return order[::-1][:top]",
      "the solvers study picks its worst settings on the selection seeds",
      ["tests/test_reproduce_solvers.py"]),
    M("studies/fashion_cells.py", "if budget % (2 + k) == 0 and rule.steps_for(budget // (2 + k))]",
      "if budget % (1 + k) == 0 and rule.steps_for(budget // (1 + k))]",
      "the Fashion study's FPDM cells count k + 1 blocks per evaluation (budgets overspent)",
      [FASH + "full_scale_cells_spend_their_budget_exactly_and_select_on_disjoint_seeds"]),
    M("studies/fashion_cells.py", "for k, v in want.items() if recipe.get(k) != v}",
      "for k, v in want.items() if recipe.get(k) != v and k[:3] != 'fp_'}",
      "a built-in trained with another S-JFB range stands in for a study model",
      [FASH + "the_full_scale_samples_the_builtins_it_was_trained_as_and_refuses_a_mismatched_recipe"]),
    M("studies/fashion_cells.py", "        units = n / 2 + 3 * (2 + grad)",
      "        units = n + 3 * (2 + grad)",
      "the plan counts every no-gradient iteration at its maximum N",
      [FASH + "training_cost_estimates_order_the_ablations_by_their_gradient_iterations"]),
    M("studies/fashion.py", 'return (win if m + 2 * se < 0 else lose if m - 2 * se > 0 else "tie")',
      'return (win if m < 0 else lose if m > 0 else "tie")',
      "a Fashion verdict ignores the paired s.e. (a tie counts as a win)",
      [FASH + "verdicts_follow_the_paired_differences_of_a_synthetic_world"]),
    M("studies/fashion_cells.py", "            evals = int(budget * min(ratio, 1.0) + 1e-9) // (2 + k)",
      "            evals = int(budget * ratio + 1e-9) // (2 + k)",
      "the equal-FLOPs FPDM cell is not held to DiT-28's cost",
      [FASH + "verdicts_follow_the_paired_differences_of_a_synthetic_world"]),
    M("studies/engine.py", '        if self.data != "digits":  # the digits studies\' keys stay as they were',
      '        if True:',
      "naming the dataset re-keys every digits training (the studies' caches would be retrained)",
      ["tests/test_reproduce_solvers.py"]),
    M("studies/engine.py", "            if \"step\" in rec:\n                last = rec",
      "            if \"step\" in rec and last is None:\n                last = rec",
      "a study's progress line reports a training's first logged step, not its latest",
      ["tests/test_studies_engine.py"]),
    M("studies/engine.py", '    return float(sum(r["last"] - r["start"] for r in records))',
      '    return float(records[-1]["last"] - records[-1]["start"]) if records else 0.0',
      "a resumed study reports only its last run's wall time", ["tests/test_studies_engine.py"]),
    M("studies/fashion.py", "train_cost_s(s, n) * (1 - d / n) for", "train_cost_s(s, n) for",
      "a resumed Fashion study plans its part-trained models at their full cost",
      [FASH + "a_part_trained_model_costs_the_plan_only_its_remaining_steps"]),
    M("cli/app.py", "        os._exit(code)\n", "",
      "a torchrun worker runs C++ destructors at exit (a finished gloo worker aborts now and then)",
      ["tests/test_distributed.py::test_a_torchrun_worker_exits_without_running_cpp_destructors"]),
    M("studies/fashion.py", "            oracle = min(cands, key=lambda c: mean_fid(cands[c]))",
      "            oracle = top[0]",
      "the Fashion report's 'picked on the evaluation seeds' column repeats the selection pick",
      [FASH + "the_report_says_how_much_picking_on_the_evaluation_seeds_would_have_flattered"]),
    M("studies/fashion_cells.py", "if budget in scale.budgets[-2:] and budget // (2 + PROFILE_K) >= 2:",
      "if budget in scale.budgets[:1] and budget // (2 + PROFILE_K) >= 2:",
      "the full-scale Fashion study runs Table 5's profiles at 56 blocks, not 280 and 560 (no verdict)",
      [FASH + "the_full_scales_later_stages_fit_the_cpu_budget_on_a_synthetic_world"]),
    M("studies/publish.py", '    if data.get("scale") != "full" and not allow_smoke:',
      '    if data.get("scale") not in ("full", "smoke") and not allow_smoke:',
      "a smoke-scale Fashion report (noise) can be published onto the front page",
      [FASH + "publishing_refuses_before_writing_anything"]),
    M("studies/publish.py", '        HEADLINE_HEADER, *(headline_row(e) for e in head["per_budget"]), "",',
      '        HEADLINE_HEADER, *(headline_row(e) for e in head["per_budget"][:1]), "",',
      "the front page shows the Fashion headline at its first budget only",
      [FASH + "publishing_copies_the_report_and_writes_the_front_page_from_results_json"]),
    M("studies/fashion.py", '["per_budget"]),\n             "", "## Verdicts"',
      '["per_budget"][1:]),\n             "", "## Verdicts"',
      "the Fashion report's headline-at-a-glance table drops a budget",
      [FASH + "the_full_scales_later_stages_fit_the_cpu_budget_on_a_synthetic_world"]),
    M("studies/engine.py", "    first = spec.seed_block * 100_000\n",
      "    first = spec.seed_block * 100_000 + 1\n",
      "Fig. 5's columns show other seeds than the cells they stand for",
      [FASH + "fig5_shows_dit28_beside_each_fpdm_at_several_k_on_the_cells_own_first_seeds"]),
    M("studies/fashion_cells.py", "            out[name] = [dit, *cols]", "            out[name] = cols",
      "Fig. 5 shows the FPDM's k without DiT-28 beside them",
      [FASH + "fig5_shows_dit28_beside_each_fpdm_at_several_k_on_the_cells_own_first_seeds"]),
    M("cli/reproduce.py", "    if a.workers < 1:", "    if a.workers < 0:",
      "fpdm reproduce takes --workers 0 (and runs on one process) instead of refusing it",
      ["tests/test_errors.py::test_bad_input_gets_one_named_line[no worker processes]"]),
    M("cli/reproduce.py", "        if p[\"trainings\"]:\n", "        if not p[\"trainings\"]:\n",
      "fpdm reproduce --plan does not list the trainings left",
      [FASH + "plan_prints_the_cost_and_runs_nothing"]),
    M("studies/fashion.py", "todo = [c for c in cells if not _cached(root, c, at)]",
      "todo = list(cells)",
      "a resumed Fashion study's plan costs its evaluation cells again though they are cached",
      [FASH + "the_plan_counts_the_later_cells_once_the_selection_fixes_them"]),
    M("studies/fashion.py", "        tables[name] = [header, *body]", "        tables[name] = [header]",
      "the Fashion report prints tables (per sampler, selection picks and effect) whose numbers results.json "
      "lacks", [FASH + "every_number_of_the_report_is_in_results_json"]),
    M("studies/publish.py", "    readme.write_text(text)\n    return", "    return",
      "publishing copies the report but leaves the README's front page as it was",
      [FASH + "publishing_copies_the_report_and_writes_the_front_page_from_results_json"]),
    M("studies/fashion_cells.py", "while evals > 0 and SAMPLERS[sampler].steps_for(evals) is None:",
      "while False:",
      "the Fashion study's FLOP- and wall-matched cells ask a sampler for evaluations it cannot spend "
      "(Heun: only 2n - 1), failing hours into the run",
      [FASH + "every_full_scale_cell_after_the_pilot_plans_and_samples_at_its_exact_budget"]),
    M("weights/build.py", '            total += rec["ms_per_step"] * (rec["step"] - last) / 1000',
      '            total += rec["ms_per_step"] * 50 / 1000',
      "a resumed run's shipped training time counts every logged step as 50 steps",
      ["tests/test_builtin.py::test_a_resumed_runs_training_time_is_summed_over_its_log"]),
    M("weights/build.py", 'summary.get("steps_this_run", summary.get("step")) == summary.get("step") and',
      "True and",
      "a resumed run ships with its last invocation's time as its training time",
      ["tests/test_builtin.py::test_a_resumed_runs_training_time_is_summed_over_its_log"]),
    M("studies/publish.py", '    if data.get("scale") == "full" and unexplained:',
      '    if data.get("scale") == "full" and unexplained == ["all"]:',
      "a full Fashion report is published with the side-by-side's 'why' left empty",
      [FASH + "publishing_refuses_before_writing_anything"]),
    M("evaluation/metrics.py", "_coverage(f, r, real_radii.to(r))", "_coverage(f, r, _knn_radii(r, k))",
      "precision ignores the reference radii it was given", ["tests/test_metrics.py"]),
    M("studies/engine.py", '        if d["spacing"] == "uniform":\n            d.pop("spacing")', "",
      "a uniform-spacing cell's cache key changes (the studies' caches would all be recomputed)",
      ["tests/test_reproduce_solvers.py"]),
    M("sampling/budget.py", "    return SAMPLERS[sampler].evaluations(steps)", "    return steps",
      "budgets count steps, not evaluations (Heun overspends)", ["tests/test_sample_many.py"]),
    # ----------------------------------------------------------------------------------------- budget.py
    M("sampling/budget.py", "order = np.lexsort((-weights, -(target - alloc)))",
      'order = np.argsort(-(target - alloc), kind="stable")',
      "largest-remainder tie-break by weight dropped (ties go to the earlier step)", [BUDGET]),
    M("sampling/budget.py",
      "picks[((np.arange(count) + 0.5) * n / count)", "picks[(np.arange(count) * n / count)",
      "constant profile's remainder not centred (piled toward the first steps)", [BUDGET]),
    M("sampling/budget.py",
      "alloc = np.floor(target).astype(np.int64)", "alloc = np.round(target).astype(np.int64)",
      "ramp rounded instead of floored before handing out the remainder", [BUDGET]),
    M("sampling/budget.py", 'if profile in ("decreasing", "released"):', 'if profile == "decreasing":',
      "released profile not reversed (most iterations last instead of first)", [BUDGET]),
    M("sampling/budget.py", "else cfg.pre_depth + iters + cfg.post_depth", "else cfg.pre_depth + iters",
      "FPDM step cost forgets the post blocks", [BUDGET]),
    M("sampling/budget.py", "    total = budget - e * fixed", "    total = budget - fixed",
      "fixed pre/post cost subtracted once instead of per step", [BUDGET]),
    M("sampling/budget.py", "for k in range(1, top + 1)\n             if budget",
      "for k in range(1, top)\n             if budget",
      "feasible pairs miss the largest k (off-by-one range)", [BUDGET]),
    M("sampling/budget.py", "per_iter = block_tokens + 8 * t * d * d", "per_iter = block_tokens",
      "FLOPs per iteration omit the injection MLP's z-half", [BUDGET]),
    # -------------------------------------------------------------------------------------- diffusion.py
    M("diffusion/gaussian.py",
      "self.posterior_mean_coef2 = (1.0 - abar_prev) * np.sqrt(alphas) / (1.0 - abar)",
      "self.posterior_mean_coef2 = (1.0 - abar_prev) * np.sqrt(abar) / (1.0 - abar)",
      "posterior mean coefficient of x_t uses sqrt(alpha_bar) instead of sqrt(alpha)", [DIFF]),
    M("diffusion/gaussian.py", "self.posterior_mean_coef1 = betas * np.sqrt(abar_prev) / (1.0 - abar)",
      "self.posterior_mean_coef1 = betas * np.sqrt(abar) / (1.0 - abar)",
      "posterior mean coefficient of x_0 uses alpha_bar_t instead of alpha_bar_{t-1}", [DIFF]),
    M("diffusion/gaussian.py", "new_betas = 1.0 - abar / np.append(1.0, abar[:-1])",
      "new_betas = 1.0 - abar / np.append(1.0, abar[1:])",
      "respaced betas divide by the next kept alpha_bar instead of the previous (off-by-one)", [DIFF]),
    M("diffusion/gaussian.py", "first = self.posterior_variance[1] if n > 1 else betas[0]",
      "first = self.posterior_variance[0] if n > 1 else betas[0]",
      "log posterior variance clipped with the t = 0 value (log 0)", [DIFF]),
    M("diffusion/gaussian.py", "log_variance = frac * max_log + (1.0 - frac) * min_log",
      "log_variance = frac * min_log + (1.0 - frac) * max_log",
      "learned-range interpolation endpoints swapped", [DIFF]),
    M("diffusion/gaussian.py", "pred_eps = sqrt_abar * pred + sqrt_one_minus * x_t",
      "pred_eps = sqrt_abar * pred - sqrt_one_minus * x_t",
      "eps from v-prediction with the wrong sign", [DIFF]),
    M("diffusion/gaussian.py", "frozen = torch.cat([pred.detach(), var_values], dim=1)",
      "frozen = torch.cat([pred, var_values], dim=1)",
      "vb term not detached from the mean prediction (vb trains the mean)", [DIFF]),
    M("diffusion/samplers/ddim.py", "direction = np.sqrt(np.clip(1.0 - abar_prev - sigma**2, 0.0, None))",
      "direction = np.sqrt(np.clip(1.0 - abar - sigma**2, 0.0, None))",
      "DDIM direction term uses alpha_bar_t instead of alpha_bar_{t-1}", [DIFF]),
    M("diffusion/samplers/ddpm.py", 'torch.exp(0.5 * out["log_variance"]) * noise',
      'torch.exp(out["log_variance"]) * noise',
      "DDPM noise scaled by the variance instead of the standard deviation", [DIFF]),
    M("diffusion/gaussian.py", 'terms["vb"] = vb * (self.num_timesteps / 1000.0)', 'terms["vb"] = vb',
      "vb term not rescaled by num_timesteps / 1000", [DIFF]),
    # --------------------------------------------------------------------------------------- schedules.py
    M("diffusion/schedules.py", "np.linspace(scale * 1e-4, scale * 0.02, num_timesteps",
      "np.linspace(1e-4, 0.02, num_timesteps",
      "linear schedule not rescaled for chains shorter than 1000", [SCHED]),
    M("diffusion/schedules.py", "grid = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps",
      "grid = np.arange(num_timesteps, dtype=np.float64) / num_timesteps",
      "cosine grid one point short (T - 1 betas)", [SCHED]),
    M("diffusion/schedules.py",
      "picked.append(start + round(position))", "picked.append(start + int(position))",
      "respacing truncates instead of ADM's round-half-even", [SCHED, DIFF]),
    M("diffusion/schedules.py", "size = base + (1 if index < extra else 0)",
      "size = base + (1 if index <= extra else 0)",
      "section sizes off by one (one section too many gets the extra step)", [SCHED]),
    M("diffusion/schedules.py", "sqrt_abar = (sqrt_abar - last) * (first / (first - last))",
      "sqrt_abar = sqrt_abar - last",
      "zero-terminal-SNR shift without the rescale (first alpha_bar changes)", [SCHED]),
    # ----------------------------------------------------------------------------------------- metrics.py
    M("evaluation/metrics.py", "np.linalg.eigvalsh((middle + middle.T) / 2)", "np.linalg.eigvalsh(s1 @ s2)",
      "Fréchet cross term from eigvalsh of the non-symmetric S1 S2 (reads one triangle only)", [METRICS]),
    M("evaluation/metrics.py", "np.cov(f, rowvar=False)", "np.cov(f)",
      "covariance over samples instead of features (wrong dim)", [METRICS]),
    M("evaluation/metrics.py", "(kxx.sum() - np.trace(kxx)) / (m * (m - 1))", "kxx.mean()",
      "KID's MMD estimate keeps the diagonal (biased)", [METRICS]),
    M("evaluation/metrics.py", "radii[rows] = d.kthvalue(k + 1, dim=1).values",
      "radii[rows] = d.kthvalue(k, dim=1).values",
      "k-NN radius counts the point itself as a neighbour", [METRICS, PR_BY_HAND]),
    M("evaluation/metrics.py", "(d <= radii[None]).any(dim=1)", "(d < radii[None]).any(dim=1)",
      "manifold balls open instead of closed (a point on the radius is outside)", [METRICS, PR_BY_HAND]),
    M("evaluation/metrics.py", "np.trace(s2) - 2 * tr_cross)", "np.trace(s2) - tr_cross)",
      "Fréchet cross term not doubled", [METRICS]),
    # -------------------------------------------------------------------------------------- checkpoint.py
    M("common/checkpoint.py", "            os.fsync(f.fileno())", "            pass",
      "atomic write skips the fsync before the rename (a power cut can leave an empty file)", [CKPT]),
    M("common/checkpoint.py",
      "            f.flush()\n            os.fsync(f.fileno())\n        os.replace(tmp, path)",
      "            os.replace(tmp, path)\n            f.flush()\n            os.fsync(f.fileno())",
      "rename before the data is flushed and fsynced", [CKPT]),
    M("common/checkpoint.py", "            os.unlink(tmp)", "            pass",
      "failed save leaves its temp file behind", [CKPT]),
    M("common/checkpoint.py", "        os.chmod(tmp, 0o666 & ~_current_umask())", "        pass",
      "checkpoint keeps mkstemp's private 0600 mode", [CKPT]),
    M("common/checkpoint.py", "if type(obj) in (list, tuple, torch.Size):", "if type(obj) in (list, tuple):",
      "safety check refuses torch.Size", [CKPT]),
    M("common/checkpoint.py", 'tuple(int(v) for v in py["state"].tolist()), py["gauss_next"]))',
      'tuple(int(v) for v in py["state"].tolist()), None))',
      "Python RNG restore drops the cached gauss_next", [CKPT]),
    M("common/checkpoint.py", "torch.load(path, map_location=map_location, weights_only=True)",
      "torch.load(path, map_location=map_location, weights_only=False)",
      "checkpoints loaded with full unpickling (code execution on load)", [CKPT]),
    M("common/checkpoint.py", "        return check_state(state, path, foreign_ok=foreign_ok, only=only)",
      "        state.pop(DIGEST_KEY, None)\n        return state",
      "checkpoint digests written but never checked on load", [DIGEST]),
    # ------------------------------------------------------------------------------ digest.py and its users
    M("common/digest.py", '    return f"{type(obj).__name__}:{obj!r}"', '    return "value"',
      "non-tensor values (step, configs) left out of the digest", [DIGEST]),
    M("common/digest.py", '    head = _hash(f"{t.dtype}{tuple(t.shape)}".encode())', "    head = 0",
      "tensor hash blind to dtype and shape", [DIGEST]),
    M("common/digest.py", "    yield from (name for name in recorded if name not in tensors)\n", "",
      "a tensor missing from the file is not reported by name", [DIGEST]),
    M("common/digest.py", 'and "config" in recorded and f"{hash_json(config):016x}" != recorded["config"]:',
      'and "config" in recorded and False:', "a damaged config.json beside the weights goes unchecked",
      [DIGEST]),
    M("weights/export.py", "    check_safetensors(weights, state, metadata, config, config_path)",
      "    (weights, state, metadata, config, config_path)",
      "exported weights loaded without their digest check", [DIGEST]),
    M("sampling/many.py", 'warnings.warn(f"{why.splitlines()[0]}; sampling that batch again", stacklevel=2)',
      "pass", "a damaged sampling part is resampled silently", [DIGEST]),
    M("studies/engine.py", "        return read_json(path)", "        return json.loads(path.read_text())",
      "reproduce cache entries read without their digest check", [DIGEST]),
    M("data/latents.py", "        check_safetensors(f, data, metadata)", "        pass",
      "latent shards loaded without their digest check", [LATENTS]),
    # ----------------------------------------------------------------------------------- per-sample --tol
    M("fixed_point/solvers.py", "            done |= (res < tol).cpu()",
      "            done |= (res.max() < tol).cpu()",
      "--tol decided on the batch's largest residual (a seed's image depends on its batch)",
      [SAMPLE, "tests/test_fixed_point.py::test_tol_waits_for_the_slowest_sample"]),
    M("sampling/many.py", "            out.append((pos, min(pos + batch_size, lo)))",
      "            out.append((pos, pos + batch_size))",
      "a resumed run's new batches run over the finished batch after them (seeds sampled twice)",
      ["tests/test_sample_many.py"]),
    M("sampling/many.py", "if 0 <= lo < hi <= n and all(hi <= a or lo >= b for a, b in found):",
      "if 0 <= lo < hi <= n:",
      "overlapping batches in a parts folder are both used", ["tests/test_sample_many.py"]),
    M("sampling/loop.py", "    spending = unspent >= remaining  #",
      "    spending = unspent >= 10**9  #",
      "--tol's savings are never spent before the last step (they pile onto it)", [SAMPLE]),
    M("sampling/loop.py", "    extra = torch.where(spending, unspent // remaining, unspent)",
      "    extra = torch.where(spending, unspent // remaining, 0 * unspent)",
      "a step that has not converged may not borrow what earlier steps saved", [SAMPLE]),
    M("models/instrument.py", '            counter["rows"] += x.shape[0]',
      '            counter["rows"] += len(x) // 2',
      "blocks per sample counted from half the rows processed", [SAMPLE]),
    # --------------------------------------------------------------------------------------------- serve.py
    M("serve/server.py", "        if not self.server.job.acquire(timeout=self.server.queue_timeout):",
      "        if not self.server.job.acquire(blocking=False) and False:",
      "sampling jobs run side by side instead of one at a time", [SERVE]),
    M("serve/models.py", 'parse_seeds(str(params.get("seeds") or "0-63"), limit=MAX_SAMPLES)',
      'parse_seeds(str(params.get("seeds") or "0-63"), limit=10 * MAX_SAMPLES)',
      "requests are not bounded in samples", [SERVE]),
    M("serve/server.py", "        if req.budget % depth:", "        if req.budget % depth == 0:",
      "the DiT beside FPDM is skipped exactly when the budget fits it", [SERVE]),
    # ----------------------------------------------------------------------------------------- calibrate.py
    M("sampling/calibrate.py", "        ref = step(outs[-1])", "        ref = step(outs[-1], noise=None)",
      "error table measured with the wrong noise (DDPM's x_{t-1} without its noise term)", [CALIB]),
    M("sampling/calibrate.py", '        z = state["z"] if (s.reuse and state["z"] is not None) else h',
      "        z = h", "calibration ignores reuse (cold starts while sampling warm-starts)", [CALIB]),
    M("sampling/calibrate.py", '    best = min(rows, key=lambda r: r.get("score", 0.0))',
      '    best = max(rows, key=lambda r: r.get("score", 0.0))',
      "the step count with the worst score is chosen", [CALIB]),
    M("sampling/calibrate.py", '    if schedule["weights_hash"] != weights_hash(model):', "    if False:",
      "a schedule made for other weights is accepted", [CALIB]),
    M("sampling/calibrate.py", "            total = budget - evals * (cfg.pre_depth + cfg.post_depth)",
      "            total = budget - evals * cfg.pre_depth",
      "iterations planned without the post blocks' cost (the budget overspent)", [CALIB]),
    # ---------------------------------------------------------------------------------- train.py (keep-last)
    M("training/run_folder.py", "            os.replace(previous_path(out, i - 1), previous_path(out, i))",
      "            pass",
      "--keep-last does not shift older checkpoints down (prev2 never written)", [KEEP]),
    M("training/loop.py", '            os.replace(ckpt_path, Path(out_dir) / f"{CHECKPOINT_NAME}.damaged")',
      "            pass",
      "after a fallback the damaged ckpt.pt is rotated into ckpt.prev1.pt", [KEEP]),
    M("training/run_folder.py", "        if not fallback:\n", "        if False:\n",
      "--resume falls back to an earlier checkpoint without being asked", [KEEP]),
    M("training/loop.py", "time.perf_counter() - last_ckpt[0] >= train_cfg.ckpt_seconds",
      "time.perf_counter() - last_ckpt[0] < train_cfg.ckpt_seconds",
      "--ckpt-seconds checkpoints at the wrong times", [TRAIN]),
    M("training/loop.py", "    if log.exists() and log.stat().st_size:", "    if False:",
      "a new run appends to the log of a run that left no checkpoint", [TRAIN]),
    M("training/loop.py", "        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * frac))",
      "        return cfg.lr * (1.0 - frac)",
      "--lr-schedule cosine decays linearly", ["tests/test_train_step.py"]),
    M("training/step.py", "        share = 1.0 if accum == 1 else len(rows) / n",
      "        share = 1.0 / accum",
      "--grad-accum weighs unequal micro-batches equally (not the whole batch's mean)",
      ["tests/test_train_step.py"]),
    M("training/step.py", "    if available is None or need <= available:", "    if True:",
      "a step that cannot fit in memory is started anyway", ["tests/test_train_step.py"]),
    M("training/loop.py", "                    tb.record(rec)\n                    bar.set_postfix",
      "                    bar.set_postfix",
      "--tensorboard never receives the loss records", ["tests/test_train_step.py"]),
    M("training/loop.py", '        if state.get("data_digest", data_digest) != data_digest:',
      "        if False:",
      "a resume accepts other data of the same count and classes (a moved folder not checked)",
      ["tests/test_cli.py"]),
    M("training/loop.py", "    if train_cfg.memory_check:", "    if False:",
      "train never checks that a step fits before writing its folder", ["tests/test_train_step.py"]),
    M("training/step.py", "x0 = torch.where(mirror[:, None, None, None], x0.flip(-1), x0)",
      "x0 = torch.where(mirror[:, None, None, None], x0.flip(-2), x0)",
      "--hflip mirrors top to bottom", [TRAIN]),
    M("sampling/loop.py", "make_solver(s.solver, plan[e], s.tol, stats, s.anderson_window, limits=limits)",
      "make_solver(s.solver, plan[e], None, stats, s.anderson_window, limits=limits)",
      "--tol-mode save never stops early (spends the whole budget)", [SAMPLE]),
    M("training/monitor.py", "    with torch.random.fork_rng(devices=[]):", "    if True:",
      "samples during training draw from the training's global random stream (label dropout)", [TRAIN]),
    M("training/loop.py", "                if train_cfg.sample_every and step % train_cfg.sample_every == 0",
      "                if train_cfg.sample_every and step % train_cfg.sample_every == 1",
      "--sample-every samples at the wrong steps", [TRAIN]),
    M("data/image_folder.py", "return x.float().div_(127.5).sub_(1.0) if x.dtype == torch.uint8 else x",
      "return x.float().div_(127.5) if x.dtype == torch.uint8 else x",
      "uint8 images are not mapped to [-1, 1] when a batch is made", ["tests/test_fashion.py"]),
    # ---------------------------------------------------------------------- longer training (ratio study)
    M("studies/engine.py", "summary = resume(out, steps=steps, device=device, progress=False)",
      "summary = resume(out, device=device, progress=False)",
      "a training folder seeded from a shorter run resumes to that run's steps, not its key's", [LONGER]),
    M("studies/longer.py", "return [k for k in K_SET if budget % (2 + k) == 0 and k <= scale.max_iters]",
      "return [k for k in K_SET if k <= scale.max_iters]",
      "FPDM cells at k whose steps do not spend the budget", [LONGER]),
    M("studies/longer.py", 'if f.suffix in (".pt", ".jsonl"):', 'if f.suffix in (".pt",):',
      "the longer run's loss log starts at the resumed step (the first half's curve lost)", [LONGER]),
    # ---------------------------------------------------------------------- calibrated cells: cost and order
    M("studies/engine.py", " in measuring and not path.exists():\n            continue",
      " in measuring and not path.exists():\n            pass",
      "a worker starts a calibrated cell whose schedule another is measuring (and waits minutes on it)",
      ["tests/test_reproduce_fashion.py::test_a_worker_passes_over_a_cell_whose_schedule_another_is_measuring"]),
    M("studies/fashion.py", "calibration_cost_s(b) for path, b in schedules.items() if not path.exists())",
      "0.0 for path, b in schedules.items() if not path.exists())",
      "the plan counts nothing for measuring a calibrated schedule",
      ["tests/test_reproduce_fashion.py::test_the_plan_counts_a_missing_schedule_once_for_all_its_cells"]),
    M("studies/fashion_cells.py", '    if spec.solver == "anderson":\n        ms *= ANDERSON_FACTOR', "",
      "the plan counts an Anderson cell at Picard's cost",
      ["tests/test_reproduce_fashion.py::test_cell_costs_count_what_the_full_run_measured"]),
    # ---------------------------------------------------------------------- close calls on every verdict pair
    M("studies/fashion.py", "    if close is not None and abs(m) < 2 * se:",
      "    if close is not None and abs(m) > 2 * se:",
      "verdict pairs outside 2 s.e. get more seed blocks, the close ones none",
      [FASH + "a_verdict_pair_within_two_standard_errors_earns_more_seed_blocks"]),
    M("studies/fashion.py",
      "out += [replace(spec, seed_block=k) for k in range(scale.sampling_seeds, scale.max_seed_blocks)]",
      "out += [replace(spec, seed_block=k) for k in range(scale.sampling_seeds, scale.sampling_seeds + 1)]",
      "a close verdict pair gets one more seed block, not up to max_seed_blocks",
      [FASH + "a_verdict_pair_within_two_standard_errors_earns_more_seed_blocks"]),
    M("studies/fashion.py", "    if spec.settings() != settings:\n", "    if False:\n",
      "a result's settings rebuild a cell with another cache key, unnoticed",
      [FASH + "every_cached_cell_is_found_again_from_its_settings"]),
    # ---------------------------------------------------------------------- one cell listed twice
    M("studies/ratio_cells.py", "    return list(dict.fromkeys(cells))", "    return cells",
      "FLOPs and wall-clock matching one budget list the same equal-cost cell twice",
      ["tests/test_reproduce_ratio.py::test_flops_and_wall_matching_one_budget_derive_one_cell"]),
    M("studies/engine.py", "    waiting = [(i, c) for c, i in first.items()]",
      "    waiting = list(enumerate(cells))",
      "a cell listed twice runs twice (two workers racing on one cache file)",
      ["tests/test_reproduce_ratio.py::test_run_tasks_runs_a_cell_listed_twice_once"]),
    M("studies/fashion_cells.py", "/ mean_se(r[\"sample_wall_s\"] for r in mine)[0]",
      "/ sum(r[\"sample_wall_s\"] for r in mine)",
      "wall-clock matching sums FPDM's blocks: a cell with more seed blocks looks that much slower",
      [FASH + "wall_clock_matching_is_per_block_when_one_cell_has_more_blocks"]),
]


# ------------------------------------------------------------------------------------------------- runner

@dataclass
class Result:
    mutant: Mutant
    status: str  # killed | survived | timeout | error
    seconds: float
    detail: str = ""  # first failing test, or why it errored


def validate(mutants: Sequence[Mutant], root: Path) -> list[str]:
    """Every `old` must occur exactly once and every mutated module must still compile: a stale or
    ambiguous snippet, or a mutant that is only a syntax error, would make the numbers meaningless."""
    problems = []
    for m in mutants:
        path = root / m.module
        if not path.is_file():
            problems.append(f"{m.module}: file missing ({m.description})")
            continue
        text = path.read_text()
        count = text.count(m.old)
        if count != 1:
            problems.append(f"{m.module}: old snippet occurs {count} times, expected exactly 1: {m.old!r}")
            continue
        if m.old == m.new:
            problems.append(f"{m.module}: mutant changes nothing: {m.old!r}")
            continue
        try:
            compile(text.replace(m.old, m.new), str(path), "exec")
        except SyntaxError as exc:
            problems.append(f"{m.module}: mutant does not compile ({exc.msg}, line {exc.lineno}): {m.new!r}")
    return problems


def tree_files(root: Path) -> list[str]:
    """Tracked plus untracked-but-not-ignored files: what the tests can see in a fresh checkout, including
    tests that another engineer has not committed yet."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                         check=True, capture_output=True).stdout.decode()
    return sorted({f for f in out.split("\0") if f and (root / f).is_file()})


def make_copy(root: Path, dest: Path, files: Sequence[str]) -> None:
    for rel in files:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, target)


def test_env(copy: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(copy / "src"), env.get("PYTHONPATH")) if p)
    # One BLAS thread: the machine is shared, and thread count changes rounding in some tests.
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    # No .pyc: a mutant and its restore can share an mtime second and size, and a stale .pyc would then
    # silently run the wrong source.
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def check_import(copy: Path) -> None:
    """The venv's editable install points at the real src/; PYTHONPATH must win or we would test it."""
    r = subprocess.run([sys.executable, "-c", "import fpdm; print(fpdm.__file__)"], cwd=copy,
                       env=test_env(copy), capture_output=True, text=True)
    where = r.stdout.strip()
    if r.returncode != 0 or not Path(where).resolve().is_relative_to((copy / "src").resolve()):
        sys.exit(f"error: in the copy {copy}, `import fpdm` resolves to {where or r.stderr.strip()!r}, not "
                 f"{copy / 'src'}; the mutants would not be tested (check PYTHONPATH and the editable "
                 "install)")


def run_pytest(copy: Path, args: Sequence[str], timeout: float,
               stop_first: bool = True) -> tuple[int | None, str]:
    """Run pytest in its own process group, so a timeout also ends the subprocesses tests start."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *(["-x"] if stop_first else []),
           *args]
    proc = subprocess.Popen(cmd, cwd=copy, env=test_env(copy), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return None, out
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


_FAILED = re.compile(r"^(FAILED|ERROR) (\S+)", re.MULTILINE)


def first_failure(output: str) -> str:
    hit = _FAILED.search(output)
    if hit:
        return hit.group(2)
    lines = [line for line in output.strip().splitlines() if line.strip()]
    return lines[-1][:160] if lines else ""


def baseline_args(mutants: Sequence[Mutant]) -> list[str]:
    """Union of the scoped tests; node ids are dropped when their whole file is already in."""
    args = sorted({t for m in mutants for t in m.tests})
    files = {a for a in args if "::" not in a}
    return [a for a in args if "::" not in a or a.split("::")[0] not in files]


@contextmanager
def applied(copy: Path, mutant: Mutant) -> Iterator[None]:
    path = copy / mutant.module
    original = path.read_text()
    stat = path.stat()
    path.write_text(original.replace(mutant.old, mutant.new, 1))
    try:
        yield
    finally:
        path.write_text(original)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def run_mutant(copies: queue.Queue[Path], mutant: Mutant, timeout: float) -> Result:
    copy = copies.get()
    start = time.perf_counter()
    try:
        with applied(copy, mutant):
            rc, out = run_pytest(copy, mutant.tests, timeout)
        seconds = time.perf_counter() - start
        if rc is None:
            return Result(mutant, "timeout", seconds, f"no result within {timeout:g} s")
        if rc in (2, 3, 4):  # interrupted, internal error, usage error: not a test verdict
            return Result(mutant, "error", seconds, f"pytest exit {rc}: {first_failure(out)}")
        return Result(mutant, "killed" if rc else "survived", seconds, first_failure(out) if rc else "")
    finally:
        copies.put(copy)


# ------------------------------------------------------------------------------------------------- report

def verdict(r: Result) -> str:
    if r.mutant.equivalent:
        return "equivalent (survived)" if r.status == "survived" else f"**{r.status}, but marked equivalent**"
    return {"killed": "killed", "timeout": "killed (timeout)", "survived": "**SURVIVED**",
            "error": "**ERROR**"}[r.status]


def counts(results: Sequence[Result]) -> tuple[int, int, int, int, int]:
    """(mutants, killed incl. timeouts, survived, equivalent, errors); equivalents are counted apart."""
    live = [r for r in results if not r.mutant.equivalent]
    killed = sum(r.status in ("killed", "timeout") for r in live)
    survived = sum(r.status == "survived" for r in live)
    errors = sum(r.status == "error" for r in live)
    return len(results), killed, survived, len(results) - len(live), errors


def rate(killed: int, survived: int) -> str:
    return f"{100 * killed / (killed + survived):.0f}%" if killed + survived else "–"


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def snippet(code: str, width: int = 90) -> str:
    """A multi-line snippet on one line (⏎ between lines), so it fits in inline Markdown code."""
    one = " ⏎ ".join(line.strip() for line in code.strip().splitlines())
    return one if len(one) <= width else one[:width - 1] + "…"


def write_report(path: Path, results: Sequence[Result], command: str, baseline_s: float,
                 wall_s: float) -> None:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True,
                           text=True).stdout.strip()
    n, killed, survived, equivalent, errors = counts(results)
    lines = [
        "# Mutation testing",
        "",
        "Curated one-line mutants of the core modules (`tools/mutation.py`), each run against the tests that "
        "exercise that code. A mutant is *killed* when its tests fail, *survived* when they all pass. "
        "Equivalent mutants cannot change behaviour and are left out of the kill rate.",
        "",
        f"- Command: `{command}`",
        f"- Finished: {dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
        f"- Source: commit `{head}`" + (" plus uncommitted changes in the working tree" if dirty else ""),
        f"- Time: baseline {baseline_s:.0f} s, whole run {wall_s / 60:.1f} min",
        "",
        f"**Kill rate: {rate(killed, survived)}** ({killed} killed of {killed + survived} non-equivalent "
        f"mutants; {equivalent} equivalent" + (f"; {errors} errors not counted" if errors else "") + ")",
        "",
    ]
    surviving = [r for r in results if r.status == "survived" and not r.mutant.equivalent]
    lines += ["## Surviving mutants", ""]
    if surviving:
        lines += ["These bugs would go unnoticed by the tests listed:", ""]
        lines += [f"- `{r.mutant.name}`: {r.mutant.description} — `{snippet(r.mutant.old)}` → "
                  f"`{snippet(r.mutant.new)}` (tests: {', '.join(r.mutant.tests)})" for r in surviving]
    else:
        lines.append("None.")
    odd = [r for r in results if r.status == "error" or (r.mutant.equivalent and r.status != "survived")]
    if odd:
        lines += ["", "## Needs a look", ""]
        lines += [f"- `{r.mutant.name}`: {r.mutant.description} — {verdict(r)}: {r.detail}" for r in odd]
    lines += ["", "## Per module", "", "| module | mutants | killed | survived | equivalent | kill rate |",
              "|---|---:|---:|---:|---:|---:|"]
    modules = sorted({r.mutant.module for r in results}, key=lambda m: [x.module for x in MUTANTS].index(m))
    for module in modules:
        n_m, k_m, s_m, e_m, _ = counts([r for r in results if r.mutant.module == module])
        lines.append(f"| `{Path(module).name}` | {n_m} | {k_m} | {s_m} | {e_m} | {rate(k_m, s_m)} |")
    lines.append(f"| **all** | {n} | {killed} | {survived} | {equivalent} | **{rate(killed, survived)}** |")
    lines += ["", "## Every mutant", "", "| # | module | bug modelled | result | s | killed by / note |",
              "|---:|---|---|---|---:|---|"]
    for i, r in enumerate(results, 1):
        note = r.mutant.equivalent if r.mutant.equivalent and r.status == "survived" else r.detail
        lines.append(f"| {i} | `{r.mutant.name}` | {cell(r.mutant.description)} | {verdict(r)} | "
                     f"{r.seconds:.1f} | {cell(note)} |")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------------------------------- main

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--jobs", type=int, default=1, help="parallel workers, each with its own temporary copy")
    p.add_argument("--only", help="run the mutants of modules whose path contains this (any case); if no "
                   "module matches, those whose description contains it; else those whose tests "
                   "start with it (e.g. tests/test_digest.py)")
    p.add_argument("--list", action="store_true", help="list (and validate) the mutants, run nothing")
    p.add_argument("--report", type=Path, default=ROOT / "docs" / "mutation.md", help="Markdown report")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per mutant (a timeout is a kill)")
    p.add_argument("--keep", action="store_true", help="keep the temporary copies (for debugging)")
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error("--jobs must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    needle = (args.only or "").lower()
    # Module names first: "ema" should mean ema.py, not every description that says "remainder".
    mutants = [m for m in MUTANTS if needle in m.module.lower()] or \
        [m for m in MUTANTS if needle in m.description.lower()] or \
        [m for m in MUTANTS if any(t.startswith(needle) for t in m.tests)]  # e.g. tests/test_digest.py
    if not mutants:
        sys.exit(f"error: no mutant matches --only {args.only!r}")
    problems = validate(mutants, ROOT)
    if problems:
        sys.exit("error: the mutant list no longer matches the source:\n  " + "\n  ".join(problems))
    if args.list:
        for i, m in enumerate(mutants, 1):
            eq = f"  [equivalent: {m.equivalent}]" if m.equivalent else ""
            print(f"{i:3d}  {m.name:15s} {m.description}{eq}\n     tests: {' '.join(m.tests)}")
        per = {}
        for m in mutants:
            per[m.name] = per.get(m.name, 0) + 1
        print(f"\n{len(mutants)} mutants: " + ", ".join(f"{k} {v}" for k, v in per.items()))
        return 0

    given = sys.argv[1:] if argv is None else list(argv)
    command = "python tools/mutation.py" + (" " + shlex.join(given) if given else "")
    t_start = time.perf_counter()
    workdirs = [Path(tempfile.mkdtemp(prefix=f"fpdm-mutation-{i}-")) for i in range(args.jobs)]
    try:
        # One snapshot of the working tree, cloned per worker, so all workers test the same source even while
        # someone edits the real tree.
        first = workdirs[0]
        make_copy(ROOT, first, tree_files(ROOT))
        for other in workdirs[1:]:
            shutil.copytree(first, other, dirs_exist_ok=True)
        problems = validate(mutants, first)
        if problems:
            sys.exit("error: the snapshot no longer matches the mutant list:\n  " + "\n  ".join(problems))
        check_import(first)
        print(f"copies: {', '.join(map(str, workdirs))}", flush=True)

        base = baseline_args(mutants)
        print(f"baseline: pytest {' '.join(base)}", flush=True)
        t0 = time.perf_counter()
        rc, out = run_pytest(first, base, timeout=args.timeout * max(3, len(base)), stop_first=False)
        baseline_s = time.perf_counter() - t0
        if rc != 0:
            failing = sorted({f.split("::")[0] for _, f in _FAILED.findall(out)})
            sys.stderr.write(out[-3000:] + "\n")
            sys.exit("error: the unmutated tests do not pass" + (" (timeout)" if rc is None else "")
                     + (": " + ", ".join(failing) if failing else f" (pytest exit {rc})")
                     + "; fix them before measuring mutants")
        print(f"baseline passed in {baseline_s:.0f} s; {len(mutants)} mutants, {args.jobs} job(s)",
              flush=True)

        copies: queue.Queue[Path] = queue.Queue()
        for d in workdirs:
            copies.put(d)
        results: list[Result | None] = [None] * len(mutants)
        done = [0]
        lock = threading.Lock()

        def task(i: int) -> None:
            r = run_mutant(copies, mutants[i], args.timeout)
            results[i] = r
            with lock:
                done[0] += 1
                print(f"[{done[0]:3d}/{len(mutants)}] {verdict(r).replace('*', ''):24s} {r.mutant.name:15s} "
                      f"{r.seconds:6.1f}s  {r.mutant.description[:70]}"
                      + (f"  <- {r.detail}" if r.detail else ""), flush=True)

        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            for f in [pool.submit(task, i) for i in range(len(mutants))]:
                f.result()
        final = [r for r in results if r is not None]
        write_report(args.report, final, command, baseline_s, time.perf_counter() - t_start)
        n, killed, survived, equivalent, errors = counts(final)
        print(f"\nkill rate {rate(killed, survived)}: {killed} killed, {survived} survived, {equivalent} "
              f"equivalent, {errors} errors of {n}; report: {args.report}")
        return 1 if errors else 0
    finally:
        if not args.keep:
            for d in workdirs:
                shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
