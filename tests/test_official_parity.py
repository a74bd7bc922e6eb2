"""Our models on the official models' weights reproduce the official outputs and gradients.

tests/data/official_outputs.safetensors was recorded from the official FPDM/DiT definitions (see the JSON
beside it). Outputs must agree to 1e-5 absolute, gradients to 1e-4 relative.
"""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fpdm import FPDM, DiT, IterationPlan, ModelConfig

REF = load_file(str(Path(__file__).parent / "data" / "official_outputs.safetensors"))
SMALL = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=32, num_heads=2, num_classes=10,
             learn_sigma=True, class_dropout_prob=0.0)
X, T, Y = REF["input.x"], REF["input.t"], REF["input.y"]


def _prefixed(prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in REF.items() if k.startswith(prefix)}


def _fpdm(pptc: bool) -> FPDM:
    model = FPDM(ModelConfig(arch="fpdm", depth=4, pre_post_timestep_conditioning=pptc, **SMALL))
    model.load_state_dict(_prefixed("fpdm."), strict=True)
    return model.eval()


@pytest.mark.parametrize("pptc", [0, 1])
@pytest.mark.parametrize("iters", [1, 3, 7])
def test_fpdm_outputs(iters, pptc):
    with torch.no_grad():
        out = _fpdm(bool(pptc))(X, T, Y, iters=iters)
    torch.testing.assert_close(out, REF[f"out.fpdm.iters{iters}.pptc{pptc}"], atol=1e-5, rtol=0)


def test_fpdm_reuse_pair():
    model = _fpdm(False)
    with torch.no_grad():
        first, z_star = model(X, REF["input.t_reuse_first"], Y, iters=3, return_state=True)
        second = model(REF["input.x2"], REF["input.t_reuse_second"], Y, iters=3, z_init=z_star)
    torch.testing.assert_close(first, REF["out.fpdm.reuse.first"], atol=1e-5, rtol=0)
    torch.testing.assert_close(z_star, REF["state.fpdm.reuse.zstar_first"], atol=1e-5, rtol=0)
    torch.testing.assert_close(second, REF["out.fpdm.reuse.second"], atol=1e-5, rtol=0)


def test_fpdm_sjfb_gradients():
    model = _fpdm(False).train()
    out = model(X, T, Y, iters=IterationPlan(no_grad=2, with_grad=3))
    torch.testing.assert_close(out, REF["out.fpdm.sjfb_n2_m3"], atol=1e-5, rtol=0)
    (out * REF["input.r"]).sum().backward()
    want = _prefixed("grad.fpdm.sjfb_n2_m3.")
    got = {n: p.grad for n, p in model.named_parameters()}
    assert set(got) == set(want)
    for name, g in want.items():
        rel = ((got[name] - g).norm() / g.norm().clamp_min(1e-12)).item()
        assert rel <= 1e-4, f"{name}: relative gradient error {rel:.2e}"


def test_dit_output():
    model = DiT(ModelConfig(arch="dit", depth=4, **SMALL))
    model.load_state_dict(_prefixed("dit."), strict=True)
    with torch.no_grad():
        out = model.eval()(X, T, Y)
    torch.testing.assert_close(out, REF["out.dit"], atol=1e-5, rtol=0)
