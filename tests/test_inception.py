"""fpdm.evaluation.inception: ADM .npz export, image loading, k-NN precision/recall, and the torch-fidelity
path.

The I/O and precision/recall tests need no torch-fidelity and run everywhere. The Inception tests skip
without it (the optional `eval` extra); they use a randomly initialised Inception saved to a local file, so
they check plumbing (keys, finiteness, agreement with torch-fidelity's own `calculate_metrics`), not the
meaning of the numbers, and they prove that nothing is fetched from the network.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fpdm.common.images import to_uint8
from fpdm.evaluation import inception
from fpdm.evaluation.inception import (
    export_adm_npz,
    inception_features,
    inception_metrics,
    load_images,
)
from fpdm.evaluation.metrics import precision_recall

# ------------------------------------------------------------------------------------------------------------
# export_adm_npz / load_images (no torch-fidelity)
# ------------------------------------------------------------------------------------------------------------


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_export_float_rgb_round_trip(tmp_path: Path) -> None:
    x = torch.rand(5, 3, 6, 7) * 2 - 1
    x[0, :, 0, 0] = torch.tensor([-1.0, 0.0, 1.0])
    path = export_adm_npz(x, tmp_path / "out" / "samples.npz")
    assert path == tmp_path / "out" / "samples.npz"
    with np.load(path) as data:
        assert data.files == ["arr_0"]
        arr = data["arr_0"]
    assert arr.dtype == np.uint8 and arr.shape == (5, 6, 7, 3)
    assert arr[0, 0, 0].tolist() == [0, 128, 255]
    np.testing.assert_array_equal(arr, to_uint8(x))
    assert _leftovers(path.parent) == []  # no temp file left behind


def test_export_greyscale_replicated(tmp_path: Path) -> None:
    x = torch.rand(4, 1, 5, 5) * 2 - 1
    with np.load(export_adm_npz(x, tmp_path / "g.npz")) as data:
        arr = data["arr_0"]
    assert arr.shape == (4, 5, 5, 3)
    for c in range(3):
        np.testing.assert_array_equal(arr[..., c], to_uint8(x)[..., 0])

    pix = np.random.default_rng(0).integers(0, 256, (3, 4, 6), dtype=np.uint8)
    for given in (pix, pix[..., None]):  # N×H×W and N×H×W×1
        with np.load(export_adm_npz(given, tmp_path / "u.npz")) as data:
            np.testing.assert_array_equal(data["arr_0"], np.repeat(pix[..., None], 3, axis=-1))
    rgb = np.random.default_rng(1).integers(0, 256, (2, 4, 6, 3), dtype=np.uint8)
    with np.load(export_adm_npz(rgb, tmp_path / "rgb.npz")) as data:
        np.testing.assert_array_equal(data["arr_0"], rgb)
    u8 = torch.from_numpy(rgb).permute(0, 3, 1, 2)  # uint8 tensors are pixels, not [-1, 1]
    with np.load(export_adm_npz(u8, tmp_path / "t.npz")) as data:
        np.testing.assert_array_equal(data["arr_0"], rgb)


def test_export_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\(N, 1 or 3, H, W\)"):
        export_adm_npz(torch.zeros(2, 2, 4, 4), tmp_path / "x.npz")
    with pytest.raises(ValueError, match="uint8"):
        export_adm_npz(np.zeros((2, 4, 4, 3), np.float32), tmp_path / "x.npz")
    with pytest.raises(TypeError):
        export_adm_npz([[0]], tmp_path / "x.npz")  # type: ignore[arg-type]
    assert not (tmp_path / "x.npz").exists()


def test_export_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = export_adm_npz(torch.zeros(1, 3, 2, 2), tmp_path / "s.npz")
    before = path.read_bytes()

    def broken_savez(f, **arrays):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(inception.np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        export_adm_npz(torch.ones(1, 3, 2, 2), path)
    assert path.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_load_images_npz_both_kinds(tmp_path: Path) -> None:
    x = torch.rand(3, 3, 5, 4) * 2 - 1
    adm = load_images(export_adm_npz(x, tmp_path / "adm.npz"))
    assert adm.dtype == torch.uint8 and adm.shape == (3, 3, 5, 4)
    np.testing.assert_array_equal(adm.permute(0, 2, 3, 1).numpy(), to_uint8(x))

    # what `fpdm sample` writes: float N×C×H×W in [-1, 1] under "samples", plus labels
    np.savez_compressed(tmp_path / "fpdm.npz", samples=x.numpy(), labels=np.arange(3))
    assert torch.equal(load_images(tmp_path / "fpdm.npz"), adm)
    grey = torch.rand(2, 1, 8, 8) * 2 - 1
    np.savez(tmp_path / "grey.npz", samples=grey.numpy())
    g = load_images(str(tmp_path / "grey.npz"))
    assert g.shape == (2, 3, 8, 8)
    assert torch.equal(g[:, 0], g[:, 1]) and torch.equal(g[:, 0], g[:, 2])
    np.testing.assert_array_equal(g[:, 0].numpy(), to_uint8(grey)[..., 0])


def test_load_images_in_memory() -> None:
    u8 = torch.randint(0, 256, (2, 1, 4, 4), dtype=torch.uint8)
    assert torch.equal(load_images(u8), u8.expand(-1, 3, -1, -1))
    x = torch.rand(2, 3, 4, 4) * 2 - 1
    assert torch.equal(load_images(x), torch.from_numpy(to_uint8(x)).permute(0, 3, 1, 2))
    nhwc = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
    assert torch.equal(load_images(nhwc), torch.from_numpy(nhwc).permute(0, 3, 1, 2))


def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_load_images_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (6, 5), dtype=np.uint8)
    other = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    _png(tmp_path / "b" / "1.png", other)
    _png(tmp_path / "a" / "2.PNG", grey)  # extension case does not matter; found recursively
    _png(tmp_path / "a" / "10.png", rgb)
    (tmp_path / "notes.txt").write_text("not an image")
    Image.fromarray(rgb).save(tmp_path / "c.bmp")
    Image.fromarray(rgb).save(tmp_path / "d.webp", lossless=True)

    x = load_images(tmp_path)
    assert x.dtype == torch.uint8 and x.shape == (5, 3, 6, 5)
    # sorted by path: a/10.png, a/2.PNG, b/1.png, c.bmp, d.webp
    expect = [rgb, np.repeat(grey[..., None], 3, axis=-1), other, rgb, rgb]
    for got, want in zip(x, expect, strict=True):
        np.testing.assert_array_equal(got.permute(1, 2, 0).numpy(), want)


def test_load_images_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        load_images(tmp_path / "missing.npz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: no images found"):
        load_images(tmp_path / "empty")
    _png(tmp_path / "mixed" / "a.png", np.zeros((4, 4, 3), np.uint8))
    _png(tmp_path / "mixed" / "b.png", np.zeros((5, 4, 3), np.uint8))
    with pytest.raises(ValueError, match=r"b\.png.*one size"):
        load_images(tmp_path / "mixed")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(ValueError, match=r"x\.txt: expected a \.npz"):
        load_images(tmp_path / "x.txt")
    np.savez(tmp_path / "keys.npz", images=np.zeros(3))
    with pytest.raises(ValueError, match=r"keys\.npz.*\['images'\]"):
        load_images(tmp_path / "keys.npz")
    np.savez(tmp_path / "f.npz", arr_0=np.zeros((2, 4, 4, 3), np.float32))
    with pytest.raises(ValueError, match=r"f\.npz \(arr_0\).*uint8"):
        load_images(tmp_path / "f.npz")
    np.savez(tmp_path / "c.npz", arr_0=np.zeros((2, 4, 4, 2), np.uint8))
    with pytest.raises(ValueError, match=r"c\.npz \(arr_0\).*C in \(1, 3\)"):
        load_images(tmp_path / "c.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"bad\.npz: not a readable"):
        load_images(tmp_path / "bad.npz")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"x\.png: cannot read image"):
        load_images(tmp_path / "broken")


# ------------------------------------------------------------------------------------------------------------
# k-NN precision / recall (no torch-fidelity)
# ------------------------------------------------------------------------------------------------------------


def test_precision_recall_by_hand() -> None:
    ref = np.array([[0.0], [1.0], [2.0], [3.0], [4.0]])  # k=1 radii: 1 each
    samples = np.array([[0.5], [10.0]])  # k=1 radii: 9.5 each
    # 0.5 lies in the reference manifold, 10 does not; the two sample balls cover all of 0..4
    assert precision_recall(ref, samples, k=1) == (0.5, 1.0)


def test_precision_recall_errors() -> None:
    with pytest.raises(ValueError, match="more than 3"):
        precision_recall(np.zeros((10, 2)), np.zeros((3, 2)), k=3)
    with pytest.raises(ValueError, match=r"\(N, d\)"):
        precision_recall(np.zeros((5, 2)), np.zeros((5, 3)))


# ------------------------------------------------------------------------------------------------------------
# inception_metrics argument checks (no torch-fidelity)
# ------------------------------------------------------------------------------------------------------------


def test_missing_weights_file_named(tmp_path: Path) -> None:
    x = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        inception_metrics(x, x, tmp_path / "nowhere.pth")
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        inception_features(x, tmp_path / "nowhere.pth")


def test_missing_torch_fidelity_names_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"")
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)  # makes `import torch_fidelity` fail
    x = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(ImportError, match=r'pip install "fpdm\[eval\]"'):
        inception_metrics(x, x, weights)


# ------------------------------------------------------------------------------------------------------------
# torch-fidelity path, with a randomly initialised Inception in a local file
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def random_inception(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """torch-fidelity's Inception with random weights, saved as the plain state_dict its
    `feature_extractor_weights_path` expects (what `torch.load` of the official .pth gives)."""
    pytest.importorskip("torch_fidelity")
    from torch_fidelity import feature_extractor_inceptionv3 as fe

    class Unloaded(fe.FeatureExtractorInceptionV3):
        def load_state_dict(self, *args, **kwargs):  # keep the fresh random init
            return None

    mp = pytest.MonkeyPatch()
    # The constructor wants weights: with no path it would call this; hand it nothing instead of downloading.
    mp.setattr(fe, "load_state_dict_from_url", lambda *a, **k: {})
    try:
        torch.manual_seed(0)
        net = Unloaded("inception-v3-compat", ["2048"])
    finally:
        mp.undo()
    for m in net.modules():  # PyTorch's default conv init shrinks activations ~1e-8 over Inception's depth
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    path = tmp_path_factory.mktemp("inception") / "random-inception.pth"
    torch.save({k: v.detach().cpu().clone() for k, v in net.state_dict().items()}, path)
    return path


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # nothing may be cached in the real one


def _sets(n: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform noise, and smooth images (bilinear-upsampled 4×4 noise): sets even a random net separates."""
    g = torch.Generator().manual_seed(0)
    noise = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    coarse = torch.randint(0, 256, (n, 3, 4, 4), generator=g).float()
    smooth = torch.nn.functional.interpolate(coarse, size=32, mode="bilinear").round().to(torch.uint8)
    return noise, smooth


