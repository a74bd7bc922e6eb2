import torch
from torch import nn

from fpdm.training.ema import make_ema, update_ema


def test_update_is_the_closed_form_average():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    ema = make_ema(model)
    before = [p.clone() for p in ema.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))  # the model moves away from its copy
    update_ema(ema, model, 0.9)
    for e, e0, p in zip(ema.parameters(), before, model.parameters(), strict=True):
        torch.testing.assert_close(e, 0.9 * e0 + 0.1 * p, rtol=0, atol=1e-6)
    # decay 0 copies the model, decay close to 1 barely moves
    update_ema(ema, model, 0.0)
    assert all(torch.equal(e, p) for e, p in zip(ema.parameters(), model.parameters(), strict=True))


def test_ema_is_a_frozen_eval_copy():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5)).train()
    ema = make_ema(model)
    assert not ema.training and not any(p.requires_grad for p in ema.parameters())
    pairs = zip(ema.parameters(), model.parameters(), strict=True)
    assert all(e.data_ptr() != p.data_ptr() for e, p in pairs)
