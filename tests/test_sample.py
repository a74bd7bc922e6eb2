import pytest
import torch

from fpdm.config import ModelConfig
from fpdm.diffusion import GaussianDiffusion
from fpdm.registry import build_model
from fpdm.sample import load_model, sample
from fpdm.schedules import space_timesteps

CFG = dict(input_size=8, patch_size=2, in_channels=1, hidden_size=32, depth=4, num_heads=2, num_classes=10)


def _model(arch="fpdm"):
    torch.manual_seed(0)
    m = build_model(ModelConfig(arch=arch, **CFG))
    with torch.no_grad():
        for p in m.parameters():  # non-trivial outputs (default init outputs zeros)
            p.normal_(0, 0.05)
    return m.eval()


DIFF = GaussianDiffusion.make(learn_sigma=True)


def test_seed_gives_same_sample_in_any_batch():
    m = _model()
    labels = torch.tensor([3, 1, 4])
    together = sample(m, DIFF, labels, [10, 11, 12], steps=5, iters=2)
    alone = sample(m, DIFF, labels[1:2], [11], steps=5, iters=2)
    torch.testing.assert_close(together[1:2], alone, atol=1e-5, rtol=0)
    other = sample(m, DIFF, labels[1:2], [99], steps=5, iters=2)
    assert not torch.allclose(alone, other)


def test_ddpm_sampler_equals_hand_loop():
    m = _model()
    labels, seeds = torch.tensor([2, 5]), [0, 1]
    got = sample(m, DIFF, labels, seeds, steps=4, iters=3)
    spaced = DIFF.respace(space_timesteps(1000, 4))
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    x = torch.stack([torch.randn(1, 8, 8, generator=g) for g in gens])
    with torch.no_grad():
        for i in (3, 2, 1, 0):
            t = torch.full((2,), int(spaced.timesteps[i]))
            out = m(x, t, labels, iters=3)
            noise = torch.stack([torch.randn(1, 8, 8, generator=g) for g in gens])
            x, _ = spaced.ddpm_step(out, x, i, noise, clip_denoised=True)
    torch.testing.assert_close(got, x.clamp(-1, 1))


def test_ddim_eta0_is_deterministic_and_dit_samples():
    m = _model("dit")
    a = sample(m, DIFF, torch.tensor([0, 1]), [0, 1], steps="ddim5", sampler="ddim")
    b = sample(m, DIFF, torch.tensor([0, 1]), [0, 1], steps="ddim5", sampler="ddim")
    assert torch.equal(a, b) and a.shape == (2, 1, 8, 8) and a.abs().max() <= 1


def test_bad_arguments():
    m = _model()
    with pytest.raises(ValueError, match="sampler"):
        sample(m, DIFF, torch.tensor([0]), [0], sampler="euler")
    with pytest.raises(ValueError, match="labels"):
        sample(m, DIFF, torch.tensor([0, 1]), [0])


def test_load_model_rejects_foreign_checkpoint(tmp_path):
    torch.save({"weights": torch.zeros(1)}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not an fpdm training checkpoint"):
        load_model(tmp_path / "x.pt")
