"""The package version, in a module of its own so that any layer can read it without importing the whole
package (pyproject.toml holds the same number)."""

__version__ = "0.1.0"


def command_line() -> str:
    """How this process was started, as one shell-like line (`fpdm train --data digits …`), for the records
    and checkpoints that say where they came from."""
    import shlex
    import sys
    from pathlib import Path

    argv = list(sys.argv)
    if argv and Path(argv[0]).name in ("fpdm", "__main__.py"):
        argv[0] = "fpdm"
    return shlex.join(argv)


def provenance() -> dict[str, str]:
    """The versions and the command line behind a file: fpdm, torch and how the process was started."""
    import torch

    return {"fpdm_version": __version__, "torch_version": str(torch.__version__), "command": command_line()}
