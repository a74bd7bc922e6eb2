"""`fpdm serve`: the compute dial in a browser.

One page (`assets/serve.html`, plain HTML and JavaScript, nothing fetched from elsewhere) and four JSON
endpoints, served by the standard library's `http.server` (a threading server: nothing to install, and a
local tool for one user needs no more):

- `GET  /api/models`            the models on offer (the built-in FPDM and DiT, and `--ckpt`);
- `GET  /api/feasible?model=M&budget=B`  constant-k (iterations, steps) pairs that spend B exactly, and
  whether a calibrated schedule exists for that budget;
- `POST /api/sample`            sample with the settings given: grid, iterations per step over t, residual
  curves, blocks counted, FLOPs, wall time, and the DiT at the same budget beside it;
- `POST /api/fid`               digits-FID of 500 samples (seeds 0-499) with those settings.

Requests are validated and bounded (a ValueError becomes a 400 with the message, and the server goes on);
sampling jobs run one at a time per server, later ones wait in line for up to `QUEUE_TIMEOUT_S`, then get a
503 asking to retry.
"""

from __future__ import annotations

import base64
import io
import json
import sys
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import torch

PAGE = Path(__file__).parents[1] / "assets" / "serve.html"
MAX_SAMPLES, MAX_BUDGET, MAX_ITERS, MAX_STEPS = 500, 2000, 64, 1000
FID_SAMPLES = 500
QUEUE_TIMEOUT_S = 120.0

__all__ = ["DialServer", "Models", "make_server", "serve"]


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
    settings = SamplerSettings(sampler=sampler, reuse=reuse, tol=tol, solver=solver, cfg_scale=cfg_scale)
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


def feasible(models: Models, name: Any, budget_value: Any) -> dict[str, Any]:
    """Constant-k pairs for a budget (the budget-table logic), and a calibrated schedule if one exists."""
    from fpdm.sampling.budget import feasible_pairs
    from fpdm.sampling.loop import SamplerSettings

    loaded = models.get(name)
    budget = _int({"budget": budget_value}, "budget", 1, MAX_BUDGET)
    pairs = feasible_pairs(loaded.model.config, budget, MAX_ITERS)
    schedule = find_schedule(loaded, budget, SamplerSettings())
    return {"model": loaded.name, "budget": budget, "pairs": [{"iters": k, "steps": s} for k, s in pairs],
            "schedule": str(schedule) if schedule else None}


def _data_url(write: Any) -> str:
    """A PNG, written by `write(buffer)`, as a data: URL the page can show."""
    buf = io.BytesIO()
    write(buf)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _figure_png(fig: Any) -> str:
    from fpdm.common.plots import plt

    url = _data_url(lambda buf: fig.savefig(buf, format="png"))
    plt.close(fig)
    return url


def _iters_figure(record: dict[str, Any]) -> Any:
    from fpdm.common.plots import iterations_bars, plt

    fig, ax = plt.subplots(figsize=(5, 2.4), dpi=100)
    iterations_bars(ax, record["timesteps"], record.get("iters_run_mean") or record["iters_run"])
    ax.set_xlabel("timestep t (sampling runs right)")
    fig.tight_layout()
    return fig


def _run(loaded: Loaded, req: Request, seeds: list[int], schedule: dict | None = None) -> Any:
    from fpdm.sampling.many import check_settings, class_labels, resolve_steps, sample_seeds

    model = loaded.model
    iters = req.iters if model.config.arch == "fpdm" else None
    steps = req.steps if model.config.arch == "fpdm" else None  # a DiT's budget fixes its steps
    profile = req.profile if steps is not None else "constant"
    if schedule is None:
        n_steps, per_step = resolve_steps(model, req.budget, steps, iters, profile)
        check_settings(model, req.settings, budget=req.budget, steps=steps, profile=profile, label=req.label,
                       n_steps=n_steps, per_step=per_step)
    labels = class_labels(model.config.num_classes, len(seeds), req.label)
    with torch.no_grad():
        return sample_seeds(model, loaded.diffusion, seeds, labels=labels, budget=req.budget, steps=steps,
                            iters=iters, profile=profile, settings=req.settings, batch_size=len(seeds),
                            schedule=schedule)


