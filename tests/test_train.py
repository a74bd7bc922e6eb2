import json
import os
import signal

import pytest
import torch

import fpdm.training.loop as train_mod
from fpdm.common.checkpoint import load_checkpoint
from fpdm.config import TrainConfig
from fpdm.data.datasets import load_dataset
from fpdm.models.registry import model_config
from fpdm.training.loop import BatchStream, ema_decay_at, lr_at, resume, train
from fpdm.training.request import check_resume_settings

DIGITS = load_dataset("digits", split="train")
SUBSET = type(DIGITS).__new__(type(DIGITS))
SUBSET.__dict__.update(DIGITS.__dict__)
SUBSET.images, SUBSET.labels = DIGITS.images[:40], DIGITS.labels[:40]  # 40 images: epochs wrap quickly


def _model(arch: str):
    return model_config(f"{arch}-T/2", input_size=8, in_channels=1, num_classes=10, hidden_size=32, depth=4,
                        num_heads=2)


def _cfg(out, steps, **kw):
    return TrainConfig(out_dir=str(out), steps=steps, batch_size=16, warmup_steps=2, log_every=1,
                       **{"ckpt_every": 100, **kw})


def test_batch_stream_epochs_and_state():
    s = BatchStream(10, 4, seed=0)
    first = torch.cat([s.next() for _ in range(5)])  # 20 draws = two full epochs
    assert sorted(first[:10].tolist()) == list(range(10)) and sorted(first[10:].tolist()) == list(range(10))
    state = s.state_dict()
    a = [s.next() for _ in range(4)]
    s2 = BatchStream(10, 4, seed=123)
    s2.load_state_dict(state)
    assert all(torch.equal(x, y) for x, y in zip(a, [s2.next() for _ in range(4)], strict=True))


def test_warmup():
    cfg = TrainConfig(lr=1.0, warmup_steps=4)
    assert [lr_at(s, cfg) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_ema_decay_warmup():
    cfg = TrainConfig(ema_decay=0.999)
    assert ema_decay_at(0, cfg) == 0.1 and ema_decay_at(90, cfg) == 0.91 and ema_decay_at(10**6, cfg) == 0.999


def _states_equal(a: dict, b: dict) -> None:
    for key in ("model", "ema"):
        assert a[key].keys() == b[key].keys()
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), f"{key}.{k} differs"
    oa, ob = a["optimizer"]["state"], b["optimizer"]["state"]
    assert oa.keys() == ob.keys()
    for i in oa:
        for k in oa[i]:
            assert torch.equal(torch.as_tensor(oa[i][k]), torch.as_tensor(ob[i][k])), f"optimizer {i}.{k}"
    assert a["step"] == b["step"]


@pytest.mark.parametrize("arch", ["FPDM", "DiT"])
def test_resume_is_bit_exact(tmp_path, arch, kernels):
    train(_cfg(tmp_path / "straight", 8), _model(arch), dataset=SUBSET, progress=False)
    train(_cfg(tmp_path / "halves", 4), _model(arch), dataset=SUBSET, progress=False)
    resume(tmp_path / "halves", steps=8, dataset=SUBSET, progress=False)
    a = load_checkpoint(tmp_path / "straight" / "ckpt.pt")
    b = load_checkpoint(tmp_path / "halves" / "ckpt.pt")
    _states_equal(a, b)
    log_a = (tmp_path / "straight" / "log.jsonl").read_text().splitlines()
    log_b = (tmp_path / "halves" / "log.jsonl").read_text().splitlines()
    strip = [{k: v for k, v in json.loads(line).items() if k != "ms_per_step"} for line in log_a]
    assert strip == [{k: v for k, v in json.loads(line).items() if k != "ms_per_step"} for line in log_b]


