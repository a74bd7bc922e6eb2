"""Publishing a finished study: its report (README.md, results.json, plots, grids) is copied into the
repository's docs, and the README's front-page section is rewritten from results.json, so that every number
on the front page is one the study stored. `tools/publish_study.py` is the command.

Everything is checked before anything is written: a smoke-scale report (a plumbing check) or an unfinished
one (headline cells missing at some budget) is refused, as is a README without the section's markers.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

__all__ = ["FRONT_END", "FRONT_START", "HEADLINE_HEADER", "front_page", "headline_row", "publish",
           "replace_front_page"]

FRONT_START = "<!-- front-page -->"
FRONT_END = "<!-- /front-page -->"


HEADLINE_HEADER = ("| blocks (DiT-28 steps) | FPDM at its best | DiT-28 at its best | FPDM − DiT-28 | |\n"
                   "|---|---|---|---|---|")


def headline_row(e: dict[str, Any]) -> str:
    """One budget of the headline (a `per_budget` record of results.json) as a table row."""
    diff = f"**{e['diff']}**" if e["word"] != "tie" else e["diff"]
    fpdm = f"{e['fpdm']} {e['fpdm_setting']} ({e['fpdm_steps']} steps): {e['fpdm_fid']}"
    dit = f"{e['dit_setting']}: {e['dit_fid']}"
    return f"| {e['budget']} ({e['dit_steps']}) | {fpdm} | {dit} | {diff} | {e['word']} |"


def front_page(data: dict[str, Any], where: str) -> str:
    """The README's headline section for a finished Fashion-MNIST study: `data` is its results.json, `where`
    the folder it is published in, relative to the README."""
    verdicts = {v["key"]: v for v in data["verdicts"]}
    head, ddpm = verdicts["headline"], verdicts["headline-ddpm"]
    noise = [f"{e['fpdm_seed_noise']} at {e['budget']}" for e in head["per_budget"] if "fpdm_seed_noise" in e]
    lines = [
        "## Does FPDM beat DiT at equal compute? (Fashion-MNIST, measured here)", "",
        "At the paper's depth ratio — FPDM-T/4 (1 + k + 1 blocks per step) against DiT-T/4 at depth 28 "
        f"(DiT-XL's), both of width {data['settings']['width']} — on Fashion-MNIST at 32×32 (64 tokens), "
        "each model at its own best sampler, spacing and k, picked on selection seeds and reported on "
        "separate evaluation seeds (fashion-FID, lower is better; FPDM − DiT-28 paired over the evaluation "
        "blocks, mean ± s.e.; a gap within 2 s.e. is a tie):", "",
        HEADLINE_HEADER, *(headline_row(e) for e in head["per_budget"]), "",
        f"**{head['class'].capitalize()}**: {head['verdict']}. With DDPM for both (the paper's sampler), "
        f"{ddpm['class']}: {ddpm['verdict']} ("
        + ", ".join(f"{e['diff']} at {e['budget']}" for e in ddpm["per_budget"]) + "). "
        + (f"FPDM's training-seed noise (seed 1 − seed 0, same setting): {', '.join(noise)}; "
           if noise else "FPDM's training-seed noise: not measured; ")
        + "DiT-28's is unmeasured (one training seed).", "",
        f"![fashion-FID against blocks per sample, each model at its best sampler]({where}/frontier.png)", "",
        f"Every finding (Fig. 4, Tables 3–5, reuse, calibrated schedules, ODE solvers), its noise and every "
        f"cell: [{where}/README.md]({where}/README.md); `fpdm reproduce --study fashion` reruns it "
        f"({data['shown']['wall_h_total']} h of wall time here, over "
        f"{len(data.get('invocations', []))} runs of it on 2 cores, each resuming the last). On the 8×8 "
        f"digits at the same depth ratio "
        f"([docs/results/README.md](docs/results/README.md)): {head['digits']}.",
    ]
    return "\n".join(lines)


def replace_front_page(text: str, section: str) -> str:
    """`text` (a README) with what lies between its front-page markers replaced by `section`."""
    for mark in (FRONT_START, FRONT_END):
        if text.count(mark) != 1:
            raise ValueError(f"the README must hold the line {mark!r} exactly once (found "
                             f"{text.count(mark)}): it marks the section the study's headline replaces")
    if text.index(FRONT_END) < text.index(FRONT_START):
        raise ValueError(f"the README's {FRONT_END!r} comes before its {FRONT_START!r}")
    head, rest = text.split(FRONT_START)
    tail = rest.split(FRONT_END)[1]
    return f"{head}{FRONT_START}\n{section}\n{FRONT_END}{tail}"


def _check(src: Path, data: dict[str, Any], allow_smoke: bool) -> list[Path]:
    """The files to copy, after refusing a report that is not a finished full-scale study."""
    if data.get("scale") != "full" and not allow_smoke:
        raise ValueError(f"{src}: a `{data.get('scale')}`-scale report is a plumbing check, not a result; "
                         "publish a `--scale full` run (--allow-smoke: to try the tool on one)")
    head = {v["key"]: v for v in data["verdicts"]}["headline"]
    if "per_budget" not in head or "shown" not in data:
        raise ValueError(f"{src}/results.json was written by older code (no headline `per_budget` or no "
                         "`shown`): run "
                         "`fpdm reproduce --study fashion` again with the same --out from this checkout; it "
                         "rewrites the report from its cache without new work")
    missing = sorted(set(data["settings"]["budgets"]) - {e["budget"] for e in head.get("per_budget", [])})
    if missing:
        raise ValueError(f"{src}: the study is not finished (no headline cells at {missing} blocks): run "
                         "`fpdm reproduce --study fashion` again with the same --out to complete it")
    unexplained = [v["key"] for v in data["verdicts"] if not v.get("why")]
    if data.get("scale") == "full" and unexplained:
        raise ValueError(f"{src}: the side-by-side with digits has no 'why' for {', '.join(unexplained)}: "
                         "write them in fpdm/studies/fashion.py's WHY after reading the results, then run "
                         "`fpdm reproduce --study fashion` again with the same --out (it rewrites the report "
                         "from its cache)")
    files = [src / "README.md", src / "results.json", *(src / p for p in data["plots"]),
             *sorted((src / "grids").glob("*.png"))]
    absent = [str(f) for f in files if not f.is_file()]
    if absent:
        raise ValueError(f"the report's files are missing: {', '.join(absent)}")
    return files


def publish(src: str | Path, dst: str | Path, readme: str | Path, allow_smoke: bool = False) -> list[Path]:
    """Copy the study report in `src` (the `<out>/fashion` folder of `fpdm reproduce --study fashion`) into
    `dst` (files already there are kept unless the report has one of that name) and rewrite `readme`'s
    front-page section from its results.json. Returns the paths written."""
    src, dst, readme = Path(src), Path(dst), Path(readme)
    if not (src / "results.json").is_file():
        raise ValueError(f"{src}: no results.json (is this the `<out>/fashion` folder of a finished study?)")
    data = json.loads((src / "results.json").read_text())
    files = _check(src, data, allow_smoke)
    where = Path(os.path.relpath(dst.resolve(), readme.resolve().parent)).as_posix()
    text = replace_front_page(readme.read_text(), front_page(data, where))
    written = []
    for f in files:
        target = dst / f.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, target)
        written.append(target)
    readme.write_text(text)
    return [*written, readme]
