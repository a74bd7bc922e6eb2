"""The maintenance tools in tools/ stay in step with the code they act on."""

from pathlib import Path

from conftest import load_tool

ROOT = Path(__file__).parents[1]


def test_every_mutant_still_applies_to_the_code():
    """A mutant whose snippet no longer occurs exactly once makes the whole mutation run refuse to start;
    six had gone stale unnoticed after refactors. This keeps the list runnable."""
    mutation = load_tool("mutation")
    assert mutation.validate(mutation.MUTANTS, ROOT) == []
    assert len({(m.module, m.old) for m in mutation.MUTANTS}) == len(mutation.MUTANTS)  # no mutant twice
