"""Digests: damage to any file fpdm writes and reads back is reported or repaired, never silently used.

Each kind of file gets one byte flipped at 20 seeded random offsets and is truncated at 5 lengths; every
damaged copy must either be refused / recomputed with a message naming the file, or load to exactly the
original contents (a flip in bytes the reader never uses, e.g. zip padding, is harmless)."""

import json
import random
import shutil
import warnings
from pathlib import Path

import pytest
import torch

import fpdm.sampling.many as ss
from fpdm.common.checkpoint import load_checkpoint, save_checkpoint
from fpdm.common.digest import (
    DIGEST_KEY,
    DamagedFile,
    check_json,
    check_state,
    digest_state,
    read_json,
    tensor_hash,
    with_json_digest,
)
from fpdm.config import ModelConfig
from fpdm.diffusion.gaussian import GaussianDiffusion
from fpdm.models.registry import build_model
from fpdm.weights.export import load_exported

ASSETS = Path(__file__).parents[1] / "src" / "fpdm" / "assets"
CFG = dict(input_size=8, patch_size=2, in_channels=1, hidden_size=32, depth=4, num_heads=2, num_classes=10)


def _damaged_copies(src: Path, dst: Path, seed: int):
    """(what, path) for 20 one-byte flips at seeded random offsets and 5 truncations of `src`."""
    data = src.read_bytes()
    rng = random.Random(seed)
    for _ in range(20):
        at = rng.randrange(len(data))
        b = bytearray(data)
        b[at] ^= rng.randrange(1, 256)
        dst.write_bytes(bytes(b))
        yield f"flip at {at}", dst
    for _ in range(5):
        at = rng.randrange(len(data))
        dst.write_bytes(data[:at])
        yield f"truncated at {at}", dst


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and \
            tensor_hash(a) == tensor_hash(b)
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _state():
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="fpdm", **CFG))
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 1, 8, 8), torch.tensor([3, 4]), torch.tensor([0, 1]))[0].sum().backward()
    opt.step()
    return {"fpdm_version": "x", "model_config": model.config.to_dict(), "model": model.state_dict(),
            "optimizer": opt.state_dict(), "step": 7, "lr": 1e-3}


# ------------------------------------------------------------------------------------- the digest


def test_check_state_names_the_first_damaged_tensor_and_value_changes():
    state = _state()
    stamped = {**state, DIGEST_KEY: digest_state(state)}
    assert _same(check_state(dict(stamped), "f.pt"), state)
    bad = dict(stamped, model=dict(state["model"]))
    name = list(state["model"])[5]
    bad["model"][name] = state["model"][name].clone()
    bad["model"][name].view(-1)[3] += 1e-6  # one float moved by one ulp-ish step
    with pytest.raises(DamagedFile, match=rf"f.pt is damaged: tensor model/{name} does not match") as e:
        check_state(bad, "f.pt")
    assert e.value.entry == f"/model/{name}"
    for change in ({"step": 8}, {"lr": 1e-3 + 1e-12}, {"step": 7.0}):  # int 7 vs float 7.0 differ too
        with pytest.raises(DamagedFile, match="non-tensor values"):
            check_state({**stamped, **change}, "f.pt")
    missing = dict(stamped, model={k: v for k, v in state["model"].items() if k != name})
    with pytest.raises(DamagedFile, match=f"tensor model/{name}"):
        check_state(missing, "f.pt")
    reshaped = dict(stamped, model={**state["model"], name: state["model"][name].reshape(-1)})
    with pytest.raises(DamagedFile, match=f"tensor model/{name}"):  # same bytes, another shape
        check_state(reshaped, "f.pt")


