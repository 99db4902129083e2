"""Figures a reader can read: log axes whose tick labels do not overlap."""
import matplotlib

matplotlib.use("Agg")
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from fmrec_lib.experiments import plots  # noqa: E402


def _cost(latencies):
    rows = [{"dataset": "beauty", "label": f"FMRec, {c} steps", "model": "fmrec", "n_model_calls": c, "NDCG@10": 0.17,
             "NDCG@10_low": 0.0, "NDCG@10_high": 0.79, "error_bar": "95 % bound from 8 hits among 2000 users (1 seed)",
             "ms_per_1000_users": ms, "device": "cpu (1 threads)"} for c, ms in zip((1, 2, 5, 10, 30), latencies[:5])]
    rows += [{"dataset": "beauty", "label": m, "model": m.lower(), "n_model_calls": 1, "NDCG@10": 1.0,
              "NDCG@10_low": 0.8, "NDCG@10_high": 1.2, "error_bar": "95 % normal interval over 2000 users (1 seed)",
              "ms_per_1000_users": ms, "device": "cpu (1 threads)"} for m, ms in zip(("SASRec", "GRU4Rec"), latencies[5:])]
    return pd.DataFrame(rows)


def _visible_tick_labels(fig):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    out = []
    for ax in fig.axes:
        ticks = [t for t in ax.xaxis.get_majorticklabels() + ax.xaxis.get_minorticklabels()
                 if t.get_visible() and t.get_text() and ax.get_xlim()[0] <= t.get_position()[0] <= ax.get_xlim()[1]]
        out.append([(t.get_text(), t.get_window_extent(renderer)) for t in ticks])
    return out


@pytest.mark.parametrize("latencies", [
    [314.6, 793.2, 1444.0, 2892.9, 7554.0, 184.7, 212.9],  # less than two decades: matplotlib labelled minor ticks
    [236.0, 430.4, 1132.3, 2175.7, 6409.3, 109.8, 69.5],
    [0.4, 0.9, 2.2, 4.5, 13.0, 0.2, 0.15],  # a GPU's latencies
])
def test_cost_figure_tick_labels_are_readable(latencies):
    fig = plots.cost_quality(_cost(latencies), title="t")
    for labels in _visible_tick_labels(fig):
        assert 2 <= len(labels) <= 10, [t for t, _ in labels]
        boxes = sorted((b for _, b in labels), key=lambda b: b.x0)
        assert all(a.x1 < b.x0 for a, b in zip(boxes, boxes[1:])), [t for t, _ in labels]  # no overlap
        assert all("times" not in t and "^" not in t for t, _ in labels)  # plain numbers
    matplotlib.pyplot.close(fig)
