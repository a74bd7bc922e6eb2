import math

import pytest
import torch

from fpdm.models.embeddings import LabelEmbedder, drop_labels, sincos_pos_embed_2d, timestep_embedding


def test_pos_embed_closed_form():
    d, g = 8, 3
    pe = sincos_pos_embed_2d(d, g)  # (9, 8)
    row, col = 1, 2
    tok = pe[row * g + col]
    omega = [1.0, 1.0 / 100]  # 1/10000^(i/2), i = 0, 1
    want = [math.sin(col * w) for w in omega] + [math.cos(col * w) for w in omega]
    want += [math.sin(row * w) for w in omega] + [math.cos(row * w) for w in omega]
    torch.testing.assert_close(tok, torch.tensor(want), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_pos_embed_2d(6, 2)


def test_timestep_embedding_closed_form():
    e = timestep_embedding(torch.tensor([0, 10]), 4)
    # freqs = exp(-ln(1e4) * [0, 1] / 2) = [1, 0.01]; layout [cos ; sin]
    want = torch.tensor([[1, 1, 0, 0], [math.cos(10), math.cos(0.1), math.sin(10), math.sin(0.1)]])
    torch.testing.assert_close(e, want.float(), atol=1e-6, rtol=0)
    assert timestep_embedding(torch.tensor([3.0]), 5).shape == (1, 5)


def test_label_dropout_uses_null_class():
    labels = torch.tensor([0, 1, 2])
    assert torch.equal(drop_labels(labels, 1.0, 3), torch.tensor([3, 3, 3]))
    assert drop_labels(labels, 0.0, 3) is labels and drop_labels(labels, 1.0, 0) is labels
    g = torch.Generator().manual_seed(0)
    many = drop_labels(torch.zeros(20000, dtype=torch.long), 0.1, 7, generator=g)
    assert set(many.tolist()) == {0, 7} and abs((many == 7).float().mean().item() - 0.1) < 0.01
    emb = LabelEmbedder(num_classes=3, hidden_size=2, dropout_prob=1.0)
    with torch.no_grad():
        emb.embedding_table.weight.copy_(torch.arange(8.0).view(4, 2))
    assert torch.equal(emb(labels), emb.embedding_table.weight[[0, 1, 2]])  # the module never drops
    assert emb.null_class == 3
    uncond = LabelEmbedder(0, 2, 0.1)
    assert torch.equal(uncond(labels), uncond.embedding_table.weight[[0, 0, 0]])  # all the null class
    with pytest.raises(ValueError):
        LabelEmbedder(3, 2, 1.5)


@pytest.mark.parametrize("shape", [(3, 1, 8, 2), (2, 4, 16, 4), (1, 3, 8, 8)])
def test_patch_embed_is_the_convolution_as_a_matmul(shape):
    from fpdm.models.embeddings import PatchEmbed

    n, c, size, p = shape
    torch.manual_seed(0)
    pe = PatchEmbed(size, p, c, 24)
    x = torch.randn(n, c, size, size)
    conv = pe.proj(x).flatten(2).transpose(1, 2)  # (N, T, D): token t is patch (t // g, t % g)
    torch.testing.assert_close(pe(x), conv, atol=2e-6, rtol=0)
    assert list(dict(pe.named_parameters())) == ["proj.weight", "proj.bias"]  # the checkpoints' names
