"""Behaviour identity across a refactor: run a fixed set of fpdm commands, keep what they write, compare.

    .venv/bin/python tools/identity.py record /root/fpdm-cache/identity/before   # with the old code
    .venv/bin/python tools/identity.py check  /root/fpdm-cache/identity/before   # with the new code

Every command runs in-process through `fpdm.cli.app` (and `fpdm serve`'s JSON answers over HTTP) in one
fixed work folder, so the paths inside the records are the same on both sides. What is kept: every array
(samples, trained weights, calibrated schedules) and every record with its wall-clock fields dropped.
`check` reruns the commands and compares: arrays to max |difference| <= 1e-6, numbers in records to 1e-5
relative (metrics computed from arrays that differ in the last place), everything else exactly. It
prints one line per command and exits 1 on any difference.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import shutil
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import torch

WORK = Path("/tmp/fpdm-identity-work")
ARRAY_TOL, NUMBER_TOL = 1e-6, 1e-5
DROP = {"wall_s", "ms_per_step", "peak_rss_mib", "steps_this_run", "wall", "cost_s", "elapsed_s",
        "created", "duration_s", "fpdm_version", "torch_version", "seconds", "sampling_s", "training_s",
        "server_s", "fpdm_digest", "command"}  # the digest of a record hashes its wall times too


def _commands(w: Path) -> list[tuple[str, list[str]]]:
    fp, dit = str(w / "fpdm" / "ckpt.pt"), str(w / "dit" / "ckpt.pt")
    common = ["--no-progress", "--threads", "1"]
    sample = ["sample", "--seeds", "0-15", *common]
    return [
        ("train-fpdm", ["train", "--data", "digits", "--model", "FPDM-T/2", "--out", str(w / "fpdm"),
                        "--steps", "30", "--log-every", "10", *common]),
        ("train-dit", ["train", "--data", "digits", "--model", "DiT-T/2", "--out", str(w / "dit"), "--steps",
                       "30", "--log-every", "10", *common]),
        ("sample-budget-iters", [*sample, "--ckpt", fp, "--budget", "60", "--iters", "2", "--out",
                                 str(w / "s-iters")]),
        ("sample-profile-reuse", [*sample, "--ckpt", fp, "--budget", "60", "--steps", "10", "--profile",
                                  "increasing", "--reuse", "--out", str(w / "s-profile")]),
        ("sample-ddim", [*sample, "--ckpt", fp, "--sampler", "ddim", "--steps", "ddim10", "--iters", "3",
                         "--out", str(w / "s-ddim")]),
        ("sample-tol-anderson", [*sample, "--ckpt", fp, "--budget", "60", "--steps", "10", "--tol", "0.05",
                                 "--solver", "anderson", "--out", str(w / "s-tol")]),
        ("sample-dit", [*sample, "--ckpt", dit, "--budget", "60", "--out", str(w / "s-dit")]),
        ("calibrate", ["calibrate", "--ckpt", fp, "--budget", "60", "--seeds", "100-107", "--out",
                       str(w / "sched.json"), *common]),
        ("sample-calibrated", [*sample, "--ckpt", fp, "--schedule", str(w / "sched.json"), "--out",
                               str(w / "s-sched")]),
        ("sweep", ["sweep", "--ckpt", fp, "--budget", "60", "--iters-list", "1,2,4", "--seeds", "0-15",
                   "--out", str(w / "sweep"), *common]),
        ("eval", ["eval", str(w / "s-iters.npz"), "--out", str(w / "s-iters.eval.json"), "--threads", "1"]),
        ("reproduce-tiny", ["reproduce", "--scale", "tiny", "--out", str(w / "repro"), "--workers", "1"]),
    ]


SERVE_REQUESTS = [("GET", "/api/models", None), ("GET", "/api/feasible?model=digits-fpdm&budget=24", None),
                  ("POST", "/api/sample", {"model": "digits-fpdm", "budget": 24, "iters": 2, "seeds": "0-9"}),
                  ("POST", "/api/sample", {"model": "digits-fpdm", "budget": 32, "steps": 4,
                                           "profile": "increasing", "reuse": True, "tol": 0.01})]


def _clean(obj: Any) -> Any:
    """A record without its wall-clock fields; data-URL images decoded to arrays."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items() if k not in DROP and not k.endswith("wall_s")}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    if isinstance(obj, str) and obj.startswith("data:image/png;base64,"):
        from PIL import Image

        return {"png": np.asarray(Image.open(io.BytesIO(base64.b64decode(obj.split(",", 1)[1])))).tolist()}
    return obj


def _outputs(w: Path, before: set[Path]) -> dict[str, Any]:
    """What a command wrote: arrays of .npz/.pt files, cleaned .json/.jsonl records."""
    out: dict[str, Any] = {}
    for f in sorted(p for p in w.rglob("*") if p.is_file() and p not in before):
        key = str(f.relative_to(w))
        if f.suffix == ".npz":
            with np.load(f) as z:
                out[key] = {k: z[k] for k in z.files}
        elif f.suffix == ".pt" and ".parts" not in key:
            state = torch.load(f, weights_only=True, map_location="cpu")
            out[key] = {f"{part}.{k}": v.numpy() for part in ("model", "ema") if part in state
                        for k, v in state[part].items()}
        elif f.suffix == ".json":
            out[key] = _clean(json.loads(f.read_text()))
        elif f.suffix == ".jsonl":
            out[key] = [_clean(json.loads(line)) for line in f.read_text().splitlines() if line.strip()]
    return out


