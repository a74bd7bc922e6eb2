"""Tests for fpdm.common.checkpoint: atomic weights_only checkpoints and exact RNG restoration."""

from __future__ import annotations

import os
import random
from collections import OrderedDict

import numpy as np
import pytest
import torch

from fpdm.common import checkpoint as ckpt
from fpdm.common.checkpoint import (
    capture_rng_state,
    generator_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    set_generator_state,
)


def _state() -> dict:
    model = torch.nn.Linear(3, 2)
    return {
        "model": model.state_dict(),
        "step": 7,
        "lr": 1e-4,
        "name": "fpdm",
        "flags": [True, None, (1, 2.5)],
        "shape": torch.Size([2, 3]),
        "dtype": torch.float32,
        "ordered": OrderedDict(a=torch.arange(3)),
    }


def _draw() -> tuple:
    return (
        [random.random() for _ in range(3)],
        random.gauss(0, 1),
        np.random.rand(3).tolist(),
        float(np.random.standard_normal()),
        torch.rand(3).tolist(),
        torch.randn(2).tolist(),
    )


def _assert_same(a, b) -> None:
    assert type(a) is type(b)
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same(x, y)
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b)
    else:
        assert a == b


def test_save_load_round_trip(tmp_path):
    state = _state()
    path = tmp_path / "deep" / "nested" / "ckpt.pt"
    save_checkpoint(path, state)
    loaded = load_checkpoint(path)
    _assert_same(loaded, state)
    # The file really is weights_only loadable by plain torch.load (with the digest fpdm adds).
    plain = torch.load(path, weights_only=True)
    assert plain.pop("fpdm_digest")["format"] == "fpdm-digest/1"
    _assert_same(plain, state)
    assert [p.name for p in path.parent.iterdir()] == ["ckpt.pt"]  # no temp file left behind


def test_save_overwrites_atomically_and_cleans_up_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"v": 1})
    save_checkpoint(path, {"v": 2})
    assert load_checkpoint(path) == {"v": 2}

    def boom(obj, f):
        f.write(b"partial")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(ckpt.torch, "save", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        save_checkpoint(path, {"v": 3})
    assert load_checkpoint(path) == {"v": 2}  # old checkpoint intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]  # temp file removed


def test_save_uses_normal_file_permissions(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"v": 1})
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize(
    ("state", "where"),
    [
        ({"loss": np.float32(1.0)}, "state['loss']"),
        ({"opt": {"hist": [1, np.zeros(2)]}}, "state['opt']['hist'][1]"),
        ({"fn": len}, "state['fn']"),
    ],
)
def test_save_rejects_unsafe_types_naming_the_entry(tmp_path, state, where):
    with pytest.raises(TypeError) as info:
        save_checkpoint(tmp_path / "x.pt", state)
    assert where in str(info.value)
    assert not (tmp_path / "x.pt").exists()


def test_save_rejects_non_dict(tmp_path):
    with pytest.raises(TypeError, match="must be a dict"):
        save_checkpoint(tmp_path / "x.pt", [torch.zeros(1)])


def test_load_missing_file_names_path(tmp_path):
    path = tmp_path / "absent.pt"
    with pytest.raises(FileNotFoundError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_load_truncated_file_is_value_error(tmp_path):
    good = tmp_path / "good.pt"
    save_checkpoint(good, _state())
    data = good.read_bytes()
    for cut in (0, 10, len(data) // 2, len(data) - 10):
        bad = tmp_path / f"trunc{cut}.pt"
        bad.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="not a valid fpdm checkpoint") as info:
            load_checkpoint(bad)
        assert str(bad) in str(info.value)


def test_load_random_bytes_is_value_error(tmp_path):
    bad = tmp_path / "noise.pt"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match="not a valid fpdm checkpoint") as info:
        load_checkpoint(bad)
    assert str(bad) in str(info.value)


