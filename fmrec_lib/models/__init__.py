"""Model registry: ``build_model(name, dataset, config)`` for every model in the harness."""
from __future__ import annotations

from typing import Any

from .base import Recommender
from .diffurec import DiffuRec, DiffuRecConfig
from .fmrec import FMRec, FMRecConfig
from .popularity import Popularity, PopularityConfig
from .sequential import GRU4Rec, GRU4RecConfig, SASRec, SASRecConfig

MODELS: dict[str, tuple[type[Recommender], type]] = {
    "fmrec": (FMRec, FMRecConfig),
    "pop": (Popularity, PopularityConfig),
    "gru4rec": (GRU4Rec, GRU4RecConfig),
    "sasrec": (SASRec, SASRecConfig),
    "diffurec": (DiffuRec, DiffuRecConfig),
}


def model_config_class(name: str) -> type:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    return MODELS[name][1]


def build_model(name: str, dataset, config: Any = None) -> Recommender:
    """Instantiate a model for ``dataset`` (its item count; popularity also reads its counts)."""
    cfg_cls = model_config_class(name)  # raises for an unknown name, listing the known ones
    cls = MODELS[name][0]
    config = config if config is not None else cfg_cls()
    if name == "pop":
        return cls(dataset.num_items, config, counts=dataset.item_counts())
    return cls(dataset.num_items, config)


__all__ = ["MODELS", "DiffuRec", "DiffuRecConfig", "FMRec", "FMRecConfig", "GRU4Rec", "GRU4RecConfig", "Popularity",
           "PopularityConfig", "Recommender", "SASRec", "SASRecConfig", "build_model", "model_config_class"]