def test_sigint_saves_and_resumes_exactly(tmp_path, monkeypatch, kernels):
    train(_cfg(tmp_path / "straight", 6), _model("FPDM"), dataset=SUBSET, progress=False)
    calls = {"n": 0}
    real_update = train_mod.update_ema

    def interrupt_at_third(ema, model, decay):
        real_update(ema, model, decay)
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C would, mid-run

    monkeypatch.setattr(train_mod, "update_ema", interrupt_at_third)
    summary = train(_cfg(tmp_path / "cut", 6), _model("FPDM"), dataset=SUBSET, progress=False)
    assert summary["interrupted"] and summary["step"] == 3
    monkeypatch.setattr(train_mod, "update_ema", real_update)
    resume(tmp_path / "cut", dataset=SUBSET, progress=False)  # the run's own 6 steps
    straight, cut = (load_checkpoint(tmp_path / d / "ckpt.pt") for d in ("straight", "cut"))
    _states_equal(straight, cut)


def _flip(path, at=0.6, n=64):
    b = bytearray(path.read_bytes())
    start = int(len(b) * at)
    b[start:start + n] = bytes(x ^ 0xFF for x in b[start:start + n])  # the 64 flipped bytes
    path.write_bytes(bytes(b))


def test_keep_last_rotates_and_a_damaged_checkpoint_falls_back_only_when_asked(tmp_path):
    train(_cfg(tmp_path / "straight", 6), _model("FPDM"), dataset=SUBSET, progress=False)
    run = tmp_path / "run"
    train(_cfg(run, 4, ckpt_every=1, keep_last=2), _model("FPDM"), dataset=SUBSET, progress=False)
    steps = {p.name: load_checkpoint(p)["step"] for p in run.glob("ckpt*.pt")}
    assert steps == {"ckpt.pt": 4, "ckpt.prev1.pt": 3, "ckpt.prev2.pt": 2}
    _flip(run / "ckpt.pt")
    with pytest.raises(ValueError, match=r"ckpt.pt is damaged: tensor \S+ does not match .*ckpt.prev1.pt "
                                         r"\(step 3\) is intact: add --fallback"):
        resume(run, steps=6, dataset=SUBSET, progress=False)
    with pytest.raises(ValueError, match="ckpt.pt is damaged"):
        check_resume_settings(run, {"lr": 1e-3})  # the CLI's check meets the damage first
    check_resume_settings(run, {"lr": 1e-3}, fallback=True)  # checks the fallback's settings…
    assert (run / "ckpt.pt").exists() and not (run / "ckpt.pt.damaged").exists()  # …and moves nothing
    resume(run, steps=6, fallback=True, dataset=SUBSET, progress=False)
    _states_equal(load_checkpoint(tmp_path / "straight" / "ckpt.pt"), load_checkpoint(run / "ckpt.pt"))
    steps = {p.name: load_checkpoint(p)["step"] for p in run.glob("ckpt*.pt")}
    assert steps == {"ckpt.pt": 6, "ckpt.prev1.pt": 5, "ckpt.prev2.pt": 4}  # the damaged one not among them
    assert (run / "ckpt.pt.damaged").exists()
    resume(run, steps=7, keep_last=0, dataset=SUBSET, progress=False)
    assert sorted(p.name for p in run.glob("ckpt*.pt")) == ["ckpt.pt"]


def test_fallback_needs_an_intact_earlier_checkpoint(tmp_path):
    train(_cfg(tmp_path, 2, ckpt_every=1, keep_last=0), _model("DiT"), dataset=SUBSET, progress=False)
    _flip(tmp_path / "ckpt.pt")
    with pytest.raises(ValueError, match="is damaged.*no earlier checkpoint is kept"):
        resume(tmp_path, fallback=True, dataset=SUBSET, progress=False)


