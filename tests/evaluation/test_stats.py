"""Uncertainty and significance from per-user outcomes, against known answers."""
import numpy as np
import pytest
import torch

from fmrec_lib.evaluation.metrics import beyond_accuracy, metrics_from_ranks
from fmrec_lib.evaluation.stats import interval, paired_bootstrap, per_user, wilson


def test_paired_bootstrap_finds_a_real_difference_and_not_a_null_one():
    rng = np.random.default_rng(0)
    base = rng.random(2000) * 10
    better = base + 1.0 + rng.normal(0, 0.5, 2000)  # +1 point for every user, paired noise
    res = paired_bootstrap(better, base, resamples=2000)
    assert res.significant and res.ci_low > 0.9 and res.ci_high < 1.1 and res.p_value < 0.01
    assert res.relative == pytest.approx(100 * (better.mean() - base.mean()) / base.mean())
    assert res.relative_ci_low < res.relative < res.relative_ci_high
    same = paired_bootstrap(base + rng.normal(0, 0.5, 2000), base, resamples=2000)
    assert same.ci_low < 0 < same.ci_high and not same.significant
    with pytest.raises(ValueError):
        paired_bootstrap(base, base[:10])


def test_pairing_matters():
    # two models that differ by a small constant on users whose outcomes vary a lot:
    # unpaired intervals overlap, the paired test sees the difference
    rng = np.random.default_rng(1)
    base = rng.random(500) * 100
    res = paired_bootstrap(base + 0.5, base, resamples=1000)
    assert res.significant and res.ci_low == pytest.approx(0.5) and res.ci_high == pytest.approx(0.5)


def test_wilson_interval_known_values():
    low, high = wilson(7, 2000)  # 7 hits out of 2,000 users: the loss-ablation example
    assert low == pytest.approx(0.00170, abs=2e-5) and high == pytest.approx(0.00720, abs=5e-5)
    assert wilson(0, 100)[0] == 0.0 and wilson(0, 100)[1] > 0


def test_interval_sd_over_seeds_or_over_users():
    many = interval([1.0, 2.0, 3.0], "NDCG@10")
    assert many.mean == 2.0 and many.high == 3.0 and many.low == 1.0 and "3 seeds" in many.kind
    ranks = np.array([0] * 7 + [100] * 1993)
    one = interval([0.35], "HR@10", per_user(ranks, "HR@10"))
    assert "Wilson" in one.kind and one.low < 0.35 < one.high and one.low > 0
    assert interval([0.2, 0.0], "HR@10").low == 0.0  # never below zero


def test_per_user_metrics_from_ranks():
    ranks = np.array([0, 1, 9, 10, 50])
    hr = per_user(ranks, "HR@10")
    assert list(hr) == [100, 100, 100, 0, 0]
    ndcg = per_user(ranks, "NDCG@10")
    assert ndcg[0] == 100 and ndcg[1] == pytest.approx(100 / np.log2(3)) and ndcg[3] == 0
    assert metrics_from_ranks(torch.tensor(ranks), (5,))["HR@5"].tolist() == [100, 100, 0, 0, 0]


def test_beyond_accuracy_measures():
    counts = torch.tensor([0, 50, 40, 30, 20, 10, 5, 4, 3, 2, 1])  # item 0 is padding; 10 items
    lists = torch.tensor([[1, 2], [1, 3], [9, 10]])
    out = beyond_accuracy(lists, counts)
    assert out["coverage@2"] == pytest.approx(100 * 5 / 10)
    assert out["avg_popularity@2"] == pytest.approx((50 + 40 + 50 + 30 + 2 + 1) / 6)
    # head = the 2 most popular items (20 % of 10): items 1 and 2; slots 3, 9, 10 are long tail
    assert out["long_tail@2"] == pytest.approx(100 * 3 / 6)


def test_a_relative_gain_over_a_baseline_with_no_hits_has_an_unbounded_interval():
    users = 500
    a = np.zeros(users)
    a[:6] = 100.0  # 6 hits
    b = np.zeros(users)
    b[100:102] = 100.0  # 2 hits: some resamples have none, so the relative gain is unbounded there
    res = paired_bootstrap(a, b, resamples=2000)
    assert res.relative == pytest.approx(200.0) and res.relative_ci_high == np.inf


def test_an_ndcg_interval_with_few_hits_is_not_empty():
    from fmrec_lib.evaluation.stats import interval_from_summary

    none = interval_from_summary(0.0, 0.0, 2000, "NDCG@10", hits=0)
    assert none.low == 0 and none.high > 0.1 and "hits" in none.kind
    many = interval_from_summary(5.0, 20.0, 2000, "NDCG@10", hits=200)
    assert many.low < 5.0 < many.high and "normal" in many.kind
