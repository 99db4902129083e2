"""A user's own data must not give silently wrong numbers: content fingerprints, names that
say where a file came from, exact duplicates, UTC offsets, byte-order marks, more formats."""
import json
import datetime as dt
import logging
import pickle

import numpy as np
import re

import pytest

from fmrec_lib import cli
from fmrec_lib.data import (FORMATS, DataFormatError, SequentialDataset, file_dataset_name, format_of, load_dataset,
                            load_reference_split, read_csv_interactions)


def _write_csv(path, rows, header="user,item,timestamp"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "\n" + "".join(f"{u},{i},{t}\n" for u, i, t in rows))
    return path


def _clean_rows(n_users=40, n_items=6, seed=0):
    """Every user sees n_items distinct items at increasing times."""
    rng = np.random.default_rng(seed)
    return [(f"u{u}", f"i{item}", 1000 * u + k)
            for u in range(n_users) for k, item in enumerate(rng.choice(50, n_items, replace=False))]


# -- fingerprint ------------------------------------------------------------------------------

def test_fingerprint_changes_with_content_not_with_name_or_counts(tmp_path):
    rows = _clean_rows()
    reversed_rows = [(u, i, -t) for u, i, t in rows]  # every user's order reversed
    a = load_dataset(_write_csv(tmp_path / "a" / "mine.csv", rows))
    b = load_dataset(_write_csv(tmp_path / "b" / "mine.csv", reversed_rows))
    assert a.name == b.name == "mine"
    assert a.stats() == b.stats()  # same users, items, interactions
    assert a.fingerprint() != b.fingerprint()
    assert len(a.fingerprint()) == 16 and int(a.fingerprint(), 16) >= 0


def test_fingerprint_sees_every_part_of_the_split():
    def ds(train, val=None, test=None, num_items=9):
        val = val or {u: [8] for u in train}
        test = test or {u: [9] for u in train}
        return SequentialDataset("same", train, val, test, num_items=num_items)

    base = ds({1: [1, 2, 3], 2: [4, 5]})
    variants = [
        ds({1: [2, 1, 3], 2: [4, 5]}),  # one user's training order
        ds({2: [4, 5], 1: [1, 2, 3]}),  # user order
        ds({1: [1, 2, 3], 2: [4, 5]}, num_items=10),
        ds({1: [1, 2, 3], 2: [4, 5]}, val={1: [8], 2: [7]}),
        ds({1: [1, 2, 3], 2: [4, 5]}, test={1: [9], 2: [7]}),
        ds({1: [1, 2], 2: [3, 4, 5]}),  # same items, moved between users
        ds({1: [1, 2, 3], "2": [4, 5]}),  # user id 2 vs "2"
    ]
    prints = [base.fingerprint()] + [v.fingerprint() for v in variants]
    assert len(set(prints)) == len(prints)
    assert ds({1: [1, 2, 3], 2: [4, 5]}).fingerprint() == base.fingerprint()


def test_same_content_same_fingerprint(tmp_path):
    rows = _clean_rows()
    first = load_dataset(_write_csv(tmp_path / "mine.csv", rows))
    again = load_dataset(tmp_path / "mine.csv")
    elsewhere = load_dataset(_write_csv(tmp_path / "other" / "copy.csv", rows))
    assert first.fingerprint() == again.fingerprint() == elsewhere.fingerprint()
    subset = first.subset(10, seed=1)
    assert subset.fingerprint() != first.fingerprint()
    assert subset.fingerprint() == first.subset(10, seed=1).fingerprint()  # its own, not the parent's cache


def test_rebuilt_ml100k_has_the_fingerprint_of_the_authors_split(data_dir):
    ours = load_dataset("ml-100k", data_dir=data_dir, download=False)
    ref = load_reference_split("ml-100k", data_dir=data_dir)
    assert ours.fingerprint() == ref.fingerprint()
    assert load_dataset("beauty", data_dir=data_dir, download=False).fingerprint() != ours.fingerprint()


# -- names ------------------------------------------------------------------------------------