def test_a_partial_check_covers_the_entries_used_and_every_value():
    state = _state()
    stamped = {**state, DIGEST_KEY: digest_state(state)}
    first = next(iter(state["optimizer"]["state"].values()))
    first["exp_avg"].view(-1)[0] += 1  # damage in what sampling never reads (the AdamW moments)
    assert _same(check_state(dict(stamped), "f.pt", only=("model",)), state)
    with pytest.raises(DamagedFile, match="tensor optimizer/state/0/exp_avg"):
        check_state(dict(stamped), "f.pt")  # the full check (resume, export) still sees it
    name = list(state["model"])[-1]
    state["model"][name].view(-1)[0] += 1
    for only in (("model",), ("optimizer", "model")):  # damage in what is used is always caught
        with pytest.raises(DamagedFile, match=f"tensor model/{name}"):
            check_state(dict(stamped), "f.pt", only=only)
    with pytest.raises(DamagedFile, match="non-tensor values"):
        check_state({**stamped, "step": 8}, "f.pt", only=("ema",))
    renamed = {**stamped, DIGEST_KEY: {**stamped[DIGEST_KEY], "tensors": {
        k.replace("/model/", "/other/"): v for k, v in stamped[DIGEST_KEY]["tensors"].items()}}}
    with pytest.raises(DamagedFile, match="tensor model/"):  # a used tensor with no recorded hash
        check_state(renamed, "f.pt", only=("model",))


def test_sampling_checks_the_weights_it_loads(tmp_path):
    from fpdm.weights.loading import load_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="fpdm", **CFG))
    state = {"fpdm_version": "x", "model_config": model.config.to_dict(), "diffusion_config": {},
             "model": model.state_dict(), "ema": {k: v.clone() + 1 for k, v in model.state_dict().items()}}
    for damaged, use_ema, caught in (("ema", True, True), ("model", True, False), ("model", False, True)):
        bad = {**state, damaged: {k: v.clone() for k, v in state[damaged].items()}}
        save_checkpoint(tmp_path / "ckpt.pt", bad)
        raw = torch.load(tmp_path / "ckpt.pt", weights_only=True)
        raw[damaged][next(iter(raw[damaged]))].view(-1)[0] += 1  # damage after the digest was taken
        torch.save(raw, tmp_path / "ckpt.pt")
        if caught:
            with pytest.raises(DamagedFile, match=rf"ckpt.pt is damaged: tensor {damaged}/"):
                load_model(tmp_path / "ckpt.pt", use_ema=use_ema)
        else:  # the raw weights are not what `sample` uses by default: not hashed, and not used
            m, _, _ = load_model(tmp_path / "ckpt.pt", use_ema=use_ema)
            assert all(torch.equal(m.state_dict()[k], v) for k, v in state["ema"].items())


def test_tensor_hash_sees_dtype_shape_and_every_byte():
    t = torch.arange(12, dtype=torch.float32)
    assert tensor_hash(t) == tensor_hash(t.clone())
    assert tensor_hash(t) != tensor_hash(t.view(3, 4))
    assert tensor_hash(t) != tensor_hash(t.view(torch.int32))
    assert tensor_hash(t[::2]) == tensor_hash(t[::2].contiguous())  # a view hashes its values
    for i in range(t.numel() * 4):
        b = t.clone().view(torch.uint8)
        b[i] ^= 1
        assert tensor_hash(b.view(torch.float32)) != tensor_hash(t)
    assert tensor_hash(torch.tensor(1.5, dtype=torch.bfloat16)) != tensor_hash(torch.tensor(1.5))
    assert tensor_hash(t.clone().requires_grad_()) == tensor_hash(t)  # a parameter hashes as its data
    heads: dict = {}  # the per-file memo of dtype-and-shape heads must not blur shapes or dtypes
    hashes = [tensor_hash(x, heads) for x in (t, t.view(3, 4), t.view(torch.int32), t.view(3, 4))]
    assert hashes == [tensor_hash(t), tensor_hash(t.view(3, 4)), tensor_hash(t.view(torch.int32)),
                      tensor_hash(t.view(3, 4))]
    assert len(set(hashes)) == 3


