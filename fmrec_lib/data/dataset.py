"""The dataset object the whole library uses, and how it is built from raw sequences.

Leave-one-out as in METHOD.md: for a user with items ``s`` in time order,
``train = s[:-2]``, ``val = [s[-2]]``, ``test = [s[-1]]``. Items are ``1..num_items``;
``0`` is padding. Model inputs keep the last ``max_len`` items, left-padded with 0.

Raw interactions are grouped per user and ordered by time with a stable sort; exact
duplicate rows (same user, item and timestamp, e.g. a file concatenated twice) are dropped
first by :func:`drop_duplicate_interactions`, because a duplicated last event would otherwise
become both the validation and the test target. :meth:`SequentialDataset.fingerprint`
identifies a split by its content, whatever the file was called.
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Hashable, Literal

import numpy as np
import torch

from .readers import DataFormatError, Interaction

log = logging.getLogger(__name__)

MIN_SEQUENCE_LENGTH = 3  # one training item, one validation target, one test target


@dataclass
class SequentialDataset:
    """Leave-one-out split of users' item sequences.

    ``train[u]`` is the list of training items of user ``u`` (chronological), ``val[u]`` and
    ``test[u]`` one-item lists. ``item_ids[i - 1]`` is the raw id of item ``i`` when known.
    ``dropped_users`` counts users too short to split, ``duplicates_dropped`` the exact
    duplicate interactions removed while reading; ``notes`` says what was done to the data.
    A dataset is not mutated once built (its fingerprint is cached).
    """

    name: str
    train: dict[Hashable, list[int]]
    val: dict[Hashable, list[int]]
    test: dict[Hashable, list[int]]
    num_items: int
    source: str = ""
    item_ids: list[str] | None = None
    dropped_users: int = 0
    label: str = ""
    notes: list[str] = field(default_factory=list)
    duplicates_dropped: int = 0
    _fingerprint: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        if not (self.train.keys() == self.val.keys() == self.test.keys()):
            raise DataFormatError(f"{self.name}: train, val and test must have the same users")
        if not self.train:
            raise DataFormatError(f"{self.name}: no users left to split")
        for part_name, part in (("train", self.train), ("val", self.val), ("test", self.test)):
            for u, seq in part.items():
                if part_name != "train" and len(seq) != 1:
                    raise DataFormatError(f"{self.name}: {part_name}[{u!r}] must hold one item, got {seq}")
                if len(seq) == 0:
                    raise DataFormatError(f"{self.name}: user {u!r} has an empty {part_name} sequence")
                bad = [i for i in seq if not (isinstance(i, (int, np.integer)) and 1 <= i <= self.num_items)]
                if bad:
                    raise DataFormatError(
                        f"{self.name}: user {u!r} has item id(s) {bad[:5]} outside 1..{self.num_items} in {part_name}"
                    )

    @property
    def users(self) -> list[Hashable]:
        return list(self.train)

    @property
    def num_users(self) -> int:
        return len(self.train)

    @property
    def display_name(self) -> str:
        return self.label or self.name

    def fingerprint(self) -> str:
        """First 16 hex digits of the sha256 of the split's content.

        Hashes ``num_items`` and, for every user in order, its id and train, val and test
        items, as compact JSON: two files with the same name and the same counts but a
        different order or content get different fingerprints, the same content read twice
        the same one. The name, label, source and raw item ids are not part of it.
        """
        if self._fingerprint is None:
            content = [self.num_items, [[u, self.train[u], self.val[u], self.test[u]] for u in self.train]]
            # default=int: item ids may be numpy integers; "v1" versions the encoding.
            encoded = json.dumps(["fmrec-split-v1", content], separators=(",", ":"), default=int)
            self._fingerprint = hashlib.sha256(encoded.encode()).hexdigest()[:16]
        return self._fingerprint

    def same_split(self, other: "SequentialDataset") -> bool:
        """Same users in the same order with the same train, val and test items."""
        return (list(self.train) == list(other.train)
                and (self.train, self.val, self.test) == (other.train, other.val, other.test))

    def stats(self) -> dict:
        """The paper's dataset table: users, items, interactions, average length, sparsity."""
        n_users = len(self.train)
        n_inter = sum(len(s) + 2 for s in self.train.values())
        return {
            "dataset": self.display_name,
            "users": n_users,
            "items": self.num_items,
            "interactions": n_inter,
            "avg_length": n_inter / n_users,
            "sparsity": 1.0 - n_inter / (n_users * self.num_items),
            "dropped_users": self.dropped_users,
        }

    def subset(self, max_users: int | None, seed: int = 0) -> "SequentialDataset":
        """A deterministic random subset of ``max_users`` users (same item ids), in original order."""
        if max_users is None or max_users >= len(self.train):
            return self
        if max_users < 1:
            raise ValueError(f"max_users must be >= 1, got {max_users}")
        users = self.users
        keep = np.sort(np.random.default_rng(seed).permutation(len(users))[:max_users])
        chosen = [users[i] for i in keep]
        return SequentialDataset(
            name=self.name, train={u: self.train[u] for u in chosen}, val={u: self.val[u] for u in chosen},
            test={u: self.test[u] for u in chosen}, num_items=self.num_items, source=self.source,
            item_ids=self.item_ids, dropped_users=self.dropped_users, label=self.label,
            notes=self.notes + [f"subset of {max_users} users (seed {seed})"],
            duplicates_dropped=self.duplicates_dropped,
        )

    def training_samples(self, max_len: int = 50, last_k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Every prefix of every training sequence predicts its next item.

        Returns ``inputs`` (S, max_len) left-padded with 0 and ``targets`` (S,), where a train
        sequence of length m gives m - 1 samples (ML-100k: 97,171; Beauty: 131,413).
        ``last_k`` keeps only each user's k most recent samples (a quick-run reduction).
        """
        if last_k is not None and last_k < 1:
            raise ValueError(f"last_k must be >= 1, got {last_k}")
        # Lay users end to end, each preceded by max_len zeros, so a window of max_len items
        # ending just before a target never reaches into the previous user.
        seqs = [np.asarray(s, dtype=np.int64) for s in self.train.values()]
        pad = np.zeros(max_len, dtype=np.int64)
        flat = np.concatenate([x for s in seqs for x in (pad, s)])
        starts = np.cumsum([0] + [max_len + len(s) for s in seqs[:-1]]) + max_len  # first item of each user
        lengths = np.array([len(s) for s in seqs])
        n = int((lengths - 1).clip(min=0).sum())
        if n == 0:
            raise DataFormatError(f"{self.name}: no training samples (every train sequence has one item)")
        user_of = np.repeat(np.arange(len(seqs)), (lengths - 1).clip(min=0))
        offset = np.arange(n) - np.repeat(np.cumsum(np.r_[0, (lengths - 1).clip(min=0)[:-1]]), (lengths - 1).clip(min=0))
        target_pos = starts[user_of] + 1 + offset  # (S,) position of each target in flat
        windows = np.lib.stride_tricks.sliding_window_view(flat, max_len)  # windows[p] = flat[p:p+L]
        if last_k is not None:
            per_user = (lengths - 1).clip(min=0)
            keep = offset >= np.repeat(per_user - last_k, per_user)
            target_pos = target_pos[keep]
        inputs = windows[target_pos - max_len]
        return torch.from_numpy(np.ascontiguousarray(inputs)), torch.from_numpy(flat[target_pos].copy())

    def eval_inputs(self, split: Literal["val", "test"], max_len: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs (U, max_len) and targets (U,): val uses the train sequence, test adds the val item."""
        if split not in ("val", "test"):
            raise ValueError(f"split must be 'val' or 'test', got {split!r}")
        histories = []
        for u, seq in self.train.items():
            hist = seq + self.val[u] if split == "test" else seq
            histories.append(hist[-max_len:])
        targets = [(self.val if split == "val" else self.test)[u][0] for u in self.train]
        return pad_left(histories, max_len), torch.tensor(targets, dtype=torch.long)

    def item_counts(self) -> torch.Tensor:
        """Training-set frequency of each item (N + 1,), padding 0 counted as 0."""
        counts = torch.zeros(self.num_items + 1, dtype=torch.long)
        flat = torch.tensor([i for s in self.train.values() for i in s], dtype=torch.long)
        return counts.scatter_add_(0, flat, torch.ones_like(flat))


def pad_left(histories: list[list[int]], max_len: int) -> torch.Tensor:
    """Left-pad lists of item ids with 0 to (len(histories), max_len), keeping the last max_len."""
    out = torch.zeros(len(histories), max_len, dtype=torch.long)
    for row, hist in enumerate(histories):
        hist = hist[-max_len:]
        if hist:
            out[row, max_len - len(hist):] = torch.as_tensor(hist, dtype=torch.long)
    return out


def _sort_key(token: str):
    try:
        return (0, int(token), "")
    except ValueError:
        return (1, 0, token)


def drop_duplicate_interactions(rows: list[Interaction], source: str = "") -> tuple[list[Interaction], int]:
    """Rows without exact duplicates (same user, item and timestamp), first occurrence kept,
    and the number dropped; a warning names ``source`` and the count when any are dropped.

    The same item at another time is a repeat interaction and is kept.
    """
    seen: set[Interaction] = set()
    kept: list[Interaction] = []
    for r in rows:
        if r not in seen:
            seen.add(r)
            kept.append(r)
    dropped = len(rows) - len(kept)
    if dropped:
        log.warning("%s: dropped %d exact duplicate interaction(s) (same user, item and timestamp) of %d rows",
                    source or "interactions", dropped, len(rows))
    return kept, dropped


def sequences_from_interactions(rows: list[Interaction]) -> dict[str, list[str]]:
    """Group rows by user and order each user's items by time with a *stable* sort.

    Ties keep file order, which is what reproduces the authors' ML-100k split.
    """
    by_user: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for r in rows:
        by_user[r.user].append((r.timestamp, r.item))
    return {u: [item for _, item in sorted(events, key=lambda e: e[0])] for u, events in by_user.items()}


def k_core(sequences: dict[str, list[str]], k: int) -> dict[str, list[str]]:
    """Repeatedly drop users and items with fewer than ``k`` interactions until none remain."""
    if k <= 1:
        return sequences
    seqs = dict(sequences)
    while True:
        item_count = Counter(i for s in seqs.values() for i in s)
        rare = {i for i, c in item_count.items() if c < k}
        new = {u: [i for i in s if i not in rare] for u, s in seqs.items()}
        new = {u: s for u, s in new.items() if len(s) >= k}
        if new == seqs:
            return seqs
        seqs = new


def build_dataset(
    sequences: dict[str, list[str]],
    name: str,
    *,
    min_core: int = 0,
    on_short: Literal["drop", "error"] = "drop",
    source: str = "",
    label: str = "",
) -> SequentialDataset:
    """Leave-one-out split of chronological raw sequences, with item ids remapped to 1..N.

    Users are ordered by id (numerically when ids are integers), items are numbered in
    ascending raw-id order, which keeps the authors' ids for ML-100k and Beauty.
    Users with fewer than 3 items cannot be split: they are dropped with a logged count,
    or rejected when ``on_short="error"``.
    """
    if on_short not in ("drop", "error"):
        raise ValueError(f"on_short must be 'drop' or 'error', got {on_short!r}")
    seqs = k_core(sequences, min_core)
    short = [u for u, s in seqs.items() if len(s) < MIN_SEQUENCE_LENGTH]
    if short:
        msg = (f"{name}: {len(short)} user(s) have fewer than {MIN_SEQUENCE_LENGTH} items and cannot be "
               f"split (first: {short[:3]})")
        if on_short == "error":
            raise DataFormatError(msg)
        log.warning("%s; dropped", msg)
        seqs = {u: s for u, s in seqs.items() if len(s) >= MIN_SEQUENCE_LENGTH}
    if not seqs:
        raise DataFormatError(f"{name}: no user has {MIN_SEQUENCE_LENGTH} or more items")
    items = sorted({i for s in seqs.values() for i in s}, key=_sort_key)
    item_index = {raw: idx for idx, raw in enumerate(items, 1)}
    users = sorted(seqs, key=_sort_key)

    def user_key(u: str):
        return int(u) if _sort_key(u)[0] == 0 else u

    train, val, test = {}, {}, {}
    for u in users:
        s = [item_index[i] for i in seqs[u]]
        key = user_key(u)
        train[key], val[key], test[key] = s[:-2], [s[-2]], [s[-1]]
    return SequentialDataset(name=name, train=train, val=val, test=test, num_items=len(items), source=source,
                             item_ids=items, dropped_users=len(short), label=label)


def dataset_from_split(split: dict, name: str, source: str = "") -> SequentialDataset:
    """The authors' split pickle as a dataset; ``umap`` (raw user -> index) is inverted so
    users carry their raw ids, as in :func:`build_dataset`."""
    users = list(split["train"])
    if "umap" in split:
        inverse = {idx: raw for raw, idx in split["umap"].items()}
        key = {u: inverse[u] for u in users}
    else:
        key = {u: u for u in users}
    items = {i for part in ("train", "val", "test") for s in split[part].values() for i in s}
    num_items = len(split["smap"]) if "smap" in split else max(items)
    return SequentialDataset(
        name=name,
        train={key[u]: list(split["train"][u]) for u in users},
        val={key[u]: list(split["val"][u]) for u in users},
        test={key[u]: list(split["test"][u]) for u in users},
        num_items=num_items, source=source,
    )
