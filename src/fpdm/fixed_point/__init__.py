"""Fixed-point machinery: Picard and Anderson solvers, per-sample stopping, S-JFB plans."""

from fpdm.fixed_point.solvers import GRADIENT_MODES, IterationPlan, draw_plan, solve

__all__ = ["GRADIENT_MODES", "IterationPlan", "draw_plan", "solve"]
