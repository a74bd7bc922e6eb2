"""The Gaussian-diffusion maths (ADM-style, float64), the timestep schedules, and the samplers' step rules
(`fpdm.diffusion.samplers`)."""

from fpdm.diffusion.gaussian import GaussianDiffusion, make_diffusion

__all__ = ["GaussianDiffusion", "make_diffusion"]
