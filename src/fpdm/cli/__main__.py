"""`python -m fpdm.cli` (and `torchrun ... -m fpdm.cli`): the `fpdm` command."""

from fpdm.cli.app import entry

entry()
