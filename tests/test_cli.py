import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fpdm.cli.app import build_parser, main
from fpdm.models.registry import model_config

TINY = ["--hidden-size", "32", "--depth", "4", "--num-heads", "2"]


@pytest.mark.parametrize("command", ["train", "sample", "sweep", "calibrate", "serve", "budget-table",
                                     "plot-residuals", "eval", "train-features", "reproduce", "export",
                                     "extract-latents", "import", "build-weights"])
def test_help_shows_every_default(command, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    text = capsys.readouterr().out
    # one block per option: "  --name ...help..." up to the next option
    blocks = re.split(r"\n  (?=-)", text.split("options:", 1)[1])[1:]
    options = [b for b in blocks if not b.startswith("-h")]
    assert options
    for block in options:
        assert "default" in block or "required" in block or "(…/ckpt.pt)" in block or "record" in block, \
            f"no default shown for: {block.split()[0]}"


def test_train_then_sample_end_to_end(tmp_path, capsys):
    run = tmp_path / "run"
    rc = main(["train", "--model", "FPDM-T/2", *TINY, "--steps", "3", "--batch-size", "8",
               "--out", str(run), "--no-progress", "--log-every", "1"])
    assert rc == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["step"] == 3 and summary["ms_per_step"] > 0 and summary["peak_rss_mib"] > 0
    out = tmp_path / "s" / "grid"
    rc = main(["sample", "--ckpt", str(run / "ckpt.pt"), "--steps", "3", "--iters", "2", "--seeds", "0-5",
               "--out", str(out), "--no-progress", "--nrow", "3", "--upscale", "2"])
    assert rc == 0
    data = np.load(out.with_suffix(".npz"))
    assert data["samples"].shape == (6, 1, 8, 8) and data["labels"].tolist() == [0, 1, 2, 3, 4, 5]
    # 16-px tiles, 2-px separators, a 15-px caption strip above
    with Image.open(out.with_suffix(".png")) as grid:
        assert grid.size == (3 * 18 + 2, 2 * 18 + 2 + 15)
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["blocks_counted"] == 3 * 4 and info["seeds"] == [0, 5] and info["iters_run"] == [2, 2, 2]


def test_errors_name_the_problem(tmp_path, capsys):
    assert main(["train", "--model", "DiT-Q/2", "--out", str(tmp_path)]) == 2
    assert "unknown model 'DiT-Q/2'" in capsys.readouterr().err
    assert main(["sample", "--ckpt", str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r")]) == 2
    assert "nope" in capsys.readouterr().err


def test_resume_from_cli_uses_the_runs_own_data_and_settings(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(
                tmp_path / "imgs" / cls / f"{i}.png")
    run = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "imgs"), "--image-size", "8", "--model", "DiT-T/2", *TINY,
                 "--steps", "2", "--batch-size", "4", "--out", str(run), "--no-progress"]) == 0
    # No data/model flags: a resumed folder run must not fall back to the default (digits) data.
    assert main(["train", "--resume", "--out", str(run), "--steps", "3", "--no-progress"]) == 0
    assert json.loads((run / "summary.json").read_text())["step"] == 3
    summary = (run / "summary.json").read_bytes()
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(run), "--no-progress"]) == 0  # the run's own 3 steps
    assert "nothing to do" in capsys.readouterr().err
    assert (run / "summary.json").read_bytes() == summary  # the summary of the run that trained stays


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("tiny") / "run"
    assert main(["train", "--model", "FPDM-T/2", *TINY, "--steps", "2", "--batch-size", "8",
                 "--out", str(run), "--no-progress"]) == 0
    return run


@pytest.mark.parametrize("extra", [
    ["--iters", "2"],
    ["--steps", "4", "--profile", "increasing"],
    ["--steps", "3", "--profile", "decreasing", "--ratio", "5", "--solver", "anderson", "--tol", "0.5"],
    ["--steps", "4", "--profile", "released", "--reuse", "--tol", "0.5"],
    ["--steps", "5", "--solver", "anderson", "--reuse", "--cfg-scale", "3"],
    ["--iters", "1", "--sampler", "ddim", "--tol", "1e9"],
])
def test_sample_spends_the_budget_exactly(tiny_run, tmp_path, extra, capsys):
    out = tmp_path / "s"
    assert main(["sample", "--ckpt", str(tiny_run / "ckpt.pt"), "--budget", "24", *extra, "--seeds", "0-2",
                 "--out", str(out), "--no-progress"]) == 0
    rec = json.loads(out.with_suffix(".json").read_text())
    assert rec["blocks_counted"] == 24 and rec["blocks_counted_per_batch"] == [24]
    per_step = rec.get("iters_run_mean", rec["iters_run"])  # --tol: each sample's own iterations, averaged
    assert sum(per_step) + 2 * rec["steps"] == pytest.approx(24)  # pre + post = 2 per step
    assert len(rec["residuals"]) == rec["steps"]


