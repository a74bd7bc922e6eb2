"""Latent round trip with a tiny randomly initialised AutoencoderKL saved locally: extract → train → sample
→ decode to PNG."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from fpdm.cli.app import main

diffusers = pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def tiny_vae(tmp_path_factory):
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4,
                                  down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                                  up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
                                  block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
                                  sample_size=16)
    path = tmp_path_factory.mktemp("vae")
    vae.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for cls in ("a", "b", "c"):
        (root / cls).mkdir()
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    return root


def test_extract_train_sample_decode(tiny_vae, folder, tmp_path, capsys):
    lat = tmp_path / "lat"
    assert main(["extract-latents", "--data", str(folder), "--vae", str(tiny_vae), "--out", str(lat),
                 "--image-size", "16", "--flip", "--shard-size", "10", "--no-progress"]) == 0
    manifest = json.loads((lat / "manifest.json").read_text())
    assert manifest["num_samples"] == 24 and manifest["latent_shape"] == [4, 8, 8]  # 12 images + mirrors
    assert [s["num"] for s in manifest["shards"]] == [12, 12] and manifest["class_names"] == ["a", "b", "c"]
    run = tmp_path / "run"
    assert main(["train", "--data", str(lat), "--model", "FPDM-T/2", "--hidden-size", "32", "--depth", "4",
                 "--num-heads", "2", "--steps", "20", "--batch-size", "8", "--out", str(run),
                 "--no-progress"]) == 0
    ckpt = torch.load(run / "ckpt.pt", weights_only=True)
    assert (ckpt["model_config"]["in_channels"], ckpt["model_config"]["input_size"]) == (4, 8)
    out = tmp_path / "s"
    # no --vae: the one named by the training data's manifest decodes the samples
    assert main(["sample", "--ckpt", str(run / "ckpt.pt"), "--steps", "3", "--seeds", "0-2",
                 "--no-progress", "--out", str(out), "--nrow", "3", "--upscale", "1"]) == 0
    data = np.load(out.with_suffix(".npz"))
    assert data["samples"].shape == (3, 3, 16, 16) and data["latents"].shape == (3, 4, 8, 8)
    assert Image.open(out.with_suffix(".png")).size == (3 * 18 + 2, 18 + 2 + 15 + 15)  # gaps, caption, names
    assert json.loads(out.with_suffix(".json").read_text())["vae"] == str(tiny_vae)


def test_latents_equal_the_vae_encoding(tiny_vae, folder, tmp_path):
    from fpdm.data.datasets import load_dataset, load_image_folder
    from fpdm.data.latents import decode, extract_latents, load_vae

    extract_latents(folder, tiny_vae, tmp_path / "l", 16, seed=3, progress=False)
    data = load_dataset(str(tmp_path / "l"))
    vae = load_vae(tiny_vae)
    assert data.images.shape == (12, 4, 8, 8) and data.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    # the stored latents are the VAE's seeded posterior draws on the ADM-cropped images, scaled
    imgs = load_image_folder(folder, image_size=16, channels=3).images
    with torch.no_grad():
        want = vae.encode(imgs).latent_dist.sample(generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(data.images, want * vae.config.scaling_factor)
    img = decode(vae, data.images[:2])
    assert img.shape == (2, 3, 16, 16) and img.abs().max() <= 1
    with pytest.raises(FileExistsError, match="already holds latents"):
        extract_latents(folder, tiny_vae, tmp_path / "l", 16, progress=False)


def test_missing_vae_is_named(folder, tmp_path, capsys):
    rc = main(["extract-latents", "--data", str(folder), "--vae", str(tmp_path / "novae"), "--out",
               str(tmp_path / "o"), "--image-size", "16"])
    assert rc == 2 and "expected a diffusers AutoencoderKL folder" in capsys.readouterr().err


def test_damaged_latents_are_never_used(tiny_vae, folder, tmp_path):
    import random

    from fpdm.data.latents import extract_latents, load_latents

    extract_latents(folder, tiny_vae, tmp_path / "l", 16, seed=3, progress=False)
    good = load_latents(tmp_path / "l")
    rng = random.Random(6)
    for name in ("latents-00000.safetensors", "manifest.json"):
        path = tmp_path / "l" / name
        data = path.read_bytes()
        for trial in range(25):  # 20 one-byte flips, then 5 truncations
            at = rng.randrange(len(data))
            damaged = bytearray(data)
            damaged[at] ^= rng.randrange(1, 256)
            path.write_bytes(bytes(damaged) if trial < 20 else data[:at])
            try:
                got = load_latents(tmp_path / "l")
            except ValueError as e:
                assert name in str(e), e
                continue
            assert torch.equal(got.images, good.images) and torch.equal(got.labels, good.labels), (name, at)
        path.write_bytes(data)