def _split_pickle(path, shift=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    split = {"train": {1: [1 + shift, 2]}, "val": {1: [3]}, "test": {1: [4]}, "smap": {i: i for i in range(1, 5)}}
    path.write_bytes(pickle.dumps(split, protocol=4))
    return path


def test_split_pickle_named_dataset_is_named_after_its_folder(tmp_path):
    toys = load_dataset(_split_pickle(tmp_path / "amazon_toys" / "dataset.pkl"))
    ml = load_dataset(_split_pickle(tmp_path / "ml-1m" / "dataset.pkl", shift=1))
    assert (toys.name, ml.name) == ("amazon_toys/dataset", "ml-1m/dataset")
    assert toys.display_name == "amazon_toys/dataset" and str(tmp_path) not in toys.display_name


@pytest.mark.parametrize("path, name", [
    ("/x/amazon_toys/dataset.pkl", "amazon_toys/dataset"),
    ("/x/ml-1m/ratings.dat", "ml-1m/ratings"),
    ("/x/ml-100k/u.data", "ml-100k/u"),
    ("/x/shop/Interactions.csv.gz", "shop/Interactions"),
    ("/x/shop/clicks_2024.csv", "clicks_2024"),
    ("/x/steam/steam_reviews.json.gz", "steam_reviews"),
])
def test_file_dataset_name(path, name):
    assert file_dataset_name(path) == name


def test_named_datasets_keep_name_and_label(data_dir):
    ds = load_dataset("ml-100k", data_dir=data_dir, download=False)
    assert (ds.name, ds.display_name) == ("ml-100k", "ML-100k")


# -- duplicates -------------------------------------------------------------------------------

def test_exact_duplicates_are_dropped_with_a_logged_count(tmp_path, caplog):
    rows = [("a", "x", 1), ("a", "y", 2), ("a", "x", 1), ("a", "z", 3), ("a", "z", 3), ("a", "x", 4),
            ("b", "x", 1), ("b", "y", 2), ("b", "z", 3)]
    path = _write_csv(tmp_path / "dups.csv", rows)
    with caplog.at_level(logging.WARNING):
        ds = load_dataset(path)
    assert ds.duplicates_dropped == 2 and any("2 exact duplicate" in n for n in ds.notes)
    assert "dups.csv: dropped 2 exact duplicate" in caplog.text
    ids = {raw: i for i, raw in enumerate(ds.item_ids, 1)}
    # the same item at another time is a repeat, not a duplicate: a keeps x at t=4
    assert ds.train["a"] + ds.val["a"] + ds.test["a"] == [ids["x"], ids["y"], ids["z"], ids["x"]]
    assert ds.subset(1).duplicates_dropped == 2

    caplog.clear()
    kept = load_dataset(path, dedupe=False)
    assert kept.duplicates_dropped == 0 and "duplicate" not in caplog.text
    assert kept.stats()["interactions"] == ds.stats()["interactions"] + 2


def test_ten_percent_duplicated_csv_does_not_repeat_val_as_test(tmp_path):
    rows = _clean_rows(n_users=60)
    rng = np.random.default_rng(1)
    last_rows = [rows[k] for k in range(5, len(rows), 6)]  # every user's last event
    dup = [rows[k] for k in rng.choice(len(rows), len(rows) // 10, replace=False)] + last_rows[:10]
    path = _write_csv(tmp_path / "concat.csv", rows + dup)  # as if part of an export was appended twice

    def val_is_test(ds):
        return sum(ds.val[u] == ds.test[u] for u in ds.users)

    assert val_is_test(load_dataset(path, dedupe=False)) >= 10
    ds = load_dataset(path)
    assert val_is_test(ds) == 0 and ds.duplicates_dropped == len(dup)
    assert ds.fingerprint() == load_dataset(_write_csv(tmp_path / "clean.csv", rows)).fingerprint()


def test_ml100k_has_no_exact_duplicates(data_dir):
    # So dropping them cannot move the rebuilt split away from the authors' (test_data checks equality).
    ds = load_dataset("ml-100k", data_dir=data_dir, download=False)
    assert ds.duplicates_dropped == 0
    assert load_dataset("ml-100k", data_dir=data_dir, download=False, dedupe=False).same_split(ds)


# -- timestamps and encodings ---------------------------------------------------------------

def test_utc_offsets_are_applied_not_discarded(tmp_path):
    # x happens at 08:00 UTC, y at 09:00 UTC, z at 09:30 UTC (naive = UTC). Discarding the
    # offset would put x at 10:00 and order them y, z, x.
    path = _write_csv(tmp_path / "tz.csv", [("a", "x", "2020-01-01T10:00:00+02:00"), ("a", "y", "2020-01-01T09:00:00Z"),
                                            ("a", "z", "2020-01-01T09:30:00")])
    rows = read_csv_interactions(path)
    utc = dt.timezone.utc
    assert [r.timestamp for r in rows] == [dt.datetime(2020, 1, 1, h, m, tzinfo=utc).timestamp()
                                           for h, m in ((8, 0), (9, 0), (9, 30))]
    ds = load_dataset(path)
    ids = {raw: i for i, raw in enumerate(ds.item_ids, 1)}
    assert (ds.train["a"], ds.val["a"], ds.test["a"]) == ([ids["x"]], [ids["y"]], [ids["z"]])


def test_csv_with_byte_order_mark(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeffuser,item,timestamp\r\nalice,a,1\r\nalice,b,2\r\nalice,c,3\r\n".encode("utf-8"))
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    ds = load_dataset(path)
    assert ds.users == ["alice"] and ds.stats()["interactions"] == 3


@pytest.mark.parametrize("content, suffix, message", [
    ("1\t2\t3\tnan\n", ".inter", r"bad\.inter:1: timestamp 'nan' is not a finite number"),
    ("user,item,timestamp\n1,2,inf\n", ".csv", r"bad\.csv:2: timestamp 'inf' is not a finite number"),
])
def test_non_finite_timestamps_are_rejected(tmp_path, content, suffix, message):
    path = tmp_path / f"bad{suffix}"
    path.write_text(content)
    with pytest.raises(DataFormatError, match=message):
        load_dataset(path)


# -- formats ----------------------------------------------------------------------------------

def test_tsv_and_dat_are_read(tmp_path):
    tsv = tmp_path / "mine.tsv"
    tsv.write_text("user\titem\trating\ttimestamp\nalice\tb\t5\t2\nalice\ta\t4\t1\nalice\tc\t3\t3\n")
    ds = load_dataset(tsv)
    ids = {raw: i for i, raw in enumerate(ds.item_ids, 1)}
    assert (ds.train["alice"], ds.val["alice"], ds.test["alice"]) == ([ids["a"]], [ids["b"]], [ids["c"]])

    dat = tmp_path / "ml-1m" / "ratings.dat"
    dat.parent.mkdir()
    dat.write_text("1::1193::5::978300760\n1::661::3::978302109\n1::914::3::978301968\n"
                   "2::1357::5::978298709\n2::3068::4::978299000\n2::1537::4::978299620\n")
    ds = load_dataset(dat)
    assert ds.name == "ml-1m/ratings" and ds.users == [1, 2]
    raw = {u: [ds.item_ids[i - 1] for i in ds.train[u] + ds.val[u] + ds.test[u]] for u in ds.users}
    assert raw == {1: ["1193", "914", "661"], 2: ["1357", "3068", "1537"]}


@pytest.mark.parametrize("content, suffix, message", [
    ("1::2::5::978300760\n1::3::5\n", ".dat", r"bad\.dat:2: expected 'user::item::rating::timestamp'"),
    ("1::2::5::978300760\nx::3::5::978300761\n", ".dat", r"bad\.dat:2: user 'x' is not an integer"),
    ("1,2,5,978300760\n", ".dat", r"bad\.dat:1: expected 'user::item::rating::timestamp'"),
    ("1::2::5::soon\n", ".dat", r"bad\.dat:1: timestamp 'soon'"),
    ("", ".dat", "empty file"),
    ("user\titem\n1\t2\n", ".tsv", r"bad\.tsv:1: header .* lacks column\(s\) \['timestamp'\]"),
    ("user\titem\ttimestamp\n1\t2\n", ".tsv", r"bad\.tsv:2: expected 3 fields"),
])
def test_malformed_dat_and_tsv_name_file_and_line(tmp_path, content, suffix, message):
    path = tmp_path / f"bad{suffix}"
    path.write_text(content)
    with pytest.raises(DataFormatError, match=message):
        load_dataset(path)


@pytest.mark.parametrize("name, fmt", [
    ("x.inter", "inter"), ("u.data", "inter"), ("x.txt", "sequences"), ("x.csv", "csv"), ("x.tsv", "tsv"),
    ("ratings.dat", "dat"), ("dataset.pkl", "split"), ("steam_reviews.json.gz", "steam"), ("x.csv.gz", "csv"),
    ("x.pkl.gz", None), ("x.gz", None), ("x.parquet", None),
])
def test_format_of_suffix(tmp_path, name, fmt):
    assert format_of(tmp_path / name) == fmt


def test_every_format_is_accepted_and_listed(tmp_path):
    path = _write_csv(tmp_path / "export.log", [("a", "x", 1), ("a", "y", 2), ("a", "z", 3)])
    with pytest.raises(ValueError, match="cannot tell the format.*" + ", ".join(FORMATS)):
        load_dataset(path)
    with pytest.raises(ValueError, match="unknown format 'parquet'; known formats: " + ", ".join(FORMATS)):
        load_dataset(path, fmt="parquet")
    assert load_dataset(path, fmt="csv").users == ["a"]
    assert set(FORMATS) == {"inter", "sequences", "csv", "tsv", "dat", "steam", "split"}


def test_named_dataset_refuses_another_format(data_dir):
    with pytest.raises(ValueError, match="'ml-100k' is in format 'inter', not 'csv'"):
        load_dataset("ml-100k", data_dir=data_dir, download=False, fmt="csv")


def test_cli_format_option_reads_an_odd_suffix(tmp_path, capsys):
    path = _write_csv(tmp_path / "mine.txt", [("alice", "a", 1), ("alice", "b", 2), ("alice", "c", 3),
                                              ("bob", "a", 1), ("bob", "c", 2), ("bob", "b", 3)])
    assert cli.main(["data", str(path), "--no-download"]) == 2  # by its suffix: an ICLRec sequence file
    assert re.search(r"^error: .*mine\.txt:1: .*DataFormatError", capsys.readouterr().err, re.M)
    assert cli.main(["data", str(path), "--no-download", "--format", "csv"]) == 0
    out = capsys.readouterr().out
    assert "mine" in out and str(tmp_path) not in out
    row = next(line.split() for line in out.splitlines() if line.split()[:1] == ["mine"])
    assert row[1:4] == ["2", "3", "6"]  # users, items, interactions


def test_cli_no_dedupe_keeps_duplicates_and_is_a_different_run(tmp_path, capsys, monkeypatch):
    rows = [("a", "x", 1), ("a", "y", 2), ("a", "x", 1), ("a", "z", 3), ("b", "x", 1), ("b", "y", 2), ("b", "z", 3)]
    path = _write_csv(tmp_path / "dups.csv", rows)
    interactions = {}
    for extra in ([], ["--no-dedupe"]):
        assert cli.main(["data", str(path), "--no-download", *extra]) == 0
        row = next(line.split() for line in capsys.readouterr().out.splitlines() if line.split()[:1] == ["dups"])
        interactions[bool(extra)] = int(row[3])
    assert interactions == {False: 6, True: 7}
    monkeypatch.chdir(tmp_path)
    hashes = {}
    for extra in ([], ["--no-dedupe"]):
        assert cli.main(["train", "--dataset", str(path), "--model", "pop", "--size", "smoke", "--device", "cpu",
                         "--quiet", "--output-dir", str(tmp_path / "out"), *extra]) == 0
        hashes[bool(extra)] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["config_hash"]
    assert hashes[False] != hashes[True]  # the kept duplicates change the split, so the run's identity
