"""Throughput against a pinned baseline commit: samples/s and training steps/s of FPDM-T/4 and DiT-T/4
(depth 6 and 28) at 32×32 (64 tokens; sampling at batch 100, FPDM at k = 2 and 4; training at batch 64) and
of the digits T/2 models, each measured with this tree's code and with the baseline's, in alternating
fresh processes (1 thread), reported as ratios of medians; the achieved GFLOP/s of sampling against the
machine's single-thread sgemm peak (2048³); and the profile of FPDM-T/4 sampling (top operators, share of
self time).

The baseline's tree is checked out with `git worktree` under /tmp (its own `src/` on PYTHONPATH), so both
run the same measuring code below; weights are random (cost does not depend on them).

    python benchmarks/throughput.py [--baseline b5df72b] [--repeats 5] [--quick] [--json PATH]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BASELINE = "b5df72b"  # the commit before the throughput issue's first change
ROOT = Path(__file__).resolve().parent.parent
CASES = {  # name: (model, input size, channels, k or None, sampling batch, training batch)
    "FPDM-T/4 k=4": ("FPDM-T/4", 32, 1, 4, 100, 64),
    "FPDM-T/4 k=2": ("FPDM-T/4", 32, 1, 2, 100, 64),
    "DiT-T/4 depth 6": ("DiT-T/4", 32, 1, None, 100, 64),
    "DiT-T/4 depth 28": ("DiT-T/4:28", 32, 1, None, 100, 64),
    "FPDM-T/2 digits": ("FPDM-T/2", 8, 1, 4, 100, 64),
    "DiT-T/2 digits": ("DiT-T/2", 8, 1, None, 100, 64),
}


def measure(case: str, steps: int) -> dict[str, float]:
    """One process's figures for one case: seconds per sampling forward (one evaluation of the batch) and
    per training step, best of `steps` after a warm-up."""
    import torch

    from fpdm.fixed_point.solvers import IterationPlan
    from fpdm.models.registry import create_model
    from fpdm.sampling.budget import forward_flops

    torch.set_num_threads(1)
    name, size, channels, k, n_sample, n_train = CASES[case]
    name, _, depth = name.partition(":")
    overrides = {"depth": int(depth)} if depth else {}
    torch.manual_seed(0)
    model = create_model(name, input_size=size, in_channels=channels, num_classes=10, **overrides)
    x = torch.randn(n_sample, channels, size, size)
    t = torch.randint(0, 1000, (n_sample,))
    y = torch.arange(n_sample) % 10
    kw = {"iters": k} if k else {}
    model.eval()
    with torch.no_grad():
        model(x, t, y, **kw)
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            model(x, t, y, **kw)
            times.append(time.perf_counter() - t0)
    sample_s = min(times)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    xb, tb, yb = x[:n_train], t[:n_train], y[:n_train]
    plan = {"iters": IterationPlan(3, 3)} if k else {}  # S-JFB at its largest draw (N = M = 3)
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        model(xb, tb, yb, **plan).square().mean().backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t0)
    flops = n_sample * forward_flops(model.config, k or 0)
    return {"sample_s": sample_s, "train_s": min(times), "sample_gflops": flops / sample_s / 1e9}


def sgemm_peak(repeats: int = 5) -> float:
    import torch

    torch.set_num_threads(1)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * 2048**3 / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def profile_table(top: int = 8, training: bool = False) -> list[tuple[str, float]]:
    """(operator, share of self CPU time) of FPDM-T/4 sampling forwards at batch 100, k = 4, or with
    `training` of its S-JFB training steps at batch 64 (N = M = 3, forward, backward and AdamW)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from fpdm.fixed_point.solvers import IterationPlan
    from fpdm.models.registry import create_model

    torch.set_num_threads(1)
    model = create_model("FPDM-T/4", input_size=32, in_channels=1, num_classes=10)
    n = 64 if training else 100
    x, t, y = torch.randn(n, 1, 32, 32), torch.randint(0, 1000, (n,)), torch.arange(n) % 10
    if training:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def run() -> None:
            opt.zero_grad(set_to_none=True)
            model(x, t, y, iters=IterationPlan(3, 3)).square().mean().backward()
            opt.step()
    else:
        model.eval()

        def run() -> None:
            with torch.no_grad():
                model(x, t, y, iters=4)
    run()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            run()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    rows = sorted(((e.key, e.self_cpu_time_total / total) for e in events), key=lambda r: -r[1])
    return rows[:top]


