"""`python -m fpdm.cli` (and `torchrun ... -m fpdm.cli`): the `fpdm` command."""

import sys

from fpdm.cli.app import main

sys.exit(main())
