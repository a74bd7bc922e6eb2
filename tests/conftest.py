import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny tensors: more intra-op threads only add overhead and noise on 2-core machines.
    torch.set_num_threads(1)
    yield


@pytest.fixture(params=["native", "batch-dependent"])
def kernels(request):
    """Run a test twice: on this machine's kernels, and with kernels made batch-dependent on purpose
    (tests/batch_dependent.py), so a claim that passes here also holds where the libraries differ."""
    if request.param == "native":
        yield request.param
        return
    from batch_dependent import perturbed_kernels

    with perturbed_kernels():
        yield request.param
