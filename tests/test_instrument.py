import torch

from fpdm import create_model
from fpdm.models.blocks import DiTBlock
from fpdm.models.instrument import count_block_calls


def test_counts_explicit_blocks_and_iterations_and_restores():
    m = create_model("FPDM-T/2", input_size=8, in_channels=1, num_classes=10, pre_depth=2, post_depth=1)
    m.eval()
    x, t, y = torch.randn(3, 1, 8, 8), torch.tensor([1, 2, 3]), torch.tensor([0, 1, 2])
    with torch.no_grad(), count_block_calls(m) as c:
        m(x, t, y, iters=5)
        after_one = c["blocks"]
        m(x, t, y, iters=0)
    assert after_one == 2 + 5 + 1 and c["blocks"] == after_one + 3
    assert all("apply_modulated" not in vars(b) for b in m.modules() if isinstance(b, DiTBlock))
    dit = create_model("DiT-T/2", input_size=8, in_channels=1, num_classes=10).eval()
    with torch.no_grad(), count_block_calls(dit) as c:
        dit(x, t, y)
    assert c["blocks"] == 6
