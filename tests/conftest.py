import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny tensors: more intra-op threads only add overhead and noise on 2-core machines.
    torch.set_num_threads(1)
    yield