def _panel(run: Any, name: str) -> dict[str, Any]:
    from fpdm.common.images import grid_image
    from fpdm.common.plots import residual_figure
    from fpdm.sampling.many import grid_caption

    rec = run.record
    n = min(len(run.samples), 100)
    upscale = max(1, min(4, 64 // run.samples.shape[-1]))  # digits' 8 px ×4, Fashion's 32 px ×2
    grid = grid_image(run.samples[:n], nrow=10, upscale=upscale, padding=2, labels=run.labels[:n],
                      caption=grid_caption(rec, name))
    out = {"name": name, "grid": _data_url(lambda buf: grid.save(buf, format="PNG")),
           "blocks_counted": rec["blocks_counted"], "budget": rec["budget"], "steps": rec["steps"],
           "gflops_per_sample": round(rec["flops_per_sample"] / 1e9, 4), "wall_s": rec["wall_s"],
           "iters_planned": rec["iters_planned"], "iters_run": rec["iters_run"]}
    if rec["iters_run"]:
        out["iters_chart"] = _figure_png(_iters_figure(rec))
        if any(rec["residuals"]):
            out["residual_chart"] = _figure_png(residual_figure(rec))
    return out


def sample_response(models: Models, params: dict[str, Any]) -> dict[str, Any]:
    """What the page shows for one request: the model's panel and, for an FPDM, the DiT's at the same
    budget (or why there is none)."""
    from fpdm.sampling.calibrate import read_schedule

    req = parse_request(params, models)
    loaded = models.get(req.model)
    schedule = None
    if req.calibrated:
        path = find_schedule(loaded, req.budget, req.settings)
        if path is None:
            raise ValueError(f"no calibrated schedule for budget {req.budget} with these sampler settings; "
                             f"make one with `fpdm calibrate --ckpt {req.model} --budget {req.budget}`")
        schedule = read_schedule(path)
    result: dict[str, Any] = {"model": _panel(_run(loaded, req, req.seeds, schedule), loaded.name)}
    dit = models.dit(loaded)
    if loaded.model.config.arch == "fpdm" and dit is not None:
        depth = dit.model.config.depth
        if req.budget % depth:
            result["dit_note"] = (f"DiT: budget {req.budget} is not a multiple of its depth {depth} "
                                  f"(nearest: {req.budget // depth * depth or depth}, "
                                  f"{(req.budget // depth + 1) * depth})")
        else:
            plain = type(req.settings)(sampler=req.settings.sampler, cfg_scale=req.settings.cfg_scale)
            dit_req = Request(dit.name, req.budget, None, None, "constant", plain, req.seeds, req.label,
                              False)
            result["dit"] = _panel(_run(dit, dit_req, req.seeds), dit.name)
    return result


def fid_response(models: Models, params: dict[str, Any]) -> dict[str, Any]:
    """digits- or fashion-FID of FID_SAMPLES samples (seeds 0-499) with the request's settings."""
    from fpdm.evaluation.evaluate import digits_eval, fid_name

    req = parse_request({**params, "seeds": f"0-{FID_SAMPLES - 1}"}, models)
    loaded = models.get(req.model)
    key = fid_name(loaded.model.config, loaded.data)
    if key is None:  # before sampling
        raise ValueError("FID here needs a digits model (8×8 greyscale) or a Fashion-MNIST one")
    run = _run(loaded, req, req.seeds)
    metrics = digits_eval(run.samples, run.labels, loaded.model.config, loaded.data)
    return {"samples": FID_SAMPLES, "fid_name": key.replace("_", "-"), "fid": metrics[key],
            "fid_se": metrics[f"{key}_se"], key: metrics[key], f"{key}_se": metrics[f"{key}_se"],
            "blocks_counted": run.record["blocks_counted"], "wall_s": run.record["wall_s"]}


# ---------------------------------------------------------------------------------------------- HTTP


class DialServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], models: Models, queue_timeout: float = QUEUE_TIMEOUT_S
                 ) -> None:
        super().__init__(address, _Handler)
        self.models = models
        self.job = threading.Lock()  # one sampling job at a time: the others wait in line
        self.queue_timeout = queue_timeout


class _Handler(BaseHTTPRequestHandler):
    server: DialServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # quiet: the page shows what happened

    def _send(self, status: int, body: bytes, kind: str) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client left before its answer: nothing to tell it, and no traceback for the console

    def _json(self, status: int, obj: dict[str, Any]) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        url = urlparse(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            if url.path in ("/", "/index.html"):
                self._send(HTTPStatus.OK, PAGE.read_bytes(), "text/html; charset=utf-8")
            elif url.path == "/api/models":
                models = [m.describe() for m in self.server.models.by_name.values()]
                self._json(HTTPStatus.OK, {"models": models})
            elif url.path == "/api/feasible":
                answer = feasible(self.server.models, query.get("model"), query.get("budget"))
                self._json(HTTPStatus.OK, answer)
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such page: {url.path}"})
        except ValueError as e:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(e)})

    def do_POST(self) -> None:  # noqa: N802
        url = urlparse(self.path)
        handlers = {"/api/sample": sample_response, "/api/fid": fid_response}
        if url.path not in handlers:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint: {url.path}"})
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if length > 100_000:
                raise ValueError("request too large")
            params = json.loads(self.rfile.read(length) or b"{}")
        except (ValueError, UnicodeDecodeError) as e:
            self._json(HTTPStatus.BAD_REQUEST, {"error": f"the request is not valid JSON ({e})"})
            return
        if not self.server.job.acquire(timeout=self.server.queue_timeout):
            self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "busy: another sampling job is running; try "
                                                                 "again in a moment"})
            return
        try:
            t0 = time.perf_counter()
            result = handlers[url.path](self.server.models, params)
            result["server_s"] = round(time.perf_counter() - t0, 3)
            self._json(HTTPStatus.OK, result)
        except (ValueError, FileNotFoundError) as e:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(e).splitlines()[0]})
        except Exception as e:  # the server keeps serving whatever one request did
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{type(e).__name__}: {e}"})
        finally:
            self.server.job.release()


def make_server(host: str = "127.0.0.1", port: int = 8000, ckpt: str | None = None,
                schedules: list[Path] | None = None) -> DialServer:
    """A server (not yet serving) on (host, port); port 0 picks a free one (`server.server_address`)."""
    return DialServer((host, port), Models(ckpt, schedules))


def serve(host: str = "127.0.0.1", port: int = 8000, ckpt: str | None = None,
          schedules: list[Path] | None = None) -> None:
    """Serve until Ctrl-C."""
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"fpdm serve: warning: listening on {host}: anyone who can reach this machine can run sampling "
              "jobs on it", file=sys.stderr)
    server = make_server(host, port, ckpt, schedules)
    print(f"fpdm serve: http://{server.server_address[0]}:{server.server_address[1]}/  (Ctrl-C stops)",
          flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
