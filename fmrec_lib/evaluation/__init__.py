"""Full-ranking metrics with a printable protocol, and the statistics the notebooks report."""
from .metrics import EvalProtocol, evaluate

__all__ = ["EvalProtocol", "evaluate"]
