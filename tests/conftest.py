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


def load_tool(name: str):
    """A script of tools/ as a module (they are not a package)."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).parents[1] / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_tools_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
