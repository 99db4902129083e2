"""Size presets: what changes from the paper's settings at each size (printed in every caption).

* ``paper``: the paper's settings (meant for a GPU).
* ``quick``: CPU-friendly: FMRec/DiffuRec hidden 64 (reconstructor 64-256-512-N), histories of
  20 items, each user's 20 most recent training prefixes, 16 epochs validated every 4
  (patience 3), every dataset restricted to 2,000 users (ML-100k keeps its 943).
* ``smoke``: seconds, for CI: tiny models, 60-200 users, 2 epochs. Numbers are meaningless.

A preset names config fields per model (``"*"``: every model) and train fields; a key that is
not a field fails when the preset is built, as every unknown key does in this project.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..flow.solvers import SamplerConfig
from ..models import MODELS, model_config_class
from ..training import TrainConfig
from ..utils import resolve_device

SIZES = ("smoke", "quick", "paper")


@dataclass(frozen=True)
class Size:
    name: str
    model: dict[str, dict[str, Any]]  # model name ("*": every model) -> config overrides
    train: dict[str, Any]
    max_users: dict[str, int]  # dataset name ("*": any other dataset, a user's own included) -> user cap
    description: str
    budget_note: str = ""  # how the size relates to the paper's training budget (shown on figures)

    def __post_init__(self):
        fields = {name: {f.name for f in dataclasses.fields(cfg)} for name, (_, cfg) in MODELS.items()}
        for model, overrides in self.model.items():
            if model != "*" and model not in fields:
                raise ValueError(f"size {self.name!r}: unknown model {model!r}; known: {sorted(fields)}")
            known = set.intersection(*fields.values()) if model == "*" else fields[model]
            unknown = sorted(set(overrides) - known)
            if unknown:
                raise ValueError(f"size {self.name!r}: unknown {model} setting(s) {unknown}; known: {sorted(known)}")
        train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
        unknown = sorted(set(self.train) - train_fields)
        if unknown:
            raise ValueError(f"size {self.name!r}: unknown train setting(s) {unknown}; known: {sorted(train_fields)}")

    def configs(self, model: str, **overrides) -> tuple[dict, dict]:
        """(model config, train config) dicts for ``model`` at this size, then ``overrides``
        (any field of either config; an unknown key fails, naming the known ones)."""
        model_fields = {f.name for f in dataclasses.fields(model_config_class(model))}
        train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
        mc = {**self.model.get("*", {}), **self.model.get(model, {})}
        tc = dict(self.train)
        for key, value in overrides.items():
            if key in model_fields:
                mc[key] = value
            elif key in train_fields:
                tc[key] = value
            else:
                raise ValueError(f"unknown setting {key!r} for {model}; known: {sorted(model_fields | train_fields)}")
        return mc, tc

    def user_cap(self, dataset: str) -> int | None:
        return self.max_users.get(dataset, self.max_users.get("*"))


PRESETS: dict[str, Size] = {size.name: size for size in (
    Size("paper", {}, {}, {}, "the paper's settings", "the paper's training budget"),
    Size("quick",
         {"*": {"max_len": 20},
          "fmrec": {"hidden": 64, "rec_hidden": (256, 512)},
          "diffurec": {"hidden": 64}},
         {"epochs": 16, "eval_every": 4, "patience": 3, "last_k_samples": 20},
         {"*": 2000},
         "quick (CPU): hidden 64, histories of 20 items, each user's 20 latest prefixes, 16 epochs "
         "validated every 4 (patience 3); every dataset capped at 2,000 users",
         "quick size: about 3 % of the paper's training budget, not a test of the paper"),
    Size("smoke",
         {"*": {"max_len": 8},
          "fmrec": {"hidden": 16, "heads": 2, "rec_hidden": (32, 64), "sampler": SamplerConfig(steps=5)},
          "diffurec": {"hidden": 16, "heads": 2, "diffusion_steps": 5},
          "sasrec": {"hidden": 16}, "gru4rec": {"embedding": 16, "hidden": 16}},
         {"epochs": 2, "eval_every": 1, "patience": 2, "batch_size": 128, "last_k_samples": 3},
         {"ml-100k": 60, "*": 200},
         "smoke (CI): tiny models, 60-200 users, 2 epochs: the numbers mean nothing",
         "smoke size: the numbers mean nothing"),
)}


def get_size(name: str) -> Size:
    """The preset called ``name`` (``smoke``, ``quick`` or ``paper``)."""
    if name not in SIZES:
        raise ValueError(f"unknown size {name!r}; known: auto, {', '.join(SIZES)}")
    return PRESETS[name]


def resolve_size(size: str, device: str = "auto") -> str:
    """``auto``: ``paper`` with CUDA, ``quick`` without."""
    if size == "auto":
        return "paper" if resolve_device(device).type == "cuda" else "quick"
    get_size(size)
    return size