def test_refuses_to_overwrite_and_needs_checkpoint_to_resume(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        resume(tmp_path, dataset=SUBSET, progress=False)
    train(_cfg(tmp_path, 1), _model("DiT"), dataset=SUBSET, progress=False)
    with pytest.raises(FileExistsError, match="--resume"):
        train(_cfg(tmp_path, 1), _model("DiT"), dataset=SUBSET, progress=False)


def test_model_must_fit_data(tmp_path):
    bad = model_config("DiT-T/2", input_size=16, in_channels=1, num_classes=10, hidden_size=32, depth=2,
                       num_heads=2)
    with pytest.raises(ValueError, match="model expects"):
        train(_cfg(tmp_path, 1), bad, dataset=SUBSET, progress=False)


def test_checkpoint_is_self_describing(tmp_path):
    train(_cfg(tmp_path, 2, fp_mode="multistep"), _model("FPDM"), dataset=SUBSET, progress=False)
    ck = load_checkpoint(tmp_path / "ckpt.pt")
    assert ck["model_config"]["hidden_size"] == 32 and ck["train_config"]["fp_mode"] == "multistep"
    assert ck["step"] == 2 and {"rng", "generator", "batches", "optimizer", "ema"} <= ck.keys()
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2] and all(r["loss"] > 0 for r in records)


def test_resume_refuses_changed_data(tmp_path):
    train(_cfg(tmp_path, 2), _model("DiT"), dataset=SUBSET, progress=False)
    smaller = type(SUBSET).__new__(type(SUBSET))
    smaller.__dict__.update(SUBSET.__dict__)
    smaller.images, smaller.labels = SUBSET.images[:30], SUBSET.labels[:30]
    with pytest.raises(ValueError, match="30 training images, the run was started with 40"):
        resume(tmp_path, steps=3, dataset=smaller, progress=False)


@pytest.mark.parametrize("arch", ["FPDM", "DiT"])
def test_grad_checkpoint_trains_bit_identically(tmp_path, arch):
    train(_cfg(tmp_path / "plain", 4), _model(arch), dataset=SUBSET, progress=False)
    train(_cfg(tmp_path / "ckpt", 4, grad_checkpoint=True), _model(arch), dataset=SUBSET, progress=False)
    plain, ckpt = (load_checkpoint(tmp_path / name / "ckpt.pt") for name in ("plain", "ckpt"))
    _states_equal(plain, ckpt)


def test_bf16_autocast_trains_close_to_fp32(tmp_path):
    train(_cfg(tmp_path / "fp32", 3), _model("FPDM"), dataset=SUBSET, progress=False)
    train(_cfg(tmp_path / "bf16", 3, precision="bf16"), _model("FPDM"), dataset=SUBSET, progress=False)
    a = [json.loads(line)["loss"] for line in (tmp_path / "fp32" / "log.jsonl").read_text().splitlines()]
    b = [json.loads(line)["loss"] for line in (tmp_path / "bf16" / "log.jsonl").read_text().splitlines()]
    assert a != b and all(abs(x - y) < 0.05 * x for x, y in zip(a, b, strict=True))
    state = load_checkpoint(tmp_path / "bf16" / "ckpt.pt")
    assert all(v.dtype == torch.float32 for v in state["model"].values() if v.is_floating_point())


def test_bad_precision_named():
    with pytest.raises(ValueError, match="--precision must be one of"):
        TrainConfig(precision="fp16")


def test_non_finite_loss_stops_and_keeps_good_state(tmp_path):
    bad = type(SUBSET).__new__(type(SUBSET))
    bad.__dict__.update(SUBSET.__dict__)
    bad.images = SUBSET.images.clone()
    bad.images[:] = float("nan")
    with pytest.raises(FloatingPointError, match="loss is nan at step 0"):
        train(_cfg(tmp_path / "r", 4), _model("FPDM"), dataset=bad, progress=False)
    state = load_checkpoint(tmp_path / "r" / "ckpt.pt")
    assert state["step"] == 0 and all(torch.isfinite(v).all() for v in state["model"].values())


def test_non_finite_gradient_stops_before_the_update(tmp_path, monkeypatch):
    train(_cfg(tmp_path / "two", 2), _model("FPDM"), dataset=SUBSET, progress=False)
    real, calls = torch.nn.utils.clip_grad_norm_, []

    def clip(params, max_norm):
        calls.append(1)
        norm = real(params, max_norm)
        return norm * float("inf") if len(calls) == 3 else norm

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    with pytest.raises(FloatingPointError, match="gradient norm is inf at step 2"):
        train(_cfg(tmp_path / "r", 4), _model("FPDM"), dataset=SUBSET, progress=False)
    a, b = load_checkpoint(tmp_path / "two" / "ckpt.pt"), load_checkpoint(tmp_path / "r" / "ckpt.pt")
    assert b["step"] == 2
    for k in a["model"]:  # the state before the bad update, exactly
        assert torch.equal(a["model"][k], b["model"][k])


