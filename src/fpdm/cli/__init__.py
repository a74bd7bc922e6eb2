"""The `fpdm` command: one module per command, each parsing its arguments, calling one library function and
printing."""

from fpdm.cli.app import entry, main

__all__ = ["entry", "main"]
