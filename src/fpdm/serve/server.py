"""`fpdm serve`: the compute dial in a browser.

One page (`assets/serve.html`, plain HTML and JavaScript, nothing fetched from elsewhere) and four JSON
endpoints, served by the standard library's `http.server` (a threading server: nothing to install, and a
local tool for one user needs no more):

- `GET  /api/models`            the models on offer (the built-in FPDM and DiT, and `--ckpt`);
- `GET  /api/feasible?model=M&budget=B`  constant-k (iterations, steps) pairs that spend B exactly, and
  whether a calibrated schedule exists for that budget;
- `POST /api/sample`            sample with the settings given: grid, iterations per step over t, residual
  curves, blocks counted, FLOPs, wall time, and the DiT at the same budget beside it;
- `POST /api/fid`               digits- or fashion-FID of 500 samples (seeds 0-499) with those settings.

The models on offer and what a request may ask of them are in `fpdm.serve.models`.

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
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import torch

from fpdm.serve.models import Loaded, Models, Request, feasible, find_schedule, parse_request

PAGE = Path(__file__).parents[1] / "assets" / "serve.html"
FID_SAMPLES = 500
QUEUE_TIMEOUT_S = 120.0

__all__ = ["DialServer", "Models", "make_server", "serve"]


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
        n_steps, per_step = resolve_steps(model, req.budget, steps, iters, profile,
                                          sampler=req.settings.sampler)
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
                from fpdm.sampling.loop import SAMPLERS

                models = [m.describe() for m in self.server.models.by_name.values()]
                self._json(HTTPStatus.OK, {"models": models, "samplers": list(SAMPLERS)})
            elif url.path == "/api/feasible":
                answer = feasible(self.server.models, query.get("model"), query.get("budget"),
                                  query.get("sampler", "ddpm"))
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