def _serve() -> dict[str, Any]:
    from fpdm.serve.server import make_server

    server = make_server(port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base, answers = f"http://127.0.0.1:{server.server_address[1]}", {}
    try:
        for i, (method, path, body) in enumerate(SERVE_REQUESTS):
            data = None if body is None else json.dumps(body).encode()
            req = urllib.request.Request(base + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=600) as r:
                answers[f"{i}:{method} {path}"] = _clean(json.loads(r.read()))
    finally:
        server.shutdown()
        server.server_close()
    return answers


def run_all(only: set[str] | None = None) -> dict[str, dict[str, Any]]:
    from fpdm.cli.app import main

    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    torch.set_num_threads(1)
    results = {}
    for name, argv in _commands(WORK):
        if only and name not in only and not name.startswith("train"):  # the others use the trainings
            continue
        before = {p for p in WORK.rglob("*") if p.is_file()}
        t0 = time.perf_counter()
        rc = main(argv)
        if rc != 0:
            sys.exit(f"{name}: `fpdm {' '.join(argv)}` exited {rc}")
        results[name] = _outputs(WORK, before)
        print(f"ran {name:<22} {time.perf_counter() - t0:6.1f} s, {len(results[name])} files", flush=True)
    if not only or "serve" in only:
        results["serve"] = {"answers": _serve()}
    return results


def _without_wall_matched(report: dict[str, Any]) -> dict[str, Any]:
    """A study's results without what is sized by measured wall-clock (the equal-cost cells, and the DiT
    trained for as long as an FPDM took, with its cells), which no two runs share."""
    def timed(entry: dict[str, Any]) -> bool:
        s = entry.get("settings", {})
        return s.get("experiment") == "equal_cost" or "eqwall" in str(s.get("train", "")) or \
            "eqwall" in str(entry.get("name", ""))

    cells = [c for c in report.get("cells", []) if not timed(c)]
    trainings = report.get("trainings")
    if isinstance(trainings, list):
        trainings = [t for t in trainings if not timed(t)]
    elif isinstance(trainings, dict):
        trainings = {k: v for k, v in trainings.items() if "eqwall" not in k}
    return {**report, "cells": cells, "trainings": trainings}


def _normalise(results: dict[str, Any]) -> dict[str, Any]:
    """Both sides of a check through today's cleaning (a record made by an older version of this tool
    kept more): wall-clock fields dropped, and of `reproduce` only its results.json files (its cache files
    are named by keys, and its wall-clock-matched cells depend on measured times)."""
    out = {}
    for name, files in results.items():
        if name.startswith("reproduce"):
            files = {k: _without_wall_matched(v) for k, v in files.items() if k.endswith("results.json")}
        out[name] = {k: v if isinstance(v, dict) and any(isinstance(x, np.ndarray) for x in v.values())
                     else _clean(v) for k, v in files.items()}
    return out


def _compare(a: Any, b: Any, where: str, worst: dict[str, float]) -> list[str]:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape or a.dtype != b.dtype:
            return [f"{where}: shape/dtype {a.shape} {a.dtype} vs {b.shape} {b.dtype}"]
        if a.dtype.kind in "fc":
            d = float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max(initial=0))
            worst["array"] = max(worst["array"], d)
            return [f"{where}: max |difference| {d:.3g} > {ARRAY_TOL}"] if d > ARRAY_TOL else []
        return [] if np.array_equal(a, b) else [f"{where}: integer arrays differ"]
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{where}: keys differ: only before {sorted(set(a) - set(b))}, only after "
                    f"{sorted(set(b) - set(a))}"]
        return [m for k in a for m in _compare(a[k], b[k], f"{where}/{k}", worst)]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: {len(a)} items vs {len(b)}"]
        return [m for i, (x, y) in enumerate(zip(a, b, strict=True)) for m in _compare(x, y, f"{where}[{i}]",
                                                                                       worst)]
    if isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool):
        d = abs(a - b) / max(1.0, abs(a))
        worst["number"] = max(worst["number"], d)
        return [f"{where}: {a!r} vs {b!r}"] if d > NUMBER_TOL else []
    return [] if a == b else [f"{where}: {a!r} vs {b!r}"]


def _save(results: dict[str, Any], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(results, folder / "identity.pt")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=("record", "check"))
    p.add_argument("folder", type=Path, help="where `record` keeps the outputs and `check` reads them")
    p.add_argument("--only", default=None, help="comma-separated command names (the trainings always run)")
    a = p.parse_args(argv)
    only = set(a.only.split(",")) if a.only else None
    results = run_all(only)
    if a.mode == "record":
        _save(results, a.folder)
        print(f"recorded {len(results)} commands in {a.folder / 'identity.pt'}")
        return 0
    before = _normalise(torch.load(a.folder / "identity.pt", weights_only=False))
    results = _normalise(results)
    worst = {"array": 0.0, "number": 0.0}
    bad = 0
    for name in before:
        if name not in results:
            continue
        problems = _compare(before[name], results.get(name, {}), name, worst)
        bad += bool(problems)
        print(f"{'same' if not problems else 'DIFFERS':<8} {name}")
        for m in problems[:10]:
            print(f"         {m}")
    print(f"worst array difference {worst['array']:.3g}, worst relative number difference "
          f"{worst['number']:.3g}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
