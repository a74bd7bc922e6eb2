"""The bad-input table: each case must end in ONE line `fpdm <command>: error: …` naming the culprit and
what was expected, exit code 2, and nothing half-written. docs/errors.md lists the same cases; regenerate
it with `FPDM_ERRORS_DOC=docs/errors.md pytest tests/test_errors.py`."""

import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fpdm.cli.app import main
from fpdm.common.checkpoint import load_checkpoint, save_checkpoint

TINY = ["--hidden-size", "32", "--depth", "4", "--num-heads", "2"]
ROWS: list[tuple[str, str, str]] = []


def _train(out: Path, model: str, *extra: str) -> Path:
    assert main(["train", "--model", model, *TINY, "--steps", "2", "--batch-size", "8", "--out", str(out),
                 "--no-progress", *extra]) == 0
    return out / "ckpt.pt"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    folder = root / "folder"
    for cls in ("cat", "dog"):
        (folder / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(folder / cls / f"{i}.png")
    return {"fpdm": _train(root / "fpdm", "FPDM-T/2"), "dit": _train(root / "dit", "DiT-T/2"),
            "folder_run": _train(root / "folder_run", "FPDM-T/2", "--data", str(folder)), "root": root,
            "folder": folder}


def _flip64(path: Path, entry: str | None = None) -> None:
    """The issue's damage: 64 bytes flipped in the middle of the file (in tensor data) or, with `entry`, in
    the middle of that checkpoint entry's largest tensor (sampling reads only the weights it uses)."""
    b = bytearray(path.read_bytes())
    mids = [int(len(b) * 0.6)]
    if entry is not None:
        t = max(torch.load(path, weights_only=True)[entry].values(), key=lambda v: v.numel())
        data = t.contiguous().numpy().tobytes()
        with zipfile.ZipFile(path) as z:  # torch.save: one uncompressed record per tensor; early on the EMA
            starts = [i.header_offset for i in z.infolist() if z.read(i) == data]  # may equal the raw weights
        mids = []
        for at in starts:
            name_len, extra_len = (int.from_bytes(b[at + i:at + i + 2], "little") for i in (26, 28))
            mids.append(at + 30 + name_len + extra_len + len(data) // 2 - 32)  # past the local header
    for mid in mids:
        b[mid:mid + 64] = bytes(x ^ 0xFF for x in b[mid:mid + 64])
    path.write_bytes(bytes(b))



def _idx(path: Path, magic: int, dims: tuple[int, ...], data: bytes) -> None:
    path.write_bytes(magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims) + data)


def _fashion_case(case: str, tmp: Path) -> list[str]:
    """Fashion-MNIST files written here (nothing read from the Debian package): the official counts of
    zeros, then one fault each."""
    d = tmp / "fm"
    d.mkdir()
    images, labels = np.zeros((60_000, 28, 28), np.uint8), np.zeros(60_000, np.uint8)
    magic = 0x803
    if case == "fashion wrong magic":
        magic = 0x801
    if case == "fashion truncated file":
        images = images[:, :, :27]
    if case == "fashion labels outside 0-9":
        labels[7] = 12
    counts = (59_999,) if case == "fashion counts disagree" else (60_000,)
    _idx(d / "train-images-idx3-ubyte", magic, (*counts, 28, 28), images.tobytes()[:counts[0] * 784])
    _idx(d / "train-labels-idx1-ubyte", 0x801, (60_000,), labels.tobytes())
    train = ["train", "--data", "fashion-mnist", "--data-dir", str(d), "--out", str(tmp / "r")]
    if case == "fashion files missing":
        (d / "train-labels-idx1-ubyte").unlink()
    if case == "fashion data folder missing":
        return [*train[:3], "--data-dir", str(tmp / "nowhere"), "--out", str(tmp / "r")]
    if case == "fashion image size other than 32":
        return [*train, "--image-size", "28"]
    if case in ("fashion samples scored as digits", "fashion digits samples scored as fashion"):
        shape = (4, 1, 32, 32) if case == "fashion samples scored as digits" else (4, 1, 8, 8)
        np.savez(tmp / "x.npz", samples=np.zeros(shape, np.float32), labels=np.arange(4))
        (d / "train-images-idx3-ubyte").unlink()
        (d / "train-labels-idx1-ubyte").unlink()
        d.rmdir()
        ref = ["--ref", "fashion-mnist"] if shape[-1] == 8 else []
        return ["eval", str(tmp / "x.npz"), *ref]
    if case == "fashion negative sample interval":
        return [*train, "--sample-every", "-1"]
    return train

class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/fpdm-pwned",))


def _setup(case: str, runs: dict, tmp: Path, monkeypatch) -> list[str]:
    """Prepare the files (and faults) a case needs and return its argv."""
    fp, dit = str(runs["fpdm"]), str(runs["dit"])
    if case == "disk full while checkpointing":
        import errno
        import shutil

        import fpdm.common.checkpoint

        shutil.copytree(Path(fp).parent, tmp / "run")

        def full(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(fpdm.common.checkpoint.os, "fsync", full)
        return ["train", "--resume", "--out", str(tmp / "run"), "--steps", "3", "--no-progress"]
    if case == "unwritable output folder":
        monkeypatch.setattr(os, "access", lambda path, mode: False)  # tests may run as root
        return ["sample", "--ckpt", fp, "--steps", "2", "--seeds", "0", "--out", str(tmp / "ro" / "s")]
    if case == "unknown model":
        return ["train", "--model", "FPDM-Q/2", "--out", str(tmp / "o")]
    if case == "weights of another size":
        state = load_checkpoint(runs["fpdm"])
        state["model_config"] = {**state["model_config"], "hidden_size": 64}
        save_checkpoint(tmp / "other.pt", state)
        return ["sample", "--ckpt", str(tmp / "other.pt"), "--seeds", "0-1", "--steps", "2"]
    if case == "DiT checkpoint used as FPDM":
        return ["sample", "--ckpt", dit, "--iters", "2", "--steps", "2", "--seeds", "0"]
    if case == "FPDM run resumed as DiT":
        return ["train", "--resume", "--out", str(Path(fp).parent), "--model", "DiT-T/2", *TINY]
    if case == "truncated checkpoint":
        (tmp / "t.pt").write_bytes(runs["fpdm"].read_bytes()[:1000])
        return ["sample", "--ckpt", str(tmp / "t.pt")]
    if case == "pickle checkpoint with code":
        (tmp / "evil.pt").write_bytes(pickle.dumps(_Evil()))
        torch.save({"x": _Evil()}, tmp / "evil2.pt")
        return ["sample", "--ckpt", str(tmp / "evil2.pt")]
    if case == "not a training checkpoint":
        save_checkpoint(tmp / "w.pt", {"weights": torch.zeros(2)})
        return ["sample", "--ckpt", str(tmp / "w.pt")]
    if case == "missing image folder":
        return ["train", "--data", str(tmp / "nowhere"), "--out", str(tmp / "o")]
    if case == "empty image folder":
        (tmp / "empty").mkdir()
        return ["train", "--data", str(tmp / "empty"), "--out", str(tmp / "o")]
    if case == "empty class folder":
        (tmp / "f" / "a").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp / "f" / "a" / "0.png")
        (tmp / "f" / "b").mkdir()
        return ["train", "--data", str(tmp / "f"), "--out", str(tmp / "o")]
    if case == "corrupt image file":
        (tmp / "c").mkdir()
        Image.new("RGB", (8, 8)).save(tmp / "c" / "ok.png")
        (tmp / "c" / "bad.png").write_bytes(b"\x89PNG not really")
        return ["train", "--data", str(tmp / "c"), "--out", str(tmp / "o")]
    if case == "images mixed with class folders":
        (tmp / "m" / "a").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp / "m" / "a" / "0.png")
        Image.new("RGB", (8, 8)).save(tmp / "m" / "top.png")
        return ["train", "--data", str(tmp / "m"), "--out", str(tmp / "o")]
    if case == "class folders changed since the run started":
        for cls in ("cat", "dog"):
            os.rename(runs["folder"] / cls, runs["folder"] / f"x{cls}")
        return ["train", "--resume", "--out", str(runs["folder_run"].parent), "--data", str(runs["folder"])]
    if case == "budget below the minimum":
        return ["sample", "--ckpt", fp, "--budget", "2", "--iters", "1"]
    if case == "budget not an integer":
        return ["sample", "--ckpt", fp, "--budget", "1.5"]
    if case == "DiT budget not a multiple of its depth":
        return ["sample", "--ckpt", dit, "--budget", "10"]
    if case == "zero sampling steps":
        return ["sample", "--ckpt", fp, "--steps", "0"]
    if case == "negative iterations":
        return ["sample", "--ckpt", fp, "--steps", "2", "--iters", "-1"]
    if case == "empty seed range":
        return ["sample", "--ckpt", fp, "--seeds", "5-2"]
    if case == "malformed seeds":
        return ["sample", "--ckpt", fp, "--seeds", "a-b"]
    if case == "cfg scale below 1":
        return ["sample", "--ckpt", fp, "--steps", "2", "--cfg-scale", "0.5"]
    if case == "class label out of range":
        return ["sample", "--ckpt", fp, "--steps", "2", "--label", "12"]
    if case == "output under a file":
        (tmp / "file").write_text("x")
        return ["sample", "--ckpt", fp, "--steps", "2", "--seeds", "0", "--out", str(tmp / "file" / "s")]
    if case == "resume with a different flag":
        return ["train", "--resume", "--out", str(Path(fp).parent), "--lr", "0.5"]
    if case == "resume without a checkpoint":
        return ["train", "--resume", "--out", str(tmp / "none")]
    if case == "zero micro-batches":
        return ["train", "--grad-accum", "0", "--out", str(tmp / "o")]
    if case == "NaN learning rate":
        return ["train", "--lr", "nan", "--out", str(tmp / "o")]
    if case == "NaN tolerance":
        return ["sample", "--ckpt", fp, "--steps", "2", "--tol", "nan"]
    if case == "bad device":
        return ["sample", "--ckpt", fp, "--device", "tpu"]
    if case == "negative threads":
        return ["sample", "--ckpt", fp, "--threads", "-1"]
    if case == "export over a file":
        (tmp / "f2").write_text("x")
        return ["export", "--ckpt", fp, "--out", str(tmp / "f2")]
    if case == "fixed-point option on a DiT":
        return ["train", "--model", "DiT-T/2", *TINY, "--fp-mode", "jfb", "--out", str(tmp / "r")]
    if case == "anderson window without anderson":
        return ["sample", "--ckpt", fp, "--steps", "2", "--anderson-window", "3", "--out", str(tmp / "s")]
    if case == "ratio with the constant profile":
        return ["sample", "--ckpt", fp, "--budget", "24", "--steps", "4", "--ratio", "5", "--out",
                str(tmp / "s")]
    if case == "DDIM spacing with DDPM":
        return ["sample", "--ckpt", fp, "--steps", "ddim10", "--out", str(tmp / "s")]
    if case == "grid too wide":
        return ["sample", "--ckpt", fp, "--steps", "2", "--upscale", "1000", "--out", str(tmp / "s")]
    if case == "latent model without a VAE":
        state = load_checkpoint(runs["fpdm"])  # the digits run, its input widened to 4 latent channels
        state["model_config"] = {**state["model_config"], "in_channels": 4}
        for key in ("model", "ema"):
            w = state[key]["x_embedder.proj.weight"]
            state[key]["x_embedder.proj.weight"] = w.repeat(1, 4, 1, 1)
            out_w, out_b = state[key]["final_layer.linear.weight"], state[key]["final_layer.linear.bias"]
            state[key]["final_layer.linear.weight"] = out_w.repeat(4, 1)
            state[key]["final_layer.linear.bias"] = out_b.repeat(4)
        save_checkpoint(tmp / "latent.pt", state)
        return ["sample", "--ckpt", str(tmp / "latent.pt"), "--steps", "2", "--seeds", "0-1", "--out",
                str(tmp / "s")]
    if case == "eval of a model without a feature network":
        return ["sample", "--ckpt", str(runs["folder_run"]), "--steps", "2", "--seeds", "0-1", "--eval",
                "--out", str(tmp / "s")]
    if case.startswith("fashion "):
        return _fashion_case(case, tmp)
    if case == "eval of a missing samples file":
        return ["eval", str(tmp / "missing.npz")]
    if case == "seed named twice":
        return ["sample", "--ckpt", fp, "--steps", "2", "--seeds", "0-3,2-5", "--out", str(tmp / "s")]
    if case == "seed beyond 64 bits":
        return ["sample", "--ckpt", fp, "--steps", "2", "--seeds", "18446744073709551616",
                "--out", str(tmp / "s")]
    if case == "absurd thread count":
        return ["sample", "--ckpt", fp, "--steps", "2", "--threads", "100000", "--out", str(tmp / "s")]
    if case == "zero grid columns":
        return ["sample", "--ckpt", fp, "--steps", "2", "--seeds", "0", "--nrow", "0",
                "--out", str(tmp / "s")]
    if case == "eta with DDPM":
        return ["sample", "--ckpt", fp, "--steps", "2", "--eta", "0.7", "--out", str(tmp / "s")]
    if case == "profile without budget and steps":
        return ["sample", "--ckpt", fp, "--steps", "2", "--profile", "increasing", "--out", str(tmp / "s")]
    if case == "reuse on a DiT":
        return ["sample", "--ckpt", dit, "--steps", "2", "--reuse", "--out", str(tmp / "s")]
    if case == "DiT budget below one step":
        return ["sample", "--ckpt", dit, "--budget", "1", "--out", str(tmp / "s")]
    if case == "run folder as checkpoint":
        return ["sample", "--ckpt", str(Path(fp).parent), "--out", str(tmp / "s")]
    if case == "residual plot of a non-record":
        (tmp / "x.npz").write_bytes(b"PK\x03\x04\xff\xfe binary")
        return ["plot-residuals", str(tmp / "x.npz"), "--out", str(tmp / "p.png")]
    if case in ("damaged checkpoint sampled", "damaged checkpoint resumed"):
        import shutil

        shutil.copytree(Path(fp).parent, tmp / "run")
        if case == "damaged checkpoint resumed":  # one more step, so an earlier checkpoint is kept
            assert main(["train", "--resume", "--out", str(tmp / "run"), "--steps", "3",
                         "--no-progress"]) == 0
        _flip64(tmp / "run" / "ckpt.pt", "ema" if case == "damaged checkpoint sampled" else None)
        if case == "damaged checkpoint sampled":
            return ["sample", "--ckpt", str(tmp / "run" / "ckpt.pt"), "--steps", "2", "--out", str(tmp / "s")]
        return ["train", "--resume", "--out", str(tmp / "run"), "--steps", "4", "--no-progress"]
    if case == "damaged export":
        assert main(["export", "--ckpt", fp, "--out", str(tmp / "e")]) == 0
        _flip64(tmp / "e" / "model.safetensors")
        return ["sample", "--ckpt", str(tmp / "e"), "--steps", "2", "--out", str(tmp / "s")]
    if case == "fallback without resume":
        return ["train", "--fallback", "--out", str(tmp / "o"), "--steps", "1"]
    if case == "negative keep-last":
        return ["train", "--keep-last", "-1", "--out", str(tmp / "o"), "--steps", "1"]
    if case == "results of other settings":
        assert main(["sample", "--ckpt", fp, "--steps", "2", "--seeds", "0-1", "--out", str(tmp / "s"),
                     "--no-progress"]) == 0
        return ["sample", "--ckpt", fp, "--steps", "2", "--seeds", "2-3", "--out", str(tmp / "s")]
    if case == "sweep over another sweep":
        sweep = ["sweep", "--ckpt", fp, "--budget", "12", "--iters-list", "2", "--out", str(tmp / "w"),
                 "--no-progress"]
        assert main([*sweep, "--seeds", "0-3"]) == 0
        return [*sweep, "--seeds", "0-4"]
    if case == "sweep k list not numbers":
        return ["sweep", "--ckpt", fp, "--budget", "12", "--iters-list", "2,x", "--out", str(tmp / "w")]
    if case in ("uint8 samples to eval", "NaN samples to eval", "labels outside the digits",
                "samples without a channel axis"):
        x = np.zeros((4, 1, 8, 8), np.float32)
        labels = np.arange(4)
        if case == "uint8 samples to eval":
            x = np.full((4, 1, 8, 8), 200, np.uint8)
        elif case == "NaN samples to eval":
            x[2, 0, 3, 3] = np.nan
        elif case == "labels outside the digits":
            labels = labels + 10
        else:
            x = x[:, 0]
        np.savez(tmp / "x.npz", samples=x, labels=labels)
        return ["eval", str(tmp / "x.npz"), "--out", str(tmp / "e.json")]
    if case == "damaged samples file":
        rng = np.random.default_rng(0)
        np.savez_compressed(tmp / "x.npz", samples=rng.uniform(-1, 1, (50, 1, 8, 8)).astype(np.float32),
                            labels=np.arange(50) % 10)
        _flip64(tmp / "x.npz")
        return ["eval", str(tmp / "x.npz"), "--out", str(tmp / "e.json")]
    if case == "raw weights of an export":
        return ["sample", "--ckpt", "digits-fpdm", "--no-ema", "--steps", "2", "--out", str(tmp / "s")]
    if case == "thumbnail in the image folder":
        Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(runs["folder"] / "cat" / "thumb.png")
        return ["train", "--data", str(runs["folder"]), "--model", "FPDM-T/2", *TINY, "--steps", "1",
                "--out", str(tmp / "o")]
    if case == "schedule for other weights":
        assert main(["calibrate", "--ckpt", fp, "--budget", "12", "--steps", "3", "--seeds", "900-901",
                     "--max-iters", "4", "--out", str(tmp / "c.json"), "--no-progress"]) == 0
        other = str(runs["folder_run"])
        return ["sample", "--ckpt", other, "--schedule", str(tmp / "c.json"), "--seeds", "0",
                "--out", str(tmp / "s")]
    if case == "longer study before the ratio study":
        return ["reproduce", "--study", "longer", "--scale", "tiny", "--out", str(tmp / "r")]
    if case == "no worker processes":
        return ["reproduce", "--study", "fashion", "--scale", "smoke", "--plan", "--workers", "0", "--out",
                str(tmp / "r")]
    if case == "a plan for a study without one":
        return ["reproduce", "--study", "digits", "--plan", "--out", str(tmp / "r")]
    if case == "a scale of another study":
        return ["reproduce", "--study", "ratio", "--scale", "smoke", "--out", str(tmp / "r")]
    if case == "budget far too large":
        return ["sample", "--ckpt", fp, "--budget", "100000000000", "--steps", "10", "--out", str(tmp / "s")]
    raise KeyError(case)


