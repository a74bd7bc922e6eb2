"""A training step's gradients in micro-batches (`--grad-accum`) and the memory check before a run."""

import json
import math

import pytest
import torch

from fpdm.cli import main
from fpdm.common.checkpoint import load_checkpoint
from fpdm.config import DiffusionConfig, TrainConfig
from fpdm.data.datasets import load_dataset
from fpdm.diffusion.gaussian import make_diffusion
from fpdm.fixed_point.solvers import IterationPlan
from fpdm.models.registry import build_model, model_config
from fpdm.training.loop import resume, train
from fpdm.training.step import backward, check_memory

DIGITS = load_dataset("digits", split="train")
SUBSET = type(DIGITS).__new__(type(DIGITS))
SUBSET.__dict__.update(DIGITS.__dict__)
SUBSET.images, SUBSET.labels = DIGITS.images[:40], DIGITS.labels[:40]


def _model_cfg(arch: str):
    return model_config(f"{arch}-T/2", input_size=8, in_channels=1, num_classes=10, hidden_size=32, depth=4,
                        num_heads=2)


def _grads(model, accum, x0, y, t, noise, kw):
    diffusion = make_diffusion(DiffusionConfig(), True)
    model.zero_grad(set_to_none=True)
    loss, terms = backward(model, diffusion, x0, y, t, noise, kw, accum)
    return loss, terms, [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("arch", ["FPDM", "DiT"])
def test_micro_batches_give_the_whole_batch_gradient(arch):
    torch.manual_seed(0)
    model = build_model(_model_cfg(arch)).train()
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.rand(7, 1, 8, 8, generator=g) * 2 - 1, torch.randn(7, 1, 8, 8, generator=g)
    y, t = torch.arange(7), torch.randint(0, 1000, (7,), generator=g)
    kw = {"iters": IterationPlan(2, 2)} if arch == "FPDM" else {}
    loss1, terms1, whole = _grads(model, 1, x0, y, t, noise, kw)
    loss3, terms3, split = _grads(model, 3, x0, y, t, noise, kw)  # 7 rows: micro-batches of 3, 2 and 2
    torch.testing.assert_close(loss3, loss1, rtol=1e-6, atol=0)
    assert terms3.keys() == terms1.keys()
    for a, b in zip(split, whole, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)  # float32 sums in another order


def test_a_run_with_grad_accum_trains_the_same_model(tmp_path):
    cfg = dict(steps=3, batch_size=16, warmup_steps=2, log_every=1, ckpt_every=100)
    train(TrainConfig(out_dir=str(tmp_path / "one"), **cfg), _model_cfg("FPDM"), dataset=SUBSET,
          progress=False)
    train(TrainConfig(out_dir=str(tmp_path / "four"), grad_accum=4, **cfg), _model_cfg("FPDM"),
          dataset=SUBSET, progress=False)
    logs = [[json.loads(r) for r in (tmp_path / d / "log.jsonl").read_text().splitlines()]
            for d in ("one", "four")]
    assert [r["iters"] for r in logs[0]] == [r["iters"] for r in logs[1]]  # the same plans, data and noise
    for a, b in zip(*logs, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    one, four = (load_checkpoint(tmp_path / d / "ckpt.pt")["model"] for d in ("one", "four"))
    for k in one:
        torch.testing.assert_close(four[k], one[k], rtol=0, atol=1e-5)


def test_grad_accum_may_change_on_resume_and_is_checked(tmp_path):
    cfg = TrainConfig(out_dir=str(tmp_path), steps=2, batch_size=8, warmup_steps=1, log_every=1)
    train(cfg, _model_cfg("DiT"), dataset=SUBSET, progress=False)
    resume(tmp_path, steps=3, grad_accum=2, dataset=SUBSET, progress=False)
    assert load_checkpoint(tmp_path / "ckpt.pt")["train_config"]["grad_accum"] == 2
    with pytest.raises(ValueError, match="--grad-accum 9 exceeds the 8 images"):
        train(TrainConfig(out_dir=str(tmp_path / "x"), steps=1, batch_size=8, grad_accum=9),
              _model_cfg("DiT"), dataset=SUBSET, progress=False)
    with pytest.raises(ValueError, match="--grad-accum must be >= 1"):
        TrainConfig(grad_accum=0)


def test_a_step_that_cannot_fit_is_refused_with_the_accumulation_that_would():
    torch.manual_seed(0)
    mc = _model_cfg("FPDM")
    model = build_model(mc).train()
    diffusion = make_diffusion(DiffusionConfig(), True)
    cfg = TrainConfig(batch_size=4096)
    fits = check_memory(model, diffusion, mc, cfg, torch.device("cpu"), 4096, available=2**40)
    assert fits["per_sample"] > 0 and fits["need"] > 4096 * fits["per_sample"]
    assert all(p.grad is None for p in model.parameters())  # the probe leaves no gradients behind
    with pytest.raises(MemoryError, match=r"--batch-size 4096: .* use --grad-accum (\d+)") as caught:
        check_memory(model, diffusion, mc, cfg, torch.device("cpu"), 4096, available=fits["need"] // 3)
    n = int(caught.value.args[0].split("--grad-accum ")[1].split()[0])
    assert n >= 3  # and that advice fits
    check_memory(model, diffusion, mc, TrainConfig(batch_size=4096, grad_accum=n), torch.device("cpu"), 4096,
                 available=fits["need"] // 3)


def test_train_refuses_a_batch_no_machine_holds_before_writing_anything(tmp_path, capsys):
    out = tmp_path / "huge"
    assert main(["train", "--data", "digits", "--out", str(out), "--batch-size", "100000000", "--steps", "1",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--batch-size 100000000: a training step needs at least" in err and "is available" in err
    assert not out.exists()  # no folder, lock or log behind


def test_tensorboard_holds_the_log_figures_and_grids_across_a_resume(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = dict(steps=4, batch_size=8, warmup_steps=1, log_every=1, sample_every=2, sample_count=4,
               sample_steps=2, tensorboard=True)
    train(TrainConfig(out_dir=str(tmp_path), **cfg), _model_cfg("DiT"), dataset=SUBSET, progress=False)
    resume(tmp_path, steps=6, dataset=SUBSET, progress=False)
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    log = [json.loads(r) for r in (tmp_path / "log.jsonl").read_text().splitlines()]
    losses = [r for r in log if "sample" not in r]
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == [r["step"] for r in losses] == [1, 2, 3, 4, 5, 6]
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in losses], rel=1e-6)
    assert [e.step for e in events.Images("samples")] == [2, 4, 6]
    assert "sample/blocks" in events.Tags()["scalars"]


def test_tensorboard_without_its_package_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if the [tb] extra were absent
    with pytest.raises(ImportError, match=r"needs the tensorboard package: pip install 'fpdm\[tb\]'"):
        train(TrainConfig(out_dir=str(tmp_path / "r"), steps=1, batch_size=8, tensorboard=True),
              _model_cfg("DiT"), dataset=SUBSET, progress=False)
    assert not (tmp_path / "r").exists()


def test_the_cosine_learning_rate_warms_up_then_halves_at_mid_course_and_ends_at_zero():
    from fpdm.training.loop import lr_at

    cfg = TrainConfig(lr=1.0, warmup_steps=10, lr_schedule="cosine", steps=110, lr_decay_steps=110)
    lrs = [lr_at(s, cfg) for s in range(111)]
    assert lrs[:3] == [0.1, 0.2, 0.3] and lrs[9] == 1.0 and lrs[10] == 1.0  # warm-up, then the peak
    assert lrs[60] == pytest.approx(0.5) and lrs[110] == pytest.approx(0.0, abs=1e-12)
    assert lrs[35] == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))  # a cosine: 0.854 a quarter in
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))  # decays monotonically
    assert lr_at(60, TrainConfig(lr=1.0, warmup_steps=10, steps=110)) == 1.0  # constant (DiT's) stays