def test_budget_errors_say_what_is_feasible(tiny_run, capsys):
    assert main(["sample", "--ckpt", str(tiny_run / "ckpt.pt"), "--budget", "25", "--iters", "2"]) == 2
    assert "feasible nearby: 24 (6 steps) or 28 (7 steps)" in capsys.readouterr().err
    assert main(["sample", "--ckpt", str(tiny_run / "ckpt.pt"), "--budget", "10", "--steps", "4"]) == 2
    assert "at most 3 steps fit" in capsys.readouterr().err


def test_budget_table_and_residual_plot(tiny_run, tmp_path, capsys):
    assert main(["budget-table", "--ckpt", str(tiny_run / "ckpt.pt"), "--budget", "24"]) == 0
    table = capsys.readouterr().out
    assert "         1      8      8           3" in table and "        22      1      1          24" in table
    assert main(["budget-table", "--ckpt", str(tiny_run / "ckpt.pt"), "--budget", "24", "--sampler",
                 "heun"]) == 0
    table = capsys.readouterr().out  # 3 evaluations of 8 blocks: 2 Heun steps
    assert "sampler heun" in table and "         6      2      3           8" in table
    out = tmp_path / "s"
    main(["sample", "--ckpt", str(tiny_run / "ckpt.pt"), "--budget", "24", "--iters", "2", "--seeds", "0",
          "--out", str(out), "--no-progress"])
    assert main(["plot-residuals", str(out.with_suffix(".json"))]) == 0
    assert Image.open(out.with_suffix(".residuals.png")).size[0] > 300


def test_sweep_writes_a_table(tiny_run, tmp_path, capsys):
    prefix = tmp_path / "sw"
    assert main(["sweep", "--ckpt", str(tiny_run / "ckpt.pt"), "--budget", "24", "--iters-list", "1,2,5",
                 "--seeds", "0-9", "--steps", "50", "--out", str(prefix), "--no-progress"]) == 2
    assert "drop --steps" in capsys.readouterr().err
    assert main(["sweep", "--ckpt", str(tiny_run / "ckpt.pt"), "--budget", "24", "--iters-list", "1,2,5",
                 "--seeds", "0-9", "--out", str(prefix), "--no-progress"]) == 0
    rows = json.loads(prefix.with_suffix(".json").read_text())["rows"]
    # k = 5 costs 7 blocks per step, which does not divide 24: skipped with a message
    assert [(r["iters"], r["steps"], r["blocks_counted"]) for r in rows] == [(1, 8, 24), (2, 6, 24)]
    assert all(0 <= r["class_consistency"] <= 1 for r in rows)
    assert "| iters | steps |" in prefix.with_suffix(".md").read_text()


def test_dit_budget_counts(tmp_path, capsys):
    run = tmp_path / "dit"
    assert main(["train", "--model", "DiT-T/2", *TINY, "--steps", "1", "--batch-size", "4", "--out", str(run),
                 "--no-progress"]) == 0
    for extra in ([], ["--cfg-scale", "2", "--sampler", "ddim"]):
        out = tmp_path / f"s{len(extra)}"
        assert main(["sample", "--ckpt", str(run / "ckpt.pt"), "--budget", "24", *extra, "--seeds", "0-2",
                     "--out", str(out), "--no-progress"]) == 0
        rec = json.loads(out.with_suffix(".json").read_text())
        assert (rec["steps"], rec["blocks_counted"]) == (6, 24)  # depth 4
    assert main(["sample", "--ckpt", str(run / "ckpt.pt"), "--budget", "24", "--iters", "2"]) == 2
    assert "FPDM checkpoints only" in capsys.readouterr().err


