"""A small sequential dataset with a learnable rule: each next item is the previous one + 1."""
import numpy as np

from fmrec_lib.data import build_dataset
from fmrec_lib.flow.solvers import SamplerConfig


def cyclic_dataset(n_users: int = 150, n_items: int = 30, seed: int = 0):
    rng = np.random.default_rng(seed)
    seqs = {}
    for u in range(n_users):
        start, length = rng.integers(n_items), rng.integers(6, 12)
        seqs[str(u)] = [str((start + i) % n_items + 1) for i in range(length)]
    return build_dataset(seqs, "cyclic")


TINY_FMREC = dict(hidden=32, heads=2, max_len=8, rec_hidden=(32, 64), sampler=SamplerConfig(steps=5))


def write_sequences(ds, path):
    """Write a dataset as ICLRec-style text (one user per line), for file-based entry points."""
    path.write_text("\n".join(f"{i} " + " ".join(map(str, ds.train[u] + ds.val[u] + ds.test[u]))
                              for i, u in enumerate(ds.users, 1)))
    return path


class FakeClock:
    """Stands in for the ``time`` module of one library module: ``jump()`` moves its wall clock a
    long way forward, so a deadline passes at a chosen epoch; perf_counter stays real."""

    def __init__(self):
        import time
        self._time, self.perf_counter, self.offset = time.time, time.perf_counter, 0.0

    def time(self):
        return self._time() + self.offset

    def jump(self):
        self.offset = 1e9


def deadline_after_epoch(monkeypatch, module, epoch: int = 4):
    """A fake clock in library ``module`` (``fmrec_lib.train`` or ``fmrec_lib.stacked``) that passes
    any deadline once ``epoch`` is trained. Returns (a deadline, the on_epoch_end hook that moves
    the clock, the list of epochs the hook has seen)."""
    clock = FakeClock()
    monkeypatch.setattr(module, "time", clock)
    trained: list[int] = []

    def hook(e: int, record: dict) -> None:
        trained.append(e)
        if e == epoch:
            clock.jump()
    return clock.time() + 3600, hook, trained
