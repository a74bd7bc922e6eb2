"""The models `fpdm serve` offers (the built-ins and `--ckpt`, loaded once, each FPDM paired with a DiT of
its own data) and what a request may ask of them: `parse_request` checks and bounds every field (a
ValueError names it) and finds a calibrated schedule where one is asked for."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_SAMPLES, MAX_BUDGET, MAX_ITERS, MAX_STEPS = 500, 2000, 64, 1000


@dataclass
class Loaded:
    name: str
    model: Any
    diffusion: Any
    schedules: list[Path] = field(default_factory=list)  # folders searched for calibrated schedules
    data: str | None = None  # what the weights were trained on (picks the FID's feature network)

    def describe(self) -> dict[str, Any]:
        cfg = self.model.config
        return {"name": self.name, "arch": cfg.arch, "depth": cfg.depth, "num_classes": cfg.num_classes,
                "pre": cfg.pre_depth if cfg.arch == "fpdm" else None,
                "post": cfg.post_depth if cfg.arch == "fpdm" else None,
                "default_iters": getattr(self.model, "default_iters", None)}


class Models:
    """The models a server offers, loaded once: the built-in digits FPDM and DiT, and the given one."""

    def __init__(self, ckpt: str | None = None, schedules: list[Path] | None = None) -> None:
        from fpdm.data.datasets import trained_on
        from fpdm.weights.builtin import BUILTINS, builtin_folder
        from fpdm.weights.loading import load_model

        self.by_name: dict[str, Loaded] = {}
        names = [n for n in BUILTINS if (builtin_folder(n) / "model.safetensors").exists()]
        if ckpt is not None:
            names.insert(0, ckpt)
        for name in dict.fromkeys(names):
            model, diffusion, ckpt = load_model(name)
            beside = [Path(name).parent / "schedules"] if Path(name).exists() else []
            folders = list(schedules or []) + beside
            self.by_name[name] = Loaded(name, model.eval(), diffusion, folders, trained_on(ckpt))
        if not self.by_name:
            raise FileNotFoundError("no model to serve: the built-in digits weights are missing from this "
                                    "installation and no --ckpt was given")

    def get(self, name: Any) -> Loaded:
        if name not in self.by_name:
            raise ValueError(f"model {name!r} is not served here; choose one of {', '.join(self.by_name)}")
        return self.by_name[name]

    def dit(self, beside: Loaded) -> Loaded | None:
        """The DiT shown beside an FPDM: the first one for the same images and classes."""
        shape = _shape(beside)
        return next((m for m in self.by_name.values() if m.model.config.arch == "dit" and _shape(m) == shape),
                    None)


def _shape(m: Loaded) -> tuple:
    cfg = m.model.config
    return cfg.input_size, cfg.in_channels, cfg.num_classes, m.data


# ------------------------------------------------------------------------------------------ requests


def _number(params: dict[str, Any], key: str, lo: float, hi: float, default: Any = None,
            kind: type = int) -> Any:
    """params[key] as `kind` within [lo, hi], or `default` when absent (a ValueError names the field)."""
    value = params.get(key, default)
    if value is None or value == "":
        return default
    try:
        number = kind(value)
    except (TypeError, ValueError):
        what = "a whole number" if kind is int else "a number"
        raise ValueError(f"{key} must be {what}, got {value!r}") from None
    if not lo <= number <= hi:
        raise ValueError(f"{key} must be between {lo} and {hi}, got {number}")
    return number


def _int(params: dict[str, Any], key: str, lo: int, hi: int, default: int | None = None) -> int | None:
    return _number(params, key, lo, hi, default, int)


def _float(params: dict[str, Any], key: str, lo: float, hi: float, default: float | None = None
           ) -> float | None:
    return _number(params, key, lo, hi, default, float)


@dataclass(frozen=True)
class Request:
    model: str
    budget: int
    iters: int | None
    steps: int | None
    profile: str
    settings: Any
    seeds: list[int]
    label: int | None
    calibrated: bool


def parse_request(params: dict[str, Any], models: Models) -> Request:
    """Validate a sampling request (a ValueError names the field and what it accepts)."""
    from fpdm.diffusion.schedules import SPACINGS
    from fpdm.sampling.budget import PROFILES
    from fpdm.sampling.loop import SAMPLERS, SamplerSettings, parse_seeds

    if not isinstance(params, dict):
        raise ValueError("the request must be a JSON object")
    loaded = models.get(params.get("model"))
    cfg = loaded.model.config
    budget = _int(params, "budget", 1, MAX_BUDGET)
    if budget is None:
        raise ValueError("budget is required")
    iters = _int(params, "iters", 0, MAX_ITERS)
    steps = _int(params, "steps", 1, MAX_STEPS)
    if iters is not None and steps is not None:
        raise ValueError("give iterations per step or steps, not both: with a budget one follows from the "
                         "other")
    profile = str(params.get("profile") or "constant")
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {', '.join(PROFILES)}, got {profile!r}")
    sampler = str(params.get("sampler") or "ddpm")
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    solver = str(params.get("solver") or "picard")
    tol = _float(params, "tol", 1e-6, 1.0)
    cfg_scale = _float(params, "cfg_scale", 1.0, 10.0, 1.0)
    reuse = bool(params.get("reuse", False))
    label = _int(params, "label", 0, max(cfg.num_classes - 1, 0))
    seeds = parse_seeds(str(params.get("seeds") or "0-63"), limit=MAX_SAMPLES)  # counted before it is built
    if cfg.arch == "dit":
        iters, reuse, tol, solver = None, False, None, "picard"  # a DiT has no fixed point: not offered
    spacing = str(params.get("spacing") or "uniform")
    if spacing not in SPACINGS:
        raise ValueError(f"spacing must be one of {', '.join(SPACINGS)}, got {spacing!r}")
    settings = SamplerSettings(sampler=sampler, spacing=spacing, reuse=reuse, tol=tol, solver=solver,
                               cfg_scale=cfg_scale)
    return Request(loaded.name, budget, iters, steps, profile, settings, seeds, label,
                   bool(params.get("calibrated", False)))


def find_schedule(loaded: Loaded, budget: int, settings: Any) -> Path | None:
    """A calibrated schedule (`fpdm calibrate`) for this model, budget and sampler settings, if one lies in
    the model's schedule folders."""
    from fpdm.sampling.calibrate import check_schedule, read_schedule

    for folder in loaded.schedules:
        for path in sorted(Path(folder).glob("*.json")) if Path(folder).is_dir() else ():
            try:
                check_schedule(read_schedule(path), loaded.model, settings, budget, source=str(path))
            except (ValueError, KeyError, FileNotFoundError):
                continue
            return path
    return None


def feasible(models: Models, name: Any, budget_value: Any, sampler: Any = "ddpm") -> dict[str, Any]:
    """Constant-k pairs for a budget and sampler (the budget-table logic), and a calibrated schedule if one
    exists."""
    from fpdm.sampling.budget import feasible_pairs
    from fpdm.sampling.loop import SAMPLERS, SamplerSettings

    loaded = models.get(name)
    budget = _int({"budget": budget_value}, "budget", 1, MAX_BUDGET)
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    pairs = feasible_pairs(loaded.model.config, budget, MAX_ITERS, sampler=sampler)
    schedule = find_schedule(loaded, budget, SamplerSettings(sampler=sampler))
    return {"model": loaded.name, "budget": budget, "pairs": [{"iters": k, "steps": s} for k, s in pairs],
            "schedule": str(schedule) if schedule else None}