# The child dies (os._exit: no cleanup, no finally) at a chosen point of its 3rd checkpoint write.
_CRASH = """
import io, os, sys
import torch
import fpdm.common.checkpoint as c
point, writes, real_save = sys.argv[1], [0], torch.save

def nth():
    writes[0] += 1
    return writes[0] == 3

def save(obj, f):
    if point == "mid-file" and nth():
        buf = io.BytesIO()
        real_save(obj, buf)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        f.flush()
        os._exit(137)
    real_save(obj, f)

def replace(src, dst):
    if point == "before-rename" and nth():
        os._exit(137)
    os.rename(src, dst)

def fsync_dir(d):
    if point == "after-rename" and nth():
        os._exit(137)

torch.save, c.os.replace, c._fsync_dir = save, replace, fsync_dir
from fpdm.cli.app import main
sys.exit(main(sys.argv[2:]))
"""


# --keep-last 0: the crash points counted below are those of one atomic write (the rotation of kept
# checkpoints adds renames of its own; random kills across it are the SIGKILL test's)
_CRASH_ARGS = ["train", "--model", "FPDM-T/2", "--hidden-size", "32", "--depth", "4", "--num-heads", "2",
               "--steps", "6", "--batch-size", "16", "--warmup-steps", "2", "--ckpt-every", "1",
               "--log-every", "1", "--no-progress", "--threads", "1", "--keep-last", "0"]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("straight")
    subprocess.run([sys.executable, "-m", "fpdm.cli", *_CRASH_ARGS, "--out", str(out)], check=True,
                   capture_output=True)
    return out


@pytest.mark.parametrize("point", ["mid-file", "before-rename", "after-rename"])
def test_crash_at_each_point_of_a_checkpoint_write_then_resume_is_bit_exact(tmp_path, point, straight_run):
    """A checkpoint write cut short at any point leaves either the previous checkpoint or the new one,
    never a torn file under the real name; resuming gives the uninterrupted run bit for bit."""
    import subprocess
    import sys

    args, straight, out = _CRASH_ARGS, straight_run, tmp_path / "crashed"
    crashed = subprocess.run([sys.executable, "-c", _CRASH, point, *args, "--out", str(out)],
                             capture_output=True)
    assert crashed.returncode == 137, crashed.stderr.decode()[-2000:]
    # what a crash leaves: the 3rd write's temp file (unless renamed), and the step-2 or step-3 checkpoint
    temps = list(out.glob(".ckpt.pt.*.tmp"))
    assert len(temps) == (0 if point == "after-rename" else 1)
    assert load_checkpoint(out / "ckpt.pt")["step"] == (3 if point == "after-rename" else 2)
    subprocess.run([sys.executable, "-m", "fpdm.cli", *args, "--out", str(out), "--resume"], check=True,
                   capture_output=True)
    _states_equal(load_checkpoint(straight / "ckpt.pt"), load_checkpoint(out / "ckpt.pt"))
    logs = [[{k: v for k, v in json.loads(line).items() if k != "ms_per_step"}
             for line in (d / "log.jsonl").read_text().splitlines()] for d in (straight, out)]
    assert logs[0] == logs[1]
    assert not list(out.glob(".ckpt.pt.*.tmp"))


