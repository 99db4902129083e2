"""The flow: probability paths, training-time samplers of t, ODE samplers (solvers) and loss terms."""
from .paths import make_path
from .solvers import SamplerConfig, solve

__all__ = ["SamplerConfig", "make_path", "solve"]