def test_results_of_other_settings_are_never_replaced_silently(tiny_run, tmp_path, capsys):
    ckpt, out = str(tiny_run / "ckpt.pt"), str(tmp_path / "s")
    base = ["sample", "--ckpt", ckpt, "--steps", "2", "--out", out, "--no-progress"]
    assert main([*base, "--seeds", "0-3"]) == 0
    first = (tmp_path / "s.npz").read_bytes()
    assert main([*base, "--seeds", "0-3"]) == 0  # the same settings: the same files, rewritten
    assert main([*base, "--seeds", "4-7"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "s.json holds results of other settings (seeds '0-3' → '4-7')" in err[0]
    assert "--overwrite" in err[0] and (tmp_path / "s.npz").read_bytes() == first
    assert main([*base, "--seeds", "4-7", "--overwrite"]) == 0
    assert json.loads((tmp_path / "s.json").read_text())["seeds"] == [4, 7]
    # default names hold the weights' name and every setting that changes the samples
    for extra, name in ((["--seeds", "0-1"], "run-ddpm-s2-seeds0-1"),
                        (["--seeds", "0-1", "--label", "3", "--sampler", "ddim", "--eta", "0.5"],
                         "run-ddim-s2-eta0.5-label3-seeds0-1"),
                        (["--seeds", "0,5", "--no-ema"], "run-ddpm-s2-raw-seeds0_5")):
        assert main(["sample", "--ckpt", ckpt, "--steps", "2", "--no-progress", *extra]) == 0
        assert (tiny_run / "samples" / f"{name}.json").exists(), name
    # wrong options are named before any clash with files already there
    capsys.readouterr()
    assert main([*base, "--seeds", "0-3", "--label", "10"]) == 2
    assert "--label 10 is out of range" in capsys.readouterr().err


def test_default_sample_names_tell_the_models_apart(tmp_path, monkeypatch):
    """Two built-ins (or two exports in one folder) sampled with the same settings do not share a file."""
    from fpdm.sampling.request import SampleRequest, model_label, sample_tag

    assert model_label("digits-fpdm") == "digits-fpdm" and model_label("release/sig") == "sig"
    assert model_label("runs/a/ckpt.pt") == "a" and model_label("runs/a/ckpt-5000.pt") == "a-ckpt-5000"
    assert model_label("DiT-XL-2-256x256.pt") == "DiT-XL-2-256x256"
    monkeypatch.chdir(tmp_path)
    for name in ("digits-fpdm", "digits-dit"):
        assert main(["sample", "--ckpt", name, "--budget", "24", "--seeds", "0-1", "--no-progress"]) == 0
    want = [f"{sample_tag(SampleRequest(ckpt=n, budget=24, seeds='0-1'))}.json"
            for n in ("digits-dit", "digits-fpdm")]
    assert sorted(p.name for p in (tmp_path / "samples").glob("*.json")) == want and want[0] != want[1]


def test_sweep_refuses_other_settings_and_keeps_finished_rows(tiny_run, tmp_path, capsys, monkeypatch):
    import fpdm.sampling.sweep as cli

    ckpt, out = str(tiny_run / "ckpt.pt"), str(tmp_path / "sw")
    base = ["sweep", "--ckpt", ckpt, "--budget", "24", "--iters-list", "2,4", "--seeds", "0-3", "--out", out,
            "--no-progress"]
    real = cli.sample_request
    calls = []

    def interrupted_at_second(a, model, diffusion, k, **kw):
        calls.append(k)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(a, model, diffusion, k, **kw)

    monkeypatch.setattr(cli, "sample_request", interrupted_at_second)
    assert main(base) == 130
    assert "1 finished row(s) kept" in capsys.readouterr().err
    monkeypatch.setattr(cli, "sample_request", lambda *args, **kw: calls.append(args[3]) or real(*args, **kw))
    assert main(base) == 0 and calls == [2, 4, 4]  # the rerun samples only the missing k
    rows = json.loads((tmp_path / "sw.json").read_text())["rows"]
    assert [r["iters"] for r in rows] == [2, 4] and "gflops_per_sample" in rows[0]
    (tmp_path / "sw-k8.png").write_bytes(b"stale")  # a grid left by an older sweep
    assert main([*base[:-5], "--seeds", "0-5", "--out", out, "--no-progress"]) == 2
    assert "sw.json holds a sweep with other settings; pass --overwrite" in capsys.readouterr().err
    assert main([*base[:-5], "--seeds", "0-5", "--out", out, "--no-progress", "--overwrite"]) == 0
    assert not (tmp_path / "sw-k8.png").exists()


def test_output_names_keep_dots(tiny_run, tmp_path, capsys):
    out = tmp_path / "run-tol0.1"
    assert main(["sample", "--ckpt", str(tiny_run / "ckpt.pt"), "--budget", "24", "--iters", "2",
                 "--seeds", "0", "--tol", "0.1", "--out", str(out), "--no-progress"]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["run-tol0.1.json", "run-tol0.1.npz", "run-tol0.1.png"]


def test_eval_command_and_sample_eval(tiny_run, tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["sample", "--ckpt", str(tiny_run / "ckpt.pt"), "--budget", "24", "--iters", "2",
                 "--seeds", "0-9", "--out", str(out), "--no-progress", "--eval"]) == 0
    rec = json.loads(out.with_suffix(".json").read_text())
    wanted = {"digits_fid", "digits_fid_se", "kid", "precision", "recall", "class_consistency"}
    assert wanted <= set(rec["eval"])
    assert main(["eval", str(out.with_suffix(".npz")), "--kid-subset-size", "5"]) == 0
    result = json.loads((tmp_path / "s.npz.eval.json").read_text())
    assert result["sampler"]["budget"] == 24 and result["num_samples"] == 10
    assert result["kid_subset_size"] == 5
    assert result["digits_fid"] > 0
    assert main(["eval", str(out.with_suffix(".npz")), "--ref", str(tmp_path), "--inception-weights",
                 str(tmp_path / "missing.pth")]) == 2
    assert "missing.pth" in capsys.readouterr().err


def test_sample_writes_adm_npz(tiny_run, tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["sample", "--ckpt", str(tiny_run / "ckpt.pt"), "--steps", "2", "--seeds", "0-2",
                 "--out", str(out), "--no-progress", "--adm-npz"]) == 0
    arr = np.load(f"{out}.adm.npz")["arr_0"]
    assert arr.shape == (3, 8, 8, 3) and arr.dtype == np.uint8


def test_interrupted_sampling_resumes_to_the_same_samples(tiny_run, tmp_path, monkeypatch, capsys):
    import fpdm.sampling.loop as sample_mod

    args = ["sample", "--ckpt", str(tiny_run / "ckpt.pt"), "--steps", "3", "--seeds", "0-6", "--batch-size",
            "2", "--no-progress", "--out"]
    assert main([*args, str(tmp_path / "straight")]) == 0
    real, calls = sample_mod.sample, []

    def interrupted(*a, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(sample_mod, "sample", interrupted)
    assert main([*args, str(tmp_path / "cut")]) == 130
    assert "2 finished batch(es) kept" in capsys.readouterr().err
    parts = tmp_path / "cut.parts"
    (parts / "0000006-0000007.pt").write_bytes(b"torn")  # an unreadable batch is sampled again, never counted
    calls.clear()
    assert main([*args, str(tmp_path / "cut")]) == 0
    assert len(calls) == 2 and not parts.exists()  # batches 2 and 3 (of 0..3) sampled, the rest loaded
    a, b = (np.load(tmp_path / f"{n}.npz") for n in ("straight", "cut"))
    assert np.array_equal(a["samples"], b["samples"]) and np.array_equal(a["seeds"], b["seeds"])


def test_resuming_sampling_with_other_settings_is_refused(tiny_run, tmp_path, capsys):
    (tmp_path / "s.parts").mkdir()
    (tmp_path / "s.parts" / "settings.json").write_text("{}")
    rc = main(["sample", "--ckpt", str(tiny_run / "ckpt.pt"), "--steps", "3", "--seeds", "0-1",
               "--no-progress", "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert rc == 2 and "holds batches of an interrupted run with other settings" in err
    assert "(ckpt, ema, labels, seeds, settings, steps differ)" in err  # it names them


@pytest.mark.parametrize("preset", sorted((Path(__file__).parent.parent / "configs").glob("*256*.json")),
                         ids=lambda p: p.stem)
def test_shipped_presets_are_valid(preset):
    from fpdm.training.request import TrainRequest, with_preset

    a = with_preset(TrainRequest(), preset)
    cfg = model_config(a.model, input_size=32, in_channels=4, num_classes=1000)
    assert cfg.hidden_size == 1152 and cfg.depth == 28 and a.batch_size == 512 and a.lr == 1e-4
    assert a.ema_decay == 0.9999 and a.device == "cuda"
    if cfg.arch == "fpdm":
        assert (a.fp_mode, a.fp_max_no_grad, a.fp_max_with_grad) == ("sjfb", 10, 12)


@pytest.mark.parametrize("preset", sorted((Path(__file__).parents[1] / "configs").glob("fashion32-*.json")),
                         ids=lambda p: p.stem)
def test_fashion_recipes_train_every_model_alike(preset):
    """The Fashion study compares models trained the same way: only the model and S-JFB range differ."""
    from fpdm.training.request import TrainRequest, with_preset

    a = with_preset(TrainRequest(), preset)
    cfg = model_config(a.model, input_size=32, in_channels=1, num_classes=10,
                       **({} if a.depth is None else {"depth": a.depth}))
    assert a.data == "fashion-mnist" and (cfg.hidden_size, cfg.num_heads, cfg.patch_size) == (128, 4, 4)
    assert (a.steps, a.batch_size, a.lr, a.lr_schedule, a.warmup_steps) == (10_000, 64, 1e-3, "cosine", 500)
    assert (a.ema_decay, a.keep_every) == (0.9995, 1000)
    assert cfg.depth == {"dit28": 28, "dit12": 12}.get(preset.stem.split("-")[1], 6)
    if cfg.arch == "fpdm":
        want = (10, 12) if "n10m12" in preset.stem else (3, 3)
        assert (a.fp_mode, a.fp_max_no_grad, a.fp_max_with_grad) == ("sjfb", *want)


def test_preset_with_command_line_override(tmp_path, capsys):
    preset = tmp_path / "p.json"
    preset.write_text(json.dumps({"_comment": "tiny", "model": "DiT-T/2", "hidden_size": 32, "depth": 4,
                                  "num_heads": 2, "batch_size": 8, "lr": 0.002, "steps": 3}))
    assert main(["train", "--config", str(preset), "--steps", "2", "--out", str(tmp_path / "r"),
                 "--no-progress"]) == 0
    state = torch.load(tmp_path / "r" / "ckpt.pt", weights_only=True)
    assert state["model_config"]["arch"] == "dit" and state["model_config"]["hidden_size"] == 32
    assert state["train_config"]["lr"] == 0.002 and state["step"] == 2  # --steps beat the preset's 3
    preset.write_text(json.dumps({"learning_rate": 1}))
    assert main(["train", "--config", str(preset), "--out", str(tmp_path / "x")]) == 2
    assert "unknown option 'learning_rate'" in capsys.readouterr().err


def test_sample_and_train_end_with_a_short_human_summary(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--model", "FPDM-T/2", *TINY, "--steps", "2", "--batch-size", "8",
                 "--out", str(run), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "parameters" in text and str(run / "ckpt.pt") in text and not text.lstrip().startswith("{")
    out = tmp_path / "s"
    assert main(["sample", "--ckpt", str(run / "ckpt.pt"), "--budget", "12", "--iters", "2", "--seeds", "0-3",
                 "--out", str(out), "--no-progress"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) <= 8 and not lines[0].lstrip().startswith("{")
    assert any("budget 12, counted 12 per sample" in ln for ln in lines)
    assert any(f"{out}.png" in ln for ln in lines) and any("GFLOP" in ln for ln in lines)


def test_reproduce_interrupted_exits_130_with_one_line(tmp_path, monkeypatch, capsys):
    import fpdm.studies.digits as reproduce

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(reproduce, "run", interrupted)
    assert main(["reproduce", "--scale", "tiny", "--study", "digits", "--out", str(tmp_path)]) == 130
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "run the same command again to resume" in err


def test_sampling_interrupted_before_any_batch_leaves_nothing(tiny_run, tmp_path, monkeypatch, capsys):
    import fpdm.sampling.loop as sample_mod

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(sample_mod, "sample", interrupted)
    assert main(["sample", "--ckpt", str(tiny_run / "ckpt.pt"), "--steps", "2", "--seeds", "0-3",
                 "--no-progress", "--out", str(tmp_path / "s")]) == 130
    assert "no batch had finished" in capsys.readouterr().err and not list(tmp_path.iterdir())


def test_threads_is_accepted_by_every_command_that_computes(tiny_run, tmp_path):
    ckpt = str(tiny_run / "ckpt.pt")
    assert main(["budget-table", "--ckpt", ckpt, "--budget", "24", "--threads", "1"]) == 0
    assert main(["sample", "--ckpt", ckpt, "--steps", "2", "--seeds", "0-3", "--out", str(tmp_path / "s"),
                 "--no-progress", "--threads", "1"]) == 0
    assert main(["plot-residuals", str(tmp_path / "s.json"), "--threads", "1"]) == 0
    assert main(["eval", str(tmp_path / "s.npz"), "--threads", "1"]) == 0


def test_the_sample_request_defaults_are_the_commands_defaults():
    """`fpdm.sampling.request.SampleRequest` documents the library call behind `sample` and `sweep`: its
    defaults must be the parsers' own."""
    from dataclasses import fields

    from fpdm.sampling.request import SampleRequest

    plain = SampleRequest(ckpt="x")
    for command in ("sample", "sweep"):
        a = build_parser().parse_args([command, "--ckpt", "x"])
        for f in fields(SampleRequest):
            if hasattr(a, f.name):
                assert getattr(a, f.name) == getattr(plain, f.name), (command, f.name)
        assert SampleRequest.from_options(a) == plain


def test_the_train_request_defaults_are_the_commands_defaults():
    """`fpdm.training.request.TrainRequest` is the library call behind `train`: its fields are the parser's
    options (all of them but the command's own: --config, --threads) with the parser's defaults."""
    from dataclasses import fields

    from fpdm.training.request import TrainRequest

    a = vars(build_parser().parse_args(["train"]))
    names = {f.name for f in fields(TrainRequest)}
    assert set(a) - names == {"config", "threads", "func", "command"}
    assert TrainRequest.from_options(build_parser().parse_args(["train"])) == TrainRequest()
    for f in fields(TrainRequest):
        assert a[f.name] == f.default, f.name


def test_files_say_which_versions_and_command_made_them(tiny_run, tmp_path, capsys, monkeypatch):
    """Checkpoints, sample records, exports and eval results carry the fpdm and torch versions and the
    command line; `fpdm --version` prints both versions."""
    import torch

    from fpdm.common.checkpoint import load_checkpoint
    from fpdm.version import __version__

    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"fpdm {__version__} (torch {torch.__version__})"
    argv = ["sample", "--ckpt", str(tiny_run / "ckpt.pt"), "--steps", "2", "--seeds", "0-7", "--out",
            str(tmp_path / "s"), "--no-progress"]
    monkeypatch.setattr("sys.argv", ["/usr/bin/fpdm", *argv])
    assert main(argv) == 0
    assert main(["export", "--ckpt", str(tiny_run / "ckpt.pt"), "--out", str(tmp_path / "e")]) == 0
    assert main(["eval", str(tmp_path / "s.npz")]) == 0
    files = [load_checkpoint(tiny_run / "ckpt.pt")] + [json.loads(p.read_text()) for p in
                                                       (tmp_path / "s.json", tmp_path / "e" / "config.json",
                                                        tmp_path / "s.npz.eval.json")]
    for f in files:
        assert (f["fpdm_version"], f["torch_version"]) == (__version__, str(torch.__version__))
        assert f["command"]
    assert json.loads((tmp_path / "s.json").read_text())["command"].startswith("fpdm sample --ckpt")


def test_a_new_run_says_what_it_found_in_its_data(tmp_path, capsys):
    """`fpdm train` on a folder: one line with the image count, size, channels and classes."""
    from PIL import Image

    for cls in ("cat", "dog"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (12, 12), (40 * i, 0, 0)).save(tmp_path / "imgs" / cls / f"{i}.png")
    assert main(["train", "--data", str(tmp_path / "imgs"), "--model", "DiT-T/2", *TINY, "--steps", "1",
                 "--batch-size", "2", "--out", str(tmp_path / "r"), "--no-progress"]) == 0
    assert f"data  {tmp_path / 'imgs'}: 6 images, 12×12 RGB, 2 classes (cat, dog)" in capsys.readouterr().err


def test_init_from_fine_tunes_other_weights(tiny_run, tmp_path, capsys):
    """--init-from starts from a checkpoint's EMA weights (or an export, an official file, a built-in) with
    a fresh optimizer and the new --lr; weights of another architecture are named, not half-loaded."""
    from fpdm.common.checkpoint import load_checkpoint

    src = load_checkpoint(tiny_run / "ckpt.pt")
    out = tmp_path / "ft"
    assert main(["train", "--model", "FPDM-T/2", *TINY, "--steps", "1", "--batch-size", "8", "--lr", "1e-9",
                 "--warmup-steps", "0", "--init-from", str(tiny_run / "ckpt.pt"), "--out", str(out),
                 "--no-progress"]) == 0
    state = load_checkpoint(out / "ckpt.pt")
    cfg = state["train_config"]
    assert (cfg["init_from"], cfg["lr"]) == (str(tiny_run / "ckpt.pt"), 1e-9)
    moved = max((state["model"][k] - src["ema"][k]).abs().max().item() for k in src["ema"])
    assert moved < 1e-6  # one step at lr 1e-9 from the source's EMA weights
    assert [s["step"] for s in state["optimizer"]["state"].values()][0] == 1  # a fresh optimizer
    capsys.readouterr()
    assert main(["train", "--model", "DiT-T/2", *TINY, "--steps", "1", "--init-from",
                 str(tiny_run / "ckpt.pt"), "--out", str(tmp_path / "bad"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--init-from" in err and "do not fit this model" in err and not (tmp_path / "bad").exists()


def test_a_folder_run_resumes_from_anywhere(tmp_path, monkeypatch):
    """The run stores its image folder as an absolute path: `--resume` works from another directory, and
    the folder given again as an absolute path is the same data, not a disagreement."""
    from PIL import Image

    from fpdm.common.checkpoint import load_checkpoint

    for cls in ("cat", "dog"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp_path / "imgs" / cls / f"{i}.png")
    monkeypatch.chdir(tmp_path)
    base = ["--model", "DiT-T/2", *TINY, "--batch-size", "2", "--out", str(tmp_path / "r"), "--no-progress"]
    assert main(["train", "--data", "imgs", "--steps", "1", *base]) == 0
    assert load_checkpoint(tmp_path / "r" / "ckpt.pt")["train_config"]["data"] == str(tmp_path / "imgs")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert main(["train", "--resume", "--steps", "2", "--out", str(tmp_path / "r"), "--no-progress"]) == 0
    assert main(["train", "--resume", "--steps", "3", "--data", str(tmp_path / "imgs"), "--out",
                 str(tmp_path / "r"), "--no-progress"]) == 0
    assert load_checkpoint(tmp_path / "r" / "ckpt.pt")["step"] == 3


def test_a_moved_data_folder_is_recognised_by_its_digest(tmp_path, capsys):
    from PIL import Image

    from fpdm.common.checkpoint import load_checkpoint

    def folder(path, shade):
        for cls in ("cat", "dog"):
            (path / cls).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (8, 8), (shade * i, 0, 0)).save(path / cls / f"{i}.png")

    folder(tmp_path / "imgs", 40)
    base = ["--out", str(tmp_path / "r"), "--no-progress"]
    assert main(["train", "--data", str(tmp_path / "imgs"), "--model", "DiT-T/2", *TINY, "--batch-size", "2",
                 "--steps", "1", *base]) == 0
    (tmp_path / "imgs").rename(tmp_path / "moved")
    folder(tmp_path / "other", 50)  # the same count and classes, other pixels
    capsys.readouterr()
    assert main(["train", "--resume", "--steps", "2", "--data", str(tmp_path / "other"), *base]) == 2
    assert "is not the data the run was started with" in capsys.readouterr().err
    assert main(["train", "--resume", "--steps", "2", "--data", str(tmp_path / "moved"), *base]) == 0
    state = load_checkpoint(tmp_path / "r" / "ckpt.pt")
    assert state["step"] == 2 and state["train_config"]["data"] == str(tmp_path / "moved")
    assert main(["train", "--resume", "--steps", "3", *base]) == 0  # the new place is the run's from now on
