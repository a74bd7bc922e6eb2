"""The maintenance tools in tools/ stay in step with the code they act on."""

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_tools_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_mutant_still_applies_to_the_code():
    """A mutant whose snippet no longer occurs exactly once makes the whole mutation run refuse to start;
    six had gone stale unnoticed after refactors. This keeps the list runnable."""
    mutation = _load("mutation")
    assert mutation.validate(mutation.MUTANTS, ROOT) == []
    assert len({(m.module, m.old) for m in mutation.MUTANTS}) == len(mutation.MUTANTS)  # no mutant twice
