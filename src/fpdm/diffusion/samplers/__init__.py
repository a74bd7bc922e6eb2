"""Samplers: one module per family of step rules, each a pure step function and a `StepRule`; this
registry names them for the sampling loop, `calibrate` and the command line. A new sampler is one module
here and one line below (docs/architecture.md)."""

from fpdm.diffusion.samplers import ddim, ddpm, dpmpp, edm, unipc
from fpdm.diffusion.samplers.base import StepRule

SAMPLERS: dict[str, StepRule] = {
    "ddpm": ddpm.RULE,
    "ddim": ddim.RULE,
    "dpm++2m": dpmpp.RULE,
    "unipc": unipc.RULE,
    "unipc3": unipc.RULE3,
    "heun": edm.HEUN,
    "euler": edm.EULER,
}

__all__ = ["SAMPLERS", "StepRule"]