def test_sigkill_at_random_moments_then_resume_is_bit_exact(tmp_path):
    """Smoke test (the crash points are tested one by one above): kill -9 training (a checkpoint is written
    every step) twice at random moments, resume each time: the result equals an uninterrupted run's."""
    import random
    import subprocess
    import sys
    import time

    cmd = [sys.executable, "-m", "fpdm.cli", "train", "--model", "FPDM-T/2",
           "--hidden-size", "32", "--depth",
           "4", "--num-heads", "2", "--steps", "60", "--batch-size", "16", "--warmup-steps", "5",
           "--ckpt-every", "1", "--log-every", "1", "--no-progress", "--threads", "1"]
    subprocess.run([*cmd, "--out", str(tmp_path / "straight")], check=True, capture_output=True)
    out, ckpt = tmp_path / "killed", tmp_path / "killed" / "ckpt.pt"
    rng, kills = random.Random(0), 0
    while True:
        start_mtime = ckpt.stat().st_mtime_ns if ckpt.exists() else None
        proc = subprocess.Popen([*cmd, "--out", str(out), *(["--resume"] if start_mtime else [])],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if kills < 2:
            while proc.poll() is None and (not ckpt.exists() or ckpt.stat().st_mtime_ns == start_mtime):
                time.sleep(0.005)  # wait until this process has written a checkpoint of its own
            time.sleep(rng.uniform(0.0, 0.25))
            if proc.poll() is None:
                proc.kill()
                proc.wait()
                kills += 1
                continue
        assert proc.wait() == 0
        if load_checkpoint(ckpt)["step"] == 60:
            break
    assert kills == 2
    _states_equal(load_checkpoint(tmp_path / "straight" / "ckpt.pt"), load_checkpoint(ckpt))
    logs = [[{k: v for k, v in json.loads(line).items() if k != "ms_per_step"}
             for line in (tmp_path / d / "log.jsonl").read_text().splitlines()]
            for d in ("straight", "killed")]
    assert logs[0] == logs[1]
    assert not list(out.glob(".ckpt.pt.*.tmp"))


@pytest.mark.parametrize("arch", ["FPDM", "DiT"])
def test_same_seed_same_curve_and_samples(tmp_path, arch):
    from fpdm.sampling.loop import sample
    from fpdm.weights.loading import load_model

    for name in ("a", "b"):
        train(_cfg(tmp_path / name, 5), _model(arch), dataset=SUBSET, progress=False)
    logs = [[{k: v for k, v in json.loads(line).items() if k != "ms_per_step"}
             for line in (tmp_path / n / "log.jsonl").read_text().splitlines()] for n in ("a", "b")]
    assert len(logs[0]) == 5 and logs[0] == logs[1]
    _states_equal(*(load_checkpoint(tmp_path / n / "ckpt.pt") for n in ("a", "b")))
    xs = []
    for n in ("a", "b"):
        model, diffusion, _ = load_model(tmp_path / n / "ckpt.pt")
        xs.append(sample(model, diffusion, torch.tensor([3, 4]), [7, 8], steps=4)[0])
    assert torch.equal(*xs)
    train(_cfg(tmp_path / "c", 5, seed=1), _model(arch), dataset=SUBSET, progress=False)
    other = [json.loads(line)["loss"] for line in (tmp_path / "c" / "log.jsonl").read_text().splitlines()]
    assert other != [r["loss"] for r in logs[0]]  # the seed matters, so the equality above is not vacuous


def test_keep_every_keeps_the_checkpoints_of_a_shorter_run(tmp_path):
    # the kept step-2 checkpoint of a 4-step run is the 2-step run's final one (a FID-vs-step curve needs it)
    train(_cfg(tmp_path / "long", 4, keep_every=2), _model("FPDM"), dataset=SUBSET, progress=False)
    train(_cfg(tmp_path / "short", 2), _model("FPDM"), dataset=SUBSET, progress=False)
    kept = sorted(p.name for p in (tmp_path / "long").glob("ckpt-*.pt"))
    assert kept == ["ckpt-0000002.pt", "ckpt-0000004.pt"]
    two = load_checkpoint(tmp_path / "long" / "ckpt-0000002.pt")
    assert two["step"] == 2
    _states_equal(two, load_checkpoint(tmp_path / "short" / "ckpt.pt"))
    assert load_checkpoint(tmp_path / "long" / "ckpt-0000004.pt")["step"] == 4
    assert not list((tmp_path / "short").glob("ckpt-*.pt"))  # off by default
    with pytest.raises(ValueError, match="--keep-every"):
        TrainConfig(keep_every=-1)


@pytest.mark.parametrize("mode", ["sjfb", "jfb", "multistep", "backprop"])
def test_the_drawn_plan_is_what_the_model_runs(tmp_path, monkeypatch, mode):
    # S-JFB is the training algorithm: the plan drawn each step must reach the fixed-point solve unchanged,
    # and the model must run exactly its iterations (counted at the solve, independently of the plan object)
    import fpdm.fixed_point.solvers as fp

    drawn, ran = [], []
    real_draw, real_iterate = train_mod.draw_plan, fp.iterate

    def draw(*args):
        drawn.append(real_draw(*args))
        ran.append([])
        return drawn[-1]

    def iterate(f, z, iters):
        ran[-1].append((iters, torch.is_grad_enabled()))
        return real_iterate(f, z, iters)

    monkeypatch.setattr(train_mod, "draw_plan", draw)
    monkeypatch.setattr(fp, "iterate", iterate)
    train(_cfg(tmp_path, 6, fp_mode=mode, fp_max_no_grad=3, fp_max_with_grad=4, memory_check=False),
          _model("FPDM"), dataset=SUBSET, progress=False)  # (the memory probe runs its own plan)
    assert len(drawn) == 6
    for plan, calls in zip(drawn, ran, strict=True):
        expect = [(plan.no_grad, False)] if plan.no_grad else []
        assert calls == expect + [(plan.with_grad, True)], (plan, calls)
    if mode in ("jfb", "multistep"):
        assert {p.with_grad for p in drawn} == {1 if mode == "jfb" else 4}
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["iters"] for r in log] == [p.total for p in drawn]  # log_every = 1


