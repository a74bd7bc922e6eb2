"""Fixed Point Diffusion Models in PyTorch."""

from .blocks import compile_blocks
from .config import DiffusionConfig, ModelConfig, TrainConfig
from .diffusion import GaussianDiffusion
from .dit import DiT
from .fixed_point import GRADIENT_MODES, IterationPlan, draw_plan, solve
from .fpdm import FPDM
from .registry import MODEL_NAMES, build_model, create_model, model_config

__version__ = "0.1.0"

__all__ = [
    "DiT", "DiffusionConfig", "FPDM", "GRADIENT_MODES", "GaussianDiffusion", "IterationPlan", "MODEL_NAMES",
    "ModelConfig", "TrainConfig", "build_model", "compile_blocks", "create_model", "draw_plan",
    "model_config", "solve",
]
