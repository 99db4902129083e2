"""The tiers of the suite: the order in which its runs are worth computing, so that the first GPU
hours buy the main table (the campaign runs them tier by tier; a paper-size notebook renders the
tiers that exist).

1. ML-100k and Beauty, seed 1997: the main table (every model with its learning-rate grid) and
   FMRec's default with every sweep of its model (notebooks 02, 04, 06, 07).
2. ML-100k and Beauty, seed 1997: the ablations and the flow question: alpha = 0, beta = 0,
   v-prediction, the cosine path, the other time samplers, no flow input, no flow-matching term,
   delta 0.01 and 0.1.
3. Seeds 1998 and 1999 of FMRec's default, of no flow input and of each dataset's strongest
   baseline; every other seed-1997 run (the sensitivity grids, the clean profile); Yelp.
4. The rest: the later seeds of the other variants and baselines.
"""
from __future__ import annotations

import json
import math

from ..models import MODELS
from ..training import TrainConfig
from . import notebooks
from .runs import RunSpec, TunedSpec, find, selected_point

DATASET_ORDER = ("ml-100k", "beauty", "yelp")
FIRST_SEED = 1997
# FMRec's changes (besides the seed) that the ablations and the flow question make
TIER_2 = [{"alpha": 0.0}, {"beta": 0.0}, {"prediction": "velocity"}, {"path": "cosine"},
          *({"time_sampler": s} for s in ("uniform", "logit-normal", "cosmap")),
          {"flow_input": False, "sampler": {"steps": 1}}, {"fm_weight": 0.0}, {"delta": 0.01}, {"delta": 0.1}]
NO_FLOW_INPUT = TIER_2[7]


def _plain(value):
    return json.loads(json.dumps(value, default=vars))  # dataclasses (the sampler) as dicts, tuples as lists


def changes(ctx, spec: RunSpec) -> dict:
    """What a run changes from its model's default at the context's size, the seed aside (of a
    nested config, the fields that differ)."""
    out = {}
    for changed, base, default in zip(ctx.configs(spec.model, spec.seed, **spec.overrides),
                                      ctx.configs(spec.model, spec.seed), (MODELS[spec.model][1](), TrainConfig())):
        for key, value in changed.items():
            value, ref = _plain(value), _plain(base.get(key, getattr(default, key)))
            if key != "seed" and value != ref:
                out[key] = {k: v for k, v in value.items() if ref.get(k) != v} if isinstance(ref, dict) else value
    return out


def strongest_baselines(ctx) -> dict[str, str]:
    """Per dataset, the main table's baseline with the best test NDCG@10 at the first seed, among
    those whose tuning runs are all recorded (none: not known yet)."""
    main = notebooks.defaults("01_main_results")
    best: dict[str, tuple[float, str]] = {}
    for dataset in main["datasets"]:
        for model in (m for m in main["models"] if m not in ("pop", "fmrec")):
            point = selected_point(ctx, dataset, model, main["grid"], seed=FIRST_SEED, profile=main["profile"])
            if point is not None:
                r = find(ctx, RunSpec(dataset, model, FIRST_SEED, {"profile": main["profile"], **point}))
                best[dataset] = max(best.get(dataset, (-math.inf, "")), (r.test["NDCG@10"], model))
    return {dataset: model for dataset, (_, model) in best.items()}


def tier(ctx, spec: RunSpec | TunedSpec, strongest: dict[str, str]) -> int:
    """A run's tier (module docstring). A tuned baseline's later seed waits in tier 4 until its
    tuning runs are recorded: which baseline is strongest is not known before."""
    if spec.dataset not in DATASET_ORDER[:2]:
        return 3
    if not MODELS[spec.model][0].trainable:  # popularity: seconds, whatever the seed
        return 1
    if isinstance(spec, TunedSpec):
        return 3 if spec.model == "fmrec" else 4
    changed = changes(ctx, spec)
    changed.pop("lr", None)  # the learning-rate grid is the main table's
    if not changed:  # the main table, FMRec's default
        return 1 if spec.seed == FIRST_SEED else 3 if spec.model in ("fmrec", strongest.get(spec.dataset)) else 4
    if spec.seed == FIRST_SEED:
        return 2 if changed in TIER_2 else 3
    return 3 if changed == NO_FLOW_INPUT else 4
