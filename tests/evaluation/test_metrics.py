import math

import pytest
import torch

from fmrec_lib.evaluation.metrics import EvalProtocol, MetricAccumulator, evaluate, rank_metrics, target_ranks, top_k


def brute_force(scores, targets, ks, mask_padding=False, histories=None):
    """Sort each row in Python; ties count against the target."""
    totals = {f"{m}@{k}": 0.0 for m in ("HR", "NDCG") for k in ks}
    for row, target, hist in zip(scores.tolist(), targets.tolist(), (histories.tolist() if histories is not None else [None] * len(targets))):
        excluded = set()
        if mask_padding:
            excluded.add(0)
        if hist is not None:
            excluded |= {i for i in hist if i != 0}
        s = [(-math.inf if i in excluded else v) for i, v in enumerate(row)]
        rank = sum(1 for i, v in enumerate(s) if i != target and v >= s[target])
        for k in ks:
            if rank < k:
                totals[f"HR@{k}"] += 1
                totals[f"NDCG@{k}"] += 1 / math.log2(rank + 2)
    return {name: 100 * v / len(targets) for name, v in totals.items()}


@pytest.mark.parametrize("seed", range(5))
def test_matches_brute_force_with_ties_and_uneven_batches(seed):
    g = torch.Generator().manual_seed(seed)
    n_users, n_items = 37, 30
    scores = torch.randint(0, 6, (n_users, n_items + 1), generator=g).float()  # many ties
    targets = torch.randint(1, n_items + 1, (n_users,), generator=g)
    protocol = EvalProtocol(ks=(1, 5, 10, 20, 50), mask_padding=bool(seed % 2))
    got = evaluate(lambda h: scores[h[:, 0]], torch.arange(n_users).view(-1, 1), targets, protocol, batch_size=8)
    want = brute_force(scores, targets, protocol.ks, mask_padding=protocol.mask_padding)
    assert got == pytest.approx(want)


def test_exclude_history_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(20, 16, generator=g)
    hist = torch.randint(0, 16, (20, 5), generator=g)
    targets = torch.randint(1, 16, (20,), generator=g)
    protocol = EvalProtocol(ks=(3, 10), mask_padding=True, exclude_history=True)
    acc = MetricAccumulator(protocol)
    acc.update(scores, targets, hist)
    assert acc.result() == pytest.approx(brute_force(scores, targets, (3, 10), True, hist))


def test_all_equal_scores_are_no_hit_not_a_perfect_hit():
    ranks = target_ranks(torch.zeros(3, 10), torch.tensor([1, 5, 9]))
    assert ranks.tolist() == [9, 9, 9]


def test_k_larger_than_item_count_all_hit_no_hit_single_user():
    scores = torch.tensor([[0.0, 3.0, 2.0, 1.0]])
    acc = MetricAccumulator(EvalProtocol(ks=(1, 100)))
    acc.update(scores, torch.tensor([1]))
    assert acc.result() == {"HR@1": 100.0, "HR@100": 100.0, "NDCG@1": 100.0, "NDCG@100": 100.0}
    acc = MetricAccumulator(EvalProtocol(ks=(1, 2)))
    acc.update(scores, torch.tensor([3]))
    assert acc.result() == {"HR@1": 0.0, "HR@2": 0.0, "NDCG@1": 0.0, "NDCG@2": 0.0}
    acc = MetricAccumulator(EvalProtocol(ks=(100,)))
    acc.update(scores, torch.tensor([3]))
    assert acc.result()["NDCG@100"] == pytest.approx(100 / math.log2(2 + 2))


def test_padding_mask_changes_the_ranking():
    scores = torch.tensor([[9.0, 1.0, 2.0]])  # padding scores best
    assert target_ranks(EvalProtocol.for_profile("paper").mask_scores(scores), torch.tensor([2])).item() == 1
    assert target_ranks(EvalProtocol.for_profile("clean").mask_scores(scores), torch.tensor([2])).item() == 0
    assert top_k(scores, 2, EvalProtocol.for_profile("clean")).tolist() == [[2, 1]]


def test_exact_mean_is_not_a_mean_of_batch_means():
    # 3 users: batch of 2 with both hits, batch of 1 miss: exact mean 66.7 %, batch-mean 50 %.
    scores = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    got = evaluate(lambda h: scores[h[:, 0]], torch.arange(3).view(-1, 1), torch.tensor([1, 1, 2]),
                   EvalProtocol(ks=(1,)), batch_size=2)
    assert got["HR@1"] == pytest.approx(200 / 3)


def test_nan_scores_are_refused():
    acc = MetricAccumulator(EvalProtocol(ks=(1,)))
    acc.update(torch.tensor([[0.0, float("nan"), 1.0]]), torch.tensor([1]))
    with pytest.raises(FloatingPointError, match="NaN"):
        acc.result()


def test_protocol_is_printable_and_validated():
    assert "padding item scored" in str(EvalProtocol.for_profile("paper"))
    assert "masked: padding item 0" in str(EvalProtocol.for_profile("clean"))
    with pytest.raises(ValueError, match="unknown profile"):
        EvalProtocol.for_profile("fast")
    with pytest.raises(ValueError, match="ks"):
        EvalProtocol(ks=(0,))


def test_rank_metrics_values():
    m = rank_metrics(torch.tensor([0, 1, 5]), (2,))
    assert m["HR@2"].tolist() == [1, 1, 0]
    assert m["NDCG@2"].tolist() == pytest.approx([1.0, 1 / math.log2(3), 0.0])


def test_beyond_accuracy_metrics():
    from fmrec_lib.evaluation.metrics import coverage, intra_list_diversity, list_overlap

    lists = torch.tensor([[1, 2], [2, 3]])
    assert coverage(lists, 6) == pytest.approx(50.0)
    vectors = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    # list [1, 2]: identical directions -> distance 0; list [2, 3]: orthogonal -> distance 1
    assert intra_list_diversity(lists, vectors) == pytest.approx(0.5)
    assert list_overlap(lists, lists) == 100.0
    assert list_overlap(torch.tensor([[1, 2]]), torch.tensor([[2, 5]])) == pytest.approx(100 / 3)