def test_load_refuses_pickled_objects(tmp_path):
    path = tmp_path / "unsafe.pt"
    torch.save({"obj": np.float64(1.0)}, path)  # needs weights_only=False, so must be refused
    with pytest.raises(ValueError, match="not a valid fpdm checkpoint"):
        load_checkpoint(path)


def test_load_non_dict_is_value_error(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([1, 2], path)
    with pytest.raises(ValueError, match="expected a dict"):
        load_checkpoint(path)


def test_rng_capture_restore_is_exact():
    random.gauss(0, 1)  # leave a cached gaussian in Python's RNG state ...
    np.random.standard_normal()  # ... and in NumPy's, so the cached values are exercised too
    state = capture_rng_state()
    first = _draw()
    restore_rng_state(state)
    assert _draw() == first


def test_rng_state_is_weights_only_safe_and_round_trips(tmp_path):
    state = capture_rng_state()
    first = _draw()
    path = tmp_path / "rng.pt"
    save_checkpoint(path, {"rng": state})
    loaded = load_checkpoint(path)["rng"]
    _draw()  # move every stream on before restoring
    restore_rng_state(loaded)
    assert _draw() == first
    assert isinstance(loaded["cuda"], list)
    if not torch.cuda.is_available():
        assert loaded["cuda"] == []


def test_restore_warns_when_cuda_states_cannot_all_be_restored():
    state = capture_rng_state()
    n_devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    state["cuda"] = [torch.get_rng_state()] * (n_devices + 1)
    if n_devices:  # a CPU generator state is not a CUDA state; only test the warning on CPU hosts
        pytest.skip("device-count mismatch is only exercised on CPU-only hosts")
    with pytest.warns(RuntimeWarning, match="CUDA device state"):
        restore_rng_state(state)


def test_generator_state_helpers(tmp_path):
    g = torch.Generator().manual_seed(123)
    saved = generator_state(g)
    expected = torch.randn(4, generator=g)
    save_checkpoint(tmp_path / "g.pt", {"g": saved})
    g2 = torch.Generator().manual_seed(999)
    set_generator_state(g2, load_checkpoint(tmp_path / "g.pt")["g"])
    assert torch.equal(torch.randn(4, generator=g2), expected)
    assert not torch.equal(saved, generator_state(g))  # saved is a snapshot, not a live view


def test_every_torch_load_in_the_tree_is_weights_only():
    """Loading a file must never be able to run code: every torch.load call passes weights_only=True."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    calls = 0
    for path in [*root.joinpath("src").rglob("*.py"), *root.joinpath("benchmarks").rglob("*.py"),
                 *root.joinpath("tests").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            f = getattr(node, "func", None)
            if (isinstance(node, ast.Call) and isinstance(f, ast.Attribute) and f.attr == "load"
                    and isinstance(f.value, ast.Name) and f.value.id == "torch"):
                calls += 1
                kw = {k.arg: k.value for k in node.keywords}
                ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                assert ok, f"{path.relative_to(root)}:{node.lineno}: torch.load without weights_only=True"
    assert calls >= 2  # the scan sees the real call sites


def test_atomic_write_syncs_the_data_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    # the order that makes a power cut safe: data on disk, then the name switched, then the name on disk
    import fpdm.common.checkpoint as ck

    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        path = os.path.realpath(f"/proc/self/fd/{fd}")  # what the descriptor is open on
        events.append(("fsync", True if os.path.isdir(path) else path))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(ck.os, "fsync", fsync)
    monkeypatch.setattr(ck.os, "replace", replace)
    target = tmp_path / "state.pt"
    ck.atomic_write(target, lambda f: f.write(b"x" * 100))
    kinds = [e[0] for e in events]
    assert kinds == ["fsync", "replace", "fsync"], events
    assert str(events[0][1]).startswith(str(tmp_path / ".state.pt."))  # the temp file's data first
    assert events[2][1] is True  # then the folder (the rename itself)
    assert target.read_bytes() == b"x" * 100
