"""FMRec: a flow from Gaussian noise to the next item's embedding, conditioned on the history.

Forward pass (METHOD.md), hidden size d, history s (B, L), noisy target x_t (B, d), t (B,):

    h   = LayerNorm(Dropout_0.3(E[s]))                               # (B, L, d)
    h'  = h + lambda * (x_t + MLP(sinusoid(t (1/eps - 1))))          # lambda ~ N(delta, delta), (B, L, d)
    z2  = blocks 1-2 (h'),  z4 = blocks 3-4 (z2)                     # pre-LN Transformer, bidirectional
    x1_hat = LayerNorm(Dropout(z4))[:, -1]                           # (B, d) the predicted target embedding
    rec    = MLP_tanh(z2[:, -1])                                     # (B, N + 1) multi-hot of the history

Generation integrates the flow from ``x_0 ~ N(0, I)`` with :func:`fmrec_lib.flow.solvers.solve` and
scores every item by ``x @ E.T``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from ..config import check_settings
from ..flow.paths import make_path
from ..flow.losses import (balanced_reconstruction_loss, cross_entropy_loss, flow_matching_loss, item_scores, multi_hot,
                      sparse_balanced_reconstruction_loss)
from ..flow.solvers import SamplerConfig, Solution, solve
from ..flow.time_samplers import NAMES as TIME_SAMPLERS, TIME_EPS, sample_time
from .base import Recommender
from .fusion import FusionTransformer


@dataclass
class FMRecConfig:
    """FMRec's hyperparameters; defaults are the paper's (METHOD.md)."""

    profile: Literal["paper", "clean"] = "paper"
    hidden: int = 128
    heads: int = 4
    num_blocks: int = 4
    rec_after_block: int = 2  # the reconstructor reads the first "decoder" (blocks 1-2)
    ffn_mult: int = 4
    dropout: float = 0.1
    emb_dropout: float = 0.3
    ln_eps: float = 1e-12
    max_len: int = 50
    path: Literal["straight", "cosine"] = "straight"
    prediction: Literal["x1", "velocity"] = "x1"
    time_sampler: Literal["uniform", "logit-normal", "mode", "cosmap"] = "mode"
    time_eps: float = TIME_EPS
    delta: float = 1e-3  # lambda ~ N(delta, delta): the paper's fusion noise
    alpha: float = 0.2  # cross-entropy weight
    beta: float = 0.4  # reconstruction weight
    rec_hidden: tuple[int, ...] = (512, 2048)
    sampler: SamplerConfig = SamplerConfig()  # how validation and test generate (30 paper-Euler steps)
    attention: Literal["sdpa", "math"] = "sdpa"
    ffn_dropout: bool = True  # dropout between the FFN's GELU and its second matrix, as in the authors' code
    init: Literal["xavier-zero-bias", "xavier", "torch"] = "xavier-zero-bias"  # the authors' initialisation
    flow_input: bool = True  # False: the fusion term is removed, the network never sees x_t or t (an ablation)
    fm_weight: float = 1.0  # weight of the flow-matching term; 0 removes it (an ablation)
    # "dense": the reconstructor's output layer for all B x (N + 1) cells; "sparse": only at the
    # cells the balanced loss reads (the same cells and function up to float round-off). Sparse
    # trades a GEMM for gathers of (2 B L, 2048) rows: slower in eager CPU runs, on Beauty too
    # (docs/performance.md); whether it pays on a GPU (compiled, fp32) is still to be measured.
    rec_loss: Literal["dense", "sparse"] = "dense"

    # Fields that change speed, not the function computed: left out of the run hash.
    SPEED_FIELDS: ClassVar[tuple[str, ...]] = ("rec_loss",)

    def __post_init__(self):
        if isinstance(self.sampler, dict):  # from a stored or JSON config
            object.__setattr__(self, "sampler", SamplerConfig(**self.sampler))
        check_settings(self, positive=("hidden", "heads", "num_blocks", "ffn_mult", "max_len", "rec_hidden"),
                       probabilities=("dropout", "emb_dropout"), non_negative=("fm_weight",))
        if self.hidden % self.heads:
            raise ValueError(f"hidden size {self.hidden} is not divisible by {self.heads} heads")
        if not 0 < self.time_eps < 1:
            raise ValueError(f"time_eps must lie in (0, 1), got {self.time_eps}")
        if not self.flow_input and self.prediction == "velocity":
            raise ValueError("velocity prediction needs the flow input (the velocity depends on the noise x_0)")
        if self.fm_weight == 0 and self.alpha == 0:
            raise ValueError("fm_weight = 0 and alpha = 0 leave nothing that trains the prediction")
        if self.prediction not in ("x1", "velocity"):
            raise ValueError(f"prediction must be 'x1' or 'velocity', got {self.prediction!r}")
        if self.time_sampler not in TIME_SAMPLERS:
            raise ValueError(f"unknown time sampler {self.time_sampler!r}; known: {', '.join(TIME_SAMPLERS)}")
        if not 1 <= self.rec_after_block <= self.num_blocks:
            raise ValueError("rec_after_block must lie in 1..num_blocks")
        if self.delta < 0 or self.alpha < 0 or self.beta < 0:
            raise ValueError("delta, alpha and beta must be >= 0")
        if self.rec_loss not in ("sparse", "dense"):
            raise ValueError(f"rec_loss must be 'sparse' or 'dense', got {self.rec_loss!r}")
        make_path(self.path)


class FMRec(Recommender):
    name = "fmrec"
    version = 2  # 2: the authors' FFN dropout and initialisation, validation after epochs 21, 41, ...
    training_only = ("reconstructor.",)  # generation never reads the history reconstructor

    def __init__(self, num_items: int, config: FMRecConfig | None = None):
        config = config or FMRecConfig()
        super().__init__(num_items, config)
        self.path = make_path(config.path)
        self.net = FusionTransformer(num_items, config)
        widths = (config.hidden, *config.rec_hidden, num_items + 1)
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            layers += [nn.Linear(a, b)] + ([nn.Tanh()] if i < len(widths) - 2 else [])
        self.reconstructor = nn.Sequential(*layers)
        # Hyperparameters that vary between runs live in (non-persistent) tensors, not Python
        # floats: torch.compile guards on floats it reads, and would recompile for every alpha.
        # Only whether a term is computed at all is a Python bool (it changes the graph).
        self.uses_ce, self.uses_rec = config.alpha > 0, config.beta > 0
        for name, value in {"alpha": config.alpha, "beta": config.beta, "fm_weight": config.fm_weight,
                            "time_eps": config.time_eps, "time_scale": 1.0 / config.time_eps - 1.0}.items():
            self.register_buffer(name, torch.tensor(value, dtype=torch.float32), persistent=False)

    @property
    def item_emb(self) -> nn.Embedding:
        return self.net.item_emb

    def encode_history(self, histories: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net.encode_history(histories)

    def denoise(self, x_t: torch.Tensor, t: torch.Tensor, h: torch.Tensor, pad: torch.Tensor,
                generator: torch.Generator | None = None, need_mid: bool = False):
        """Network output (B, d) for t in [0, 1]; the network sees ``t (1/eps - 1)``."""
        return self.net(x_t, t * self.time_scale, h, pad, generator, need_mid)

    def predict_x1(self, x_t: torch.Tensor, t: torch.Tensor, h: torch.Tensor, pad: torch.Tensor,
                   generator: torch.Generator | None = None) -> torch.Tensor:
        """x1_hat (B, d); a velocity-predicting network is converted through the path."""
        out, _ = self.denoise(x_t, t, h, pad, generator)
        if self.config.prediction == "velocity":
            return self.path.x1_from_velocity(out, x_t, t)
        return out

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, histories: torch.Tensor) -> torch.Tensor:
        """``model(x_t, t, history) -> x1_hat``."""
        h, pad = self.encode_history(histories)
        return self.predict_x1(x_t, t, h, pad)

    def loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Loss terms for a batch of histories (B, L) and next items (B,). A zero weight skips its term."""
        cfg = self.config
        B = inputs.shape[0]
        h, pad = self.encode_history(inputs)
        x_1 = self.item_emb(targets)  # (B, d)
        x_0 = torch.randn_like(x_1)
        t = sample_time(cfg.time_sampler, B, eps=self.time_eps, device=inputs.device)
        x_t, velocity = self.path.sample(x_0, x_1, t)
        out, mid = self.denoise(x_t, t, h, pad, need_mid=self.uses_rec)
        if cfg.prediction == "velocity":
            terms = {"fm": flow_matching_loss(out, velocity)}
            x1_hat = self.path.x1_from_velocity(out, x_t, t)
        else:
            terms = {"fm": flow_matching_loss(out, x_1)}
            x1_hat = out
        total = terms["fm"] if cfg.fm_weight == 1 else self.fm_weight * terms["fm"]
        if self.uses_ce:
            terms["ce"] = cross_entropy_loss(x1_hat, self.item_emb.weight, targets, mask_padding=cfg.profile == "clean")
            total = total + self.alpha * terms["ce"]
        if self.uses_rec:
            terms["rec"] = self.reconstruction_loss(mid, inputs)
            total = total + self.beta * terms["rec"]
        terms["loss"] = total
        return terms

    def reconstruction_loss(self, mid: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """Balanced reconstruction loss of the multi-hot of the histories (B, L) from block
        ``rec_after_block``'s last row ``mid`` (B, d); ``rec_loss`` picks how it is computed."""
        if self.config.rec_loss == "dense":
            target = multi_hot(inputs, self.num_items + 1)  # (B, N + 1)
            return balanced_reconstruction_loss(self.reconstructor(mid), target, max_positives=inputs.numel())
        features = self.reconstructor[:-1](mid)  # (B, rec_hidden[-1]), the output layer's input
        output = self.reconstructor[-1]
        return sparse_balanced_reconstruction_loss(features, output.weight, output.bias, inputs,
                                                   max_positives=inputs.numel())

    def n_model_calls(self, sampler: SamplerConfig | None = None) -> int:
        """Network evaluations per generated recommendation (the configured sampler by default;
        one without the flow input, whose every step would predict the same x1_hat)."""
        return (sampler or self.config.sampler).n_model_calls if self.config.flow_input else 1

    @torch.no_grad()
    def generate(self, histories: torch.Tensor, generator: torch.Generator | None = None,
                 sampler: SamplerConfig | None = None, *, return_trajectory: bool = False) -> Solution:
        """Integrate the flow for each history with ``sampler`` (default: the config's, 30
        paper-Euler steps). Without the flow input the network is called once: its output is
        the generated embedding (what one paper-Euler step returns)."""
        cfg = self.config
        sampler = sampler or cfg.sampler
        h, pad = self.encode_history(histories)
        x_0 = torch.randn(histories.shape[0], cfg.hidden, device=histories.device, generator=generator)
        if not cfg.flow_input:
            t = torch.ones(histories.shape[0], device=histories.device)
            return Solution(x=self.predict_x1(x_0, t, h, pad, generator), n_calls=1)
        return solve(lambda x, t: self.predict_x1(x, t, h, pad, generator), x_0,
                     steps=sampler.steps, method=sampler.method, update=sampler.update, path=self.path,
                     noise_scale=sampler.noise_scale, generator=generator, eps=cfg.time_eps,
                     return_trajectory=return_trajectory)

    @torch.no_grad()
    def score(self, histories: torch.Tensor, generator: torch.Generator | None = None,
              sampler: SamplerConfig | None = None) -> torch.Tensor:
        """Scores ``x @ E.T`` (B, N + 1) of the generated embedding against every item."""
        return item_scores(self.generate(histories, generator, sampler).x, self.item_emb.weight)
