"""fmrec_lib: FMRec (Flow Matching based Sequential Recommender, IJCAI 2025) reproduced.

The public face (README "The library"): data, models, training and evaluation, and the
experiment context the notebooks use."""
from .data import SequentialDataset, load_dataset
from .evaluation import EvalProtocol
from .experiments import plots, reports
from .experiments.context import Context
from .experiments.notebooks import setup
from .experiments.runs import Run, RunSpec
from .flow import SamplerConfig
from .models import MODELS, FMRec, FMRecConfig, build_model
from .training import TrainConfig, evaluate_model, fit, load_model

__version__ = "0.3.0"

__all__ = ["MODELS", "Context", "EvalProtocol", "FMRec", "FMRecConfig", "Run", "RunSpec", "SamplerConfig",
           "SequentialDataset", "TrainConfig", "build_model", "evaluate_model", "fit", "load_dataset", "load_model",
           "plots", "reports", "setup"]
