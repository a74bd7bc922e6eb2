"""Fixed Point Diffusion Models in PyTorch."""

__version__ = "0.1.0"  # before the imports: modules below read it while the package initialises

from .blocks import compile_blocks
from .calibrate import calibrate
from .config import DiffusionConfig, ModelConfig, TrainConfig
from .diffusion import GaussianDiffusion
from .dit import DiT
from .fixed_point import GRADIENT_MODES, IterationPlan, draw_plan, solve
from .fpdm import FPDM
from .registry import MODEL_NAMES, build_model, create_model, model_config
from .sample import SamplerSettings, load_model
from .sample_many import SampleRun, sample_seeds

__all__ = [
    "DiT", "DiffusionConfig", "FPDM", "GRADIENT_MODES", "GaussianDiffusion", "IterationPlan", "MODEL_NAMES",
    "ModelConfig", "SampleRun", "SamplerSettings", "TrainConfig", "build_model", "calibrate",
    "compile_blocks", "create_model", "draw_plan", "load_model", "model_config", "sample_seeds", "solve",
]