def test_ema_after_one_step_is_the_warm_up_average(tmp_path):
    # step 0's decay is min(0.999, 1/10) = 0.1: EMA = 0.1 · initial weights + 0.9 · weights after the step
    from fpdm.models.registry import build_model

    cfg = _cfg(tmp_path, 1)
    train(cfg, _model("DiT"), dataset=SUBSET, progress=False)
    torch.manual_seed(cfg.seed)  # training initialises the model right after seeding the global RNG
    init = build_model(_model("DiT")).state_dict()
    state = load_checkpoint(tmp_path / "ckpt.pt")
    for k, v in state["ema"].items():
        torch.testing.assert_close(v, 0.1 * init[k] + 0.9 * state["model"][k], rtol=0, atol=1e-6)
    assert any(not torch.equal(init[k], state["model"][k]) for k in init)  # the step moved the weights


def test_samples_during_training_leave_the_weights_unchanged(tmp_path):
    """--sample-every: a grid and digits-FID at every 2nd step, in log.jsonl and a plot, and the same weights,
    optimizer and data order as without it (sampling touches none of the training's random streams)."""
    from fpdm.training.monitor import read_log

    plain = train(_cfg(tmp_path / "plain", 4), _model("FPDM"), dataset=SUBSET, progress=False)
    watched = train(_cfg(tmp_path / "watched", 4, sample_every=2, sample_count=12, sample_steps=3),
                    _model("FPDM"), dataset=SUBSET, progress=False)
    assert plain["step"] == watched["step"] == 4
    _states_equal(*(load_checkpoint(tmp_path / d / "ckpt.pt") for d in ("plain", "watched")))
    losses, samples = read_log(tmp_path / "watched" / "log.jsonl")
    assert [r["step"] for r in losses] == [1, 2, 3, 4] and [r["step"] for r in samples] == [2, 4]
    s = samples[-1]["sample"]
    assert s["count"] == 12 and s["steps"] == 3 and s["blocks"] == 3 * 4  # pre 1 + k 2 + post 1 per step
    assert s["digits_fid"] > 0 and 0 <= s["class_consistency"] <= 1
    assert (tmp_path / "watched" / "samples" / "step-0000002.png").exists()
    assert (tmp_path / "watched" / "training_curve.png").exists()
    # a resume may change how often it samples (only that): 2 more steps, sampled at step 5 and 6
    resume(tmp_path / "watched", steps=6, progress=False, dataset=SUBSET, sample_every=1)
    assert [r["step"] for r in read_log(tmp_path / "watched" / "log.jsonl")[1]] == [2, 4, 5, 6]


