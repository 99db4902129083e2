"""Training: ``fit`` (one loop: selection, patience, checkpoint and resume, deadline, NaN guard)
and the checkpoint format."""
from .train import (DeadlineReached, NonFiniteLossError, RunResult, TrainConfig, evaluate_model, fit, load_model,
                  model_device, resolve_configs, run_config_hash)

__all__ = ["DeadlineReached", "NonFiniteLossError", "RunResult", "TrainConfig", "evaluate_model", "fit", "load_model",
           "model_device", "resolve_configs", "run_config_hash"]