def _worker(tree: Path, case: str, steps: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "OMP_NUM_THREADS": "1"}
    code = (f"import sys, json; sys.path.insert(0, {str(Path(__file__).parent)!r}); import throughput; "
            f"print(json.dumps(throughput.measure({case!r}, {steps})))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def baseline_tree(commit: str) -> Path:
    tree = Path(f"/tmp/fpdm-baseline-{commit}")
    if not (tree / "src").exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), commit], check=True,
                       capture_output=True)
    return tree


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from common import machine, parser, table, write_json

    p = parser("throughput", repeats=5)
    p.add_argument("--baseline", default=BASELINE, help="the commit to compare against")
    p.add_argument("--steps", type=int, default=3, help="timed forwards / training steps per process")
    p.add_argument("--quick", action="store_true", help="the FPDM-T/4 k=4 case only")
    p.add_argument("--cases", default="", help="comma-separated substrings: only the cases whose names "
                   "contain one (e.g. 'k=2,depth 6'); default all")
    p.add_argument("--profile-only", action="store_true", help="only the two profiles (sampling and "
                   "training of FPDM-T/4, this tree), no comparison")
    a = p.parse_args()
    if a.profile_only:
        for kind in ("sampling", "training"):
            print(f"FPDM-T/4 {kind}, share of self time:")
            print(table([{"operator": k, "%": 100 * v} for k, v in profile_table(12, kind == "training")],
                        ["operator", "%"]))
        return
    trees = {"baseline": baseline_tree(a.baseline), "this tree": ROOT}
    cases = ["FPDM-T/4 k=4"] if a.quick else list(CASES)
    if a.cases:
        cases = [c for c in cases if any(part.strip() in c for part in a.cases.split(","))]
        if not cases:
            p.error(f"--cases {a.cases!r} matches none of {list(CASES)}")
    runs: dict[tuple[str, str], list[dict]] = {}
    for _ in range(a.repeats):  # alternate the trees within every repeat
        for case in cases:
            for label, tree in trees.items():
                runs.setdefault((case, label), []).append(_worker(tree, case, a.steps))
    peak = sgemm_peak()
    rows = []
    for case in cases:
        med = {label: {key: statistics.median(r[key] for r in runs[(case, label)])
                       for key in ("sample_s", "train_s", "sample_gflops")} for label in trees}
        base, mine = med["baseline"], med["this tree"]
        rows.append({"case": case, "sampling speed-up": base["sample_s"] / mine["sample_s"],
                     "training speed-up": base["train_s"] / mine["train_s"],
                     "sampling GFLOP/s": mine["sample_gflops"],
                     "% of sgemm peak": 100 * mine["sample_gflops"] / peak,
                     "ms per sampling forward": 1000 * mine["sample_s"],
                     "ms per training step": 1000 * mine["train_s"]})
    print(f"baseline {a.baseline}; sgemm peak {peak:.1f} GFLOP/s (1 thread, 2048³); medians of {a.repeats} "
          f"alternating processes")
    cols = ["case", "sampling speed-up", "training speed-up", "sampling GFLOP/s", "% of sgemm peak",
            "ms per sampling forward", "ms per training step"]
    print(table(rows, cols))
    prof, prof_train = profile_table(), profile_table(training=True)
    for kind, got in (("sampling", prof), ("training", prof_train)):
        print(f"FPDM-T/4 {kind}:")
        print(table([{"operator": k, "share of self time %": 100 * v} for k, v in got],
                    ["operator", "share of self time %"]))
    path = write_json("throughput", {"baseline": a.baseline, "sgemm_peak_gflops": peak, "rows": rows,
                                     "profile": prof, "profile_training": prof_train,
                                     "machine_here": machine()}, a.json)
    print(f"written {path}")


if __name__ == "__main__":
    main()