def test_checkpoints_come_by_time_as_well_as_by_steps(tmp_path, monkeypatch):
    """--ckpt-seconds: a checkpoint once that long has passed (here: at every step), besides --ckpt-every
    (100, never reached) and the last step; 0 leaves only the last. The file says where it came from."""
    saved = []
    real = train_mod.save_checkpoint
    monkeypatch.setattr(train_mod, "save_checkpoint", lambda path, state: (saved.append(state["step"]),
                                                                           real(path, state)))
    train(_cfg(tmp_path / "often", 3, ckpt_seconds=1e-9), _model("DiT"), dataset=SUBSET, progress=False)
    assert saved == [1, 2, 3]
    saved.clear()
    train(_cfg(tmp_path / "steps", 3, ckpt_seconds=0), _model("DiT"), dataset=SUBSET, progress=False)
    assert saved == [3]
    state = load_checkpoint(tmp_path / "steps" / "ckpt.pt")
    assert state["torch_version"] == torch.__version__ and state["command"]


def test_a_new_run_never_shares_the_log_of_a_dead_one(tmp_path):
    """A run killed before its first checkpoint leaves only log.jsonl: a new run there is refused, and
    `overwrite` starts the log afresh."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "log.jsonl").write_text('{"step": 1, "loss": 9.0}\n')
    with pytest.raises(FileExistsError, match="left no checkpoint.*--overwrite"):
        train(_cfg(out, 2), _model("DiT"), dataset=SUBSET, progress=False)
    train(_cfg(out, 2), _model("DiT"), dataset=SUBSET, progress=False, overwrite=True)
    assert [json.loads(line)["loss"] != 9.0 for line in (out / "log.jsonl").read_text().splitlines()] == \
        [True, True]


def test_hflip_mirrors_about_half_the_images_and_resumes_exactly(tmp_path, monkeypatch):
    """--hflip: each training image is mirrored with probability 1/2 (drawn from the run's generator, so a
    resumed run is bit-identical to a straight one)."""
    from fpdm.diffusion.gaussian import GaussianDiffusion

    seen = []
    real = GaussianDiffusion.q_sample
    monkeypatch.setattr(GaussianDiffusion, "q_sample", lambda self, x0, t, noise=None: (
        seen.append(x0.clone()), real(self, x0, t, noise))[1])
    mirrored = []
    train(_cfg(tmp_path / "straight", 6, hflip=True, memory_check=False), _model("DiT"), dataset=SUBSET,
          progress=False)  # (the memory probe's own q_sample calls would be seen too)
    batches = BatchStream(len(SUBSET), 16, seed=2)  # the run's data order (seed + 2)
    for x0 in seen:
        idx = batches.next()
        plain, flipped = SUBSET.batch(idx), SUBSET.batch(idx).flip(-1)
        same = [torch.equal(a, b) for a, b in zip(x0, plain, strict=True)]
        mirror = [torch.equal(a, b) for a, b in zip(x0, flipped, strict=True)]
        assert all(s or m for s, m in zip(same, mirror, strict=True))
        mirrored += [m and not s for s, m in zip(same, mirror, strict=True)]
    assert 0.3 < sum(mirrored) / len(mirrored) < 0.7, sum(mirrored)
    monkeypatch.setattr(GaussianDiffusion, "q_sample", real)
    train(_cfg(tmp_path / "halves", 3, hflip=True), _model("DiT"), dataset=SUBSET, progress=False)
    resume(tmp_path / "halves", steps=6, dataset=SUBSET, progress=False)
    _states_equal(*(load_checkpoint(tmp_path / d / "ckpt.pt") for d in ("straight", "halves")))