CASES = {  # case -> what the one-line message must contain
    "unknown model": "unknown model 'FPDM-Q/2'; expected one of",
    "weights of another size": "weights do not fit the fpdm model (width 64",
    "DiT checkpoint used as FPDM": "--iters applies to FPDM checkpoints only",
    "FPDM run resumed as DiT": "--model DiT-T/2 disagrees with the run",
    "truncated checkpoint": "t.pt is not a valid fpdm checkpoint",
    "pickle checkpoint with code": "evil2.pt is not a valid fpdm checkpoint",
    "not a training checkpoint": "w.pt is not an fpdm training checkpoint (no 'model_config' entry)",
    "missing image folder": "dataset path does not exist",
    "empty image folder": "no images found in",
    "empty class folder": "holds no images",
    "corrupt image file": "cannot read image file",
    "images mixed with class folders": "mixes image files",
    "class folders changed since the run started": "now has classes [xcat, xdog], the run was started with "
                                                    "[cat, dog]",
    "budget below the minimum": "budget 2 is below one step: a step costs 3 blocks",
    "budget not an integer": "argument --budget: invalid int value: '1.5'",
    "DiT budget not a multiple of its depth": "budget 10 is not a multiple of the DiT depth 4",
    "zero sampling steps": "--steps must be >= 1, got 0",
    "zero micro-batches": "--grad-accum must be >= 1, got 0",
    "negative iterations": "--iters must be >= 0",
    "empty seed range": "--seeds '5-2' selects no seed",
    "malformed seeds": "--seeds 'a-b': expected ranges and numbers",
    "cfg scale below 1": "--cfg-scale must be >= 1",
    "class label out of range": "--label 12 is out of range",
    "output under a file": "file is a file, not a folder",
    "resume with a different flag": "--lr 0.5 disagrees with the run",
    "resume without a checkpoint": "--resume: no checkpoint at",
    "NaN learning rate": "--lr must be a finite number, got nan",
    "NaN tolerance": "--tol must be a finite number, got nan",
    "bad device": "--device 'tpu' is not a device",
    "negative threads": "--threads must be >= 0, got -1",
    "export over a file": "exists and is not a folder",
    "eval of a missing samples file": "missing.npz",
    "disk full while checkpointing": "ckpt.pt: No space left on device; it was left as it was",
    "unwritable output folder": "/ro/s: cannot write in",
    "seed named twice": "--seeds '0-3,2-5' names seed 2 more than once",
    "seed beyond 64 bits": "seed 18446744073709551616 is outside [0, 2^63)",
    "absurd thread count": "--threads 100000 is more than",
    "zero grid columns": "--nrow must be >= 1, got 0",
    "eta with DDPM": "--eta 0.7 applies to --sampler ddim only",
    "profile without budget and steps": "--profile increasing spreads the iterations of --budget over "
                                        "--steps",
    "reuse on a DiT": "--reuse applies to FPDM checkpoints only",
    "DiT budget below one step": "budget 1 is below one step of the depth-4 DiT; the smallest is 4 (1 step)",
    "run folder as checkpoint": "is a folder: pass",
    "residual plot of a non-record": "x.npz is not a sample record",
    "budget far too large": "over the limit of 10,000; pass --no-limits",
    "damaged checkpoint sampled": "ckpt.pt is damaged: tensor",
    "damaged checkpoint resumed": "(step 2) is intact: add --fallback to resume from it",
    "damaged export": "model.safetensors is damaged: tensor",
    "fallback without resume": "--fallback chooses the checkpoint that --resume continues from; it needs "
                               "--resume",
    "negative keep-last": "--keep-last must be >= 0",
    "results of other settings": "s.json holds results of other settings (seeds '0-1' → '2-3'); pass "
                                 "--overwrite",
    "sweep over another sweep": "w.json holds a sweep with other settings; pass --overwrite",
    "sweep k list not numbers": "--iters-list '2,x': expected comma-separated integers",
    "uint8 samples to eval": "holds uint8 values (0–255); expected float N×C×H×W in [-1, 1]",
    "NaN samples to eval": "x.npz: samples: 1 of 4 samples contain NaN or inf",
    "labels outside the digits": "labels range from 10 to 13; digits classes are 0–9",
    "samples without a channel axis": "has shape (4, 8, 8); expected float N×C×H×W",
    "raw weights of an export": "--no-ema: digits-fpdm holds only the EMA weights",
    "damaged samples file": "x.npz cannot be read (Bad CRC-32",
    "thumbnail in the image folder": "thumb.png is 1 px on its short side",
    "schedule for other weights": "c.json was calibrated for other weights",
    "fixed-point option on a DiT": "--fp-mode jfb applies to FPDM models only",
    "anderson window without anderson": "--anderson-window 3 applies to --solver anderson only",
    "ratio with the constant profile": "--ratio 5.0 shapes the increasing and decreasing profiles; --profile "
                                       "constant does not use it",
    "DDIM spacing with DDPM": "--steps ddim10 is DDIM's spacing; add --sampler ddim",
    "grid too wide": "--upscale 1000 with --nrow 10 makes a grid 80,022 pixels wide; at most 16,384",
    "latent model without a VAE": "sample 4-channel latents and no VAE is known for them (the training "
                                  "data's latent manifest is not there): pass --vae FOLDER",
    "eval of a model without a feature network": "--eval computes digits or Fashion-MNIST metrics, but this "
                                                  "model was trained on neither",
    "fashion data folder missing": "nowhere does not exist or is not a folder",
    "fashion files missing": "train-labels-idx1-ubyte[.gz] not found in",
    "fashion wrong magic": "IDX magic 0x00000801, expected 0x00000803",
    "fashion truncated file": "bytes, expected 47040016 for dimensions (60000, 28, 28) (truncated)",
    "fashion counts disagree": "IDX dimensions (59999, 28, 28), expected (60000, 28, 28)",
    "fashion labels outside 0-9": "label 12 outside 0–9",
    "fashion digest mismatch": "decode to other data than the official release",
    "fashion image size other than 32": "--image-size 28: Fashion-MNIST is served at 32×32",
    "fashion samples scored as digits": "got (1, 32, 32); for Fashion-MNIST samples pass --ref fashion-mnist",
    "fashion digits samples scored as fashion": "--ref fashion-mnist needs 32×32 greyscale samples, got "
                                                "(1, 8, 8)",
    "fashion negative sample interval": "--sample-every must be >= 0",
    "longer study before the ratio study": "holds no finished training of dit28: run `fpdm reproduce --study "
                                           "ratio --scale tiny --out",
    "no worker processes": "--workers 0: expected at least 1",
    "a plan for a study without one": "--plan is for --study fashion (got --study digits)",
    "a scale of another study": "--scale smoke does not apply to --study ratio",
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gets_one_named_line(case, runs, tmp_path, tmp_path_factory, capsys, monkeypatch):
    argv = _setup(case, runs, tmp_path, monkeypatch)
    capsys.readouterr()  # what preparing the case printed is not the case's output
    before = {p for p in tmp_path.rglob("*")}
    kept = (tmp_path / "run" / "ckpt.pt").read_bytes() if case == "disk full while checkpointing" else None
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse usage errors
        rc = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, (case, err)
    assert len(err) == 1 and err[0].startswith(f"fpdm {argv[0]}: error: "), err
    assert CASES[case] in err[0], err[0]
    assert {p for p in tmp_path.rglob("*")} == before, "a failed command left files behind"
    assert not Path("/tmp/fpdm-pwned").exists()
    if kept is not None:  # the previous checkpoint survives a failed write, byte for byte
        assert (tmp_path / "run" / "ckpt.pt").read_bytes() == kept
    base = str(tmp_path_factory.getbasetemp())
    def short(text: str) -> str:
        return text.replace(str(tmp_path), "…").replace(base, "…")

    ROWS.append((case, short(" ".join(argv)), short(err[0])))
    if case == "thumbnail in the image folder":
        (runs["folder"] / "cat" / "thumb.png").unlink()  # the shared folder, as the other cases expect it
    if case == "class folders changed since the run started":
        for cls in ("cat", "dog"):
            os.rename(runs["folder"] / f"x{cls}", runs["folder"] / cls)


def test_zz_write_docs_table():
    path = os.environ.get("FPDM_ERRORS_DOC")
    if not path:
        pytest.skip("set FPDM_ERRORS_DOC to regenerate docs/errors.md")
    lines = ["| case | command | message |", "|---|---|---|"]
    lines += [f"| {c} | `{a}` | `{m}` |" for c, a, m in ROWS]
    text = Path(path).read_text()
    start = text.index("<!-- table -->") + len("<!-- table -->")
    end = text.index("<!-- /table -->")
    Path(path).write_text(text[:start] + "\n" + "\n".join(lines) + "\n" + text[end:])