class _Images(torch.utils.data.Dataset):
    """A fixed set of uint8 (3, H, W) images, the Dataset form torch-fidelity's calculate_metrics takes."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.x[i]


def test_weights_file_is_a_plain_state_dict(random_inception: Path) -> None:
    # torch-fidelity 0.3 calls torch.load(path) (weights_only=True on torch >= 2.6): plain tensors only
    sd = torch.load(random_inception, weights_only=True, map_location="cpu")
    assert "fc.weight" in sd and sd["fc.weight"].shape == (1008, 2048)
    assert all(isinstance(v, torch.Tensor) for v in sd.values())


def test_inception_features_shapes(random_inception: Path, no_network: None) -> None:
    f = inception_features(torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8), random_inception)
    assert f["pool3"].shape == (2, 2048) and f["logits_unbiased"].shape == (2, 1008)
    assert f["pool3"].dtype == torch.float32 and torch.isfinite(f["pool3"]).all()


METRIC_KEYS = ("fid", "kid", "kid_std", "inception_score", "inception_score_std", "precision", "recall")


def test_inception_metrics_against_itself(random_inception: Path, no_network: None, tmp_path: Path) -> None:
    """The one test that runs torch-fidelity's real FID: NumPy's eigvals of a 2048×2048 matrix take 10-30 s
    on a 2-core machine, whatever the number of images."""
    tf = pytest.importorskip("torch_fidelity")
    noise, _ = _sets()
    samples_npz = export_adm_npz(noise.permute(0, 2, 3, 1).numpy(), tmp_path / "samples.npz")
    out = inception_metrics(samples_npz, noise, random_inception)
    for key in METRIC_KEYS:
        assert isinstance(out[key], float) and np.isfinite(out[key]), key
    assert abs(out["fid"]) < 1e-3
    assert out["precision"] == 1.0 and out["recall"] == 1.0
    assert out["kid_subset_size"] == 10 and out["isc_splits"] == 10 and out["k"] == 3  # 1000 clipped to 10
    assert out["num_samples"] == out["reference_size"] == 10

    # KID and IS are torch-fidelity's own numbers: its entry point, same local weights and settings, agrees
    ref = tf.calculate_metrics(input1=_Images(noise), input2=_Images(noise), cuda=False, isc=True, kid=True,
                               feature_extractor="inception-v3-compat",
                               feature_extractor_weights_path=str(random_inception), kid_subset_size=10,
                               cache=False, verbose=False, save_cpu_ram=True)
    assert out["kid"] == pytest.approx(ref[tf.KEY_METRIC_KID_MEAN], rel=1e-4, abs=1e-9)
    assert out["kid_std"] == pytest.approx(ref[tf.KEY_METRIC_KID_STD], rel=1e-3, abs=1e-9)
    assert out["inception_score"] == pytest.approx(ref[tf.KEY_METRIC_ISC_MEAN], rel=1e-6)
    assert out["inception_score_std"] == pytest.approx(ref[tf.KEY_METRIC_ISC_STD], rel=1e-4, abs=1e-9)
    assert not list(Path(os.environ["TORCH_HOME"]).glob("**/*"))  # nothing cached or downloaded


def test_inception_metrics_distinct_sets(random_inception: Path, no_network: None,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    tf = pytest.importorskip("torch_fidelity")
    import torch_fidelity.metric_fid as metric_fid

    calls = []

    def fast_fid(stat_1: dict, stat_2: dict, verbose: bool) -> dict:
        # torch-fidelity's formula with torch's eigvals (~3 s here against NumPy's 10-30 s)
        calls.append((stat_1["mu"].shape, stat_2["sigma"].shape))
        diff = stat_1["mu"] - stat_2["mu"]
        s1, s2 = torch.from_numpy(stat_1["sigma"]), torch.from_numpy(stat_2["sigma"])
        tr_covmean = torch.linalg.eigvals(s1 @ s2).sqrt().real.sum().item()
        return {tf.KEY_METRIC_FID: float(diff @ diff + s1.trace() + s2.trace() - 2 * tr_covmean)}

    monkeypatch.setattr(metric_fid, "fid_statistics_to_metric", fast_fid)
    noise, smooth = _sets()
    out = inception_metrics(noise, smooth, random_inception, batch_size=3, kid_subset_size=6, k=2)
    assert calls == [((2048,), (2048, 2048))]  # FID from both sets' pool3 statistics
    for key in METRIC_KEYS:
        assert isinstance(out[key], float) and np.isfinite(out[key]), key
    assert out["fid"] > 1e-2  # noise and smooth images are apart even for a random network
    assert 0.0 <= out["precision"] <= 1.0 and 0.0 <= out["recall"] <= 1.0
    assert out["precision"] + out["recall"] < 2.0
    assert out["kid_subset_size"] == 6 and out["k"] == 2

    with pytest.raises(ValueError, match=r"at least 4 images per set \(precision/recall with k=3\)"):
        inception_metrics(noise[:3], smooth, random_inception)  # refused before any Inception pass
    few = inception_metrics(noise[:4], smooth[:5], random_inception, precision_recall=False)
    assert "precision" not in few and "recall" not in few
    assert few["kid_subset_size"] == 4 and few["isc_splits"] == 4