def test_files_without_a_digest_load_with_a_warning(tmp_path):
    torch.save({"fpdm_version": "0.0", "w": torch.ones(2)}, tmp_path / "old.pt")
    with pytest.warns(UserWarning, match="old.pt was written before fpdm recorded digests"):
        assert torch.equal(load_checkpoint(tmp_path / "old.pt")["w"], torch.ones(2))
    torch.save({"model": {"w": torch.ones(2)}}, tmp_path / "official.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an official checkpoint never has one: no warning
        load_checkpoint(tmp_path / "official.pt", foreign_ok=True)
    with pytest.warns(UserWarning, match="written before fpdm recorded digests"):
        assert check_json({"a": 1}, "x.json") == {"a": 1}


def test_json_digest_ignores_layout_but_not_values(tmp_path):
    obj = with_json_digest({"fid": 12.5, "steps": [1, 2]})
    p = tmp_path / "c.json"
    p.write_text(json.dumps(obj, indent=3, sort_keys=True))  # another layout, same values
    assert read_json(p) == {"fid": 12.5, "steps": [1, 2]}
    p.write_text(json.dumps({**obj, "fid": 12.6}))
    with pytest.raises(DamagedFile, match="c.json is damaged"):
        read_json(p)


# --------------------------------------------------------------------- each kind of file, damaged


def test_damaged_training_checkpoints_are_never_used(tmp_path):
    state = _state()
    save_checkpoint(tmp_path / "ckpt.pt", state)
    reported = 0
    for what, path in _damaged_copies(tmp_path / "ckpt.pt", tmp_path / "bad.pt", seed=1):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                loaded = load_checkpoint(path)
            except ValueError as e:
                assert "bad.pt" in str(e).splitlines()[0], (what, e)
                reported += 1
                continue
        assert _same(loaded, state), f"{what}: damage was used"
    assert reported >= 15  # most bytes of a checkpoint are tensor data: most flips must be caught


def test_damaged_exports_and_builtin_assets_are_never_used(tmp_path):
    for name in ("digits-fpdm", "digits-dit"):
        folder = tmp_path / name
        shutil.copytree(ASSETS / name, folder)
        good = load_exported(folder)
        for fname in ("model.safetensors", "config.json"):
            keep = (folder / fname).read_bytes()
            shutil.copy(folder / fname, tmp_path / "orig")
            for what, _ in _damaged_copies(tmp_path / "orig", folder / fname, seed=len(fname)):
                with warnings.catch_warnings():
                    warnings.simplefilter("error")
                    try:
                        loaded = load_exported(folder)
                    except ValueError as e:
                        assert fname in str(e), (what, e)
                        continue
                assert _same(loaded, good), f"{name}/{fname} {what}: damage was used"
            (folder / fname).write_bytes(keep)


def test_damaged_feature_weights_are_never_used(tmp_path):
    from fpdm.evaluation.digits_features import _load

    net, ref = _load(str(ASSETS / "digits_features.safetensors"))
    for i, (what, _) in enumerate(_damaged_copies(ASSETS / "digits_features.safetensors",
                                                  tmp_path / "f.safetensors", seed=3)):
        path = tmp_path / f"f{i}.safetensors"  # _load caches by path
        (tmp_path / "f.safetensors").rename(path)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                net2, ref2 = _load(str(path))
            except ValueError as e:
                assert path.name in str(e), (what, e)
                continue
        assert _same(net2.state_dict(), net.state_dict()) and (ref2 == ref).all(), what


def test_damaged_sampling_parts_are_sampled_again(tmp_path):
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="fpdm", **CFG)).eval()
    diffusion = GaussianDiffusion.make(learn_sigma=True)
    kw = dict(steps=3, iters=1, batch_size=2)
    parts = tmp_path / "x.parts"
    clean = ss.sample_seeds(model, diffusion, range(4), parts=parts, **kw).samples
    part = parts / "0000002-0000004.pt"
    shutil.copy(part, tmp_path / "orig")
    detected = 0
    for what, _ in _damaged_copies(tmp_path / "orig", part, seed=4):
        try:
            load_checkpoint(part)
            harmless = True
        except ValueError:
            harmless, detected = False, detected + 1
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            again = ss.sample_seeds(model, diffusion, range(4), parts=parts, **kw).samples
        assert torch.equal(again, clean), f"{what}: a damaged part was used"
        messages = [str(w.message) for w in caught if "0000002-0000004.pt" in str(w.message)]
        assert harmless or (messages and "sampling that batch again" in messages[0]), what
        load_checkpoint(part)  # rewritten intact when it was resampled
    assert detected >= 10


def test_damaged_cache_entries_are_recomputed(tmp_path):
    from fpdm.studies.engine import cached_result, store_result

    result = {"settings": {"k": 3}, "digits_fid": 21.337, "blocks": 560, "iters_run": [2, 3]}
    store_result(tmp_path / "e.json", result)
    assert cached_result(tmp_path / "e.json") == result
    for what, path in _damaged_copies(tmp_path / "e.json", tmp_path / "bad.json", seed=5):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = cached_result(path)
        if got is None:
            assert any("bad.json is damaged" in str(w.message) for w in caught), what
        else:
            assert got == result, f"{what}: damage was used"
