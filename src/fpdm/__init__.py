"""Fixed Point Diffusion Models in PyTorch."""

from fpdm.config import DiffusionConfig, ModelConfig, TrainConfig
from fpdm.diffusion.gaussian import GaussianDiffusion
from fpdm.fixed_point.solvers import GRADIENT_MODES, IterationPlan, draw_plan, solve
from fpdm.models.blocks import compile_blocks
from fpdm.models.dit import DiT
from fpdm.models.fpdm import FPDM
from fpdm.models.registry import MODEL_NAMES, build_model, create_model, model_config
from fpdm.sampling.calibrate import calibrate
from fpdm.sampling.loop import SamplerSettings
from fpdm.sampling.many import SampleRun, sample_seeds
from fpdm.version import __version__ as __version__  # re-exported
from fpdm.weights.loading import load_model

__all__ = [
    "DiT", "DiffusionConfig", "FPDM", "GRADIENT_MODES", "GaussianDiffusion", "IterationPlan", "MODEL_NAMES",
    "ModelConfig", "SampleRun", "SamplerSettings", "TrainConfig", "build_model", "calibrate",
    "compile_blocks", "create_model", "draw_plan", "load_model", "model_config", "sample_seeds", "solve",
]
