import gzip
import http.server
import os
import pickle
import socket
import threading
from collections import OrderedDict
from functools import partial

import numpy as np
import pytest

from fmrec_lib.data import (DataFormatError, DatasetNotFoundError, build_dataset, k_core, load_dataset,
                            load_reference_split, read_split_pickle, read_steam_reviews, sequences_from_interactions,
                            read_interactions)
from fmrec_lib.data import registry


# -- the authors' splits -------------------------------------------------------------------

@pytest.mark.parametrize("name, samples", [("ml-100k", 97_171), ("beauty", 131_413)])
def test_rebuilt_split_equals_authors_split(data_dir, name, samples):
    ours = load_dataset(name, data_dir=data_dir, download=False)
    ref = load_reference_split(name, data_dir=data_dir)
    assert list(ours.train) == list(ref.train)  # same users, same order
    assert ours.train == ref.train and ours.val == ref.val and ours.test == ref.test
    assert ours.num_items == ref.num_items
    inputs, targets = ours.training_samples(50)
    assert inputs.shape == (samples, 50) and targets.shape == (samples,)


def test_ml100k_statistics(data_dir):
    stats = load_dataset("ml-100k", data_dir=data_dir, download=False).stats()
    assert (stats["users"], stats["items"], stats["interactions"]) == (943, 1682, 100_000)
    assert stats["avg_length"] == pytest.approx(100_000 / 943)
    assert stats["sparsity"] == pytest.approx(1 - 100_000 / (943 * 1682))


def test_tie_break_by_date_alone_matches_only_stable_sort(tmp_path):
    # Two items at the same timestamp keep file order (stable sort), not item order.
    f = tmp_path / "u.data"
    f.write_text("1\t9\t5\t100\n1\t3\t5\t100\n1\t5\t4\t50\n1\t7\t4\t200\n")
    assert sequences_from_interactions(read_interactions(f)) == {"1": ["5", "9", "3", "7"]}


# -- samples and inputs ----------------------------------------------------------------------

def _toy():
    seqs = {"1": ["10", "20", "30", "40", "50"], "2": ["20", "10", "30"], "3": ["30", "40", "10", "20"]}
    return build_dataset(seqs, "toy")


def test_training_samples_are_every_prefix_left_padded():
    ds = _toy()
    inputs, targets = ds.training_samples(max_len=2)
    # item ids remapped 10..50 -> 1..5; user 1 train = [1,2,3], user 2 train = [2], user 3 train = [3,4]
    expected = [([0, 1], 2), ([1, 2], 3), ([0, 3], 4)]
    assert [(row.tolist(), t) for row, t in zip(inputs, targets.tolist())] == expected


def test_eval_inputs_val_uses_train_and_test_adds_val():
    ds = _toy()
    v_in, v_t = ds.eval_inputs("val", max_len=4)
    t_in, t_t = ds.eval_inputs("test", max_len=4)
    assert v_in[0].tolist() == [0, 1, 2, 3] and v_t[0] == 4
    assert t_in[0].tolist() == [1, 2, 3, 4] and t_t[0] == 5
    assert t_in[1].tolist() == [0, 0, 2, 1] and t_t[1] == 3


def test_subset_is_deterministic_and_keeps_ids():
    ds = _toy()
    a, b = ds.subset(2, seed=3), ds.subset(2, seed=3)
    assert a.train == b.train and len(a.train) == 2 and a.num_items == ds.num_items


def test_k_core_removes_until_stable():
    seqs = {"a": ["1", "2", "3"], "b": ["1", "2"], "c": ["3", "9"]}
    # k=2: item 9 appears once -> c has one item -> dropped -> item 3 appears once -> a loses 3
    assert k_core(seqs, 2) == {"a": ["1", "2"], "b": ["1", "2"]}


def test_item_counts():
    counts = _toy().item_counts()
    assert counts.tolist() == [0, 1, 2, 2, 1, 0]


# -- bad input ------------------------------------------------------------------------------

def test_short_users_are_dropped_with_count_or_rejected(caplog):
    seqs = {"1": ["1", "2", "3"], "2": ["1", "2"], "3": ["4"]}
    ds = build_dataset(seqs, "toy")
    assert ds.users == [1] and ds.dropped_users == 2
    assert "2 user(s) have fewer than 3 items" in caplog.text
    with pytest.raises(DataFormatError, match="2 user"):
        build_dataset(seqs, "toy", on_short="error")


def test_all_users_too_short_is_an_error():
    with pytest.raises(DataFormatError, match="no user has 3"):
        build_dataset({"1": ["1"]}, "toy")


@pytest.mark.parametrize("content, suffix, message", [
    ("", ".inter", "empty file"),
    ("1\t2\t3\n", ".inter", r"bad\.inter:1: expected 'user item rating timestamp'"),
    ("1\t2\t3\t4\nx\t2\t3\t4\n", ".inter", r"bad\.inter:2: user 'x' is not an integer"),
    ("1\t2\t3\tsoon\n", ".inter", r"bad\.inter:1: timestamp 'soon'"),
    ("1 2 3\n2 4 five\n", ".txt", r"bad\.txt:2: item 'five' is not an integer"),
    ("1 2 3\n1 4 5\n", ".txt", r"bad\.txt:2: user 1 appears twice"),
    ("1\n", ".txt", r"bad\.txt:1: user 1 has no items"),
    ("\n\n", ".txt", "empty file"),
    ("user,item\n1,2\n", ".csv", r"lacks column\(s\) \['timestamp'\]"),
    ("user,item,timestamp\n1,2,yesterday\n", ".csv", r"bad\.csv:2: timestamp 'yesterday'"),
])
def test_malformed_files_name_file_and_line(tmp_path, content, suffix, message):
    path = tmp_path / f"bad{suffix}"
    path.write_text(content)
    with pytest.raises(DataFormatError, match=message):
        load_dataset(path)


def test_unknown_dataset_lists_known_ones():
    with pytest.raises(ValueError, match="unknown dataset 'movielens'.*beauty, ml-100k, steam, yelp"):
        load_dataset("movielens")


def test_a_folder_given_as_a_dataset_is_named_as_a_folder(tmp_path):
    (tmp_path / "my_data").mkdir()
    with pytest.raises(IsADirectoryError, match=r"my_data is a folder, not a data file: give the file inside it"):
        load_dataset(str(tmp_path / "my_data"))


def test_missing_file_path():
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        load_dataset("/tmp/definitely/nope.txt")


def test_out_of_range_item_ids_are_rejected():
    from fmrec_lib.data import SequentialDataset
    with pytest.raises(DataFormatError, match=r"outside 1\.\.3"):
        SequentialDataset("x", {1: [1, 4]}, {1: [2]}, {1: [3]}, num_items=3)
    with pytest.raises(DataFormatError, match=r"outside 1\.\.3"):
        SequentialDataset("x", {1: [0, 1]}, {1: [2]}, {1: [3]}, num_items=3)


def test_user_csv_with_string_ids_and_iso_dates(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("user,item,timestamp\nalice,book,2024-01-03\nalice,pen,2024-01-01\nalice,ink,2024-01-02\n"
                    "bob,pen,5\nbob,ink,6\nbob,book,7\n")
    ds = load_dataset(path)
    ids = {raw: i for i, raw in enumerate(ds.item_ids, 1)}
    assert ds.train["alice"] == [ids["pen"]] and ds.val["alice"] == [ids["ink"]] and ds.test["alice"] == [ids["book"]]
    assert ds.users == ["alice", "bob"]


def test_steam_raw_format_parser(tmp_path):
    # The raw UCSD file: Python dict literals, one per line, gzip-compressed.
    lines = [
        "{'username': 'u1', 'hours': 0.1, 'product_id': '20', 'date': '2017-12-17', 'text': 'ok', 'early_access': False}",
        "{'username': 'u1', 'hours': 2.0, 'product_id': '10', 'date': '2017-12-15', 'text': \"it's\", 'early_access': True}",
        "{'username': 'u2', 'product_id': '10', 'date': '2018-01-01', 'text': 'x'}",
    ]
    path = tmp_path / "steam_reviews.json.gz"
    with gzip.open(path, "wt") as f:
        f.write("\n".join(lines) + "\n")
    rows = read_steam_reviews(path)
    assert [(r.user, r.item) for r in rows] == [("u1", "20"), ("u1", "10"), ("u2", "10")]
    assert sequences_from_interactions(rows)["u1"] == ["10", "20"]
    with gzip.open(path, "at") as f:
        f.write("__import__('os').system('echo pwned')\n")
    with pytest.raises(DataFormatError, match=r":4: not a Steam review record"):
        read_steam_reviews(path)


# -- the safe split loader ------------------------------------------------------------------

class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("payload", [Evil(), OrderedDict(train={}), {"train": {1: [np.int64(3)]}}])
def test_split_pickle_with_any_global_is_refused(tmp_path, payload):
    path = tmp_path / "dataset.pkl"
    path.write_bytes(pickle.dumps(payload, protocol=4))
    with pytest.raises(DataFormatError, match="refusing to unpickle"):
        read_split_pickle(path)


def test_split_pickle_plain_dict_loads_and_bad_layout_is_refused(tmp_path):
    path = tmp_path / "dataset.pkl"
    path.write_bytes(pickle.dumps({"train": {1: [1, 2]}, "val": {1: [3]}, "test": {1: [4]}, "smap": {}}, protocol=4))
    assert read_split_pickle(path)["train"] == {1: [1, 2]}
    path.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(DataFormatError, match="expected a dict with keys train, val, test"):
        read_split_pickle(path)
    path.write_bytes(b"not a pickle")
    with pytest.raises(DataFormatError, match="not a readable split pickle"):
        read_split_pickle(path)


# -- lookup and download --------------------------------------------------------------------

@pytest.fixture
def local_server(tmp_path):
    """An HTTP server on loopback serving tmp_path/served."""
    served = tmp_path / "served"
    served.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _fake_spec(monkeypatch, tmp_path, url, sha256):
    spec = registry.DatasetSpec("toyset", "toyset", "toy.txt", "sequences", url, sha256, "Toy")
    monkeypatch.setitem(registry.DATASETS, "toyset", spec)
    monkeypatch.setattr(registry, "project_data_dir", lambda: tmp_path / "data")
    monkeypatch.delenv("FMREC_DATA_DIR", raising=False)


def test_download_checks_sha256(monkeypatch, tmp_path, local_server):
    pytest.importorskip("pooch")
    import hashlib
    served, base = local_server
    content = b"1 1 2 3\n2 2 3 4 5\n"
    (served / "toy.txt").write_bytes(content)
    _fake_spec(monkeypatch, tmp_path, f"{base}/toy.txt", hashlib.sha256(content).hexdigest())
    ds = load_dataset("toyset")
    assert ds.stats()["users"] == 2 and (tmp_path / "data" / "toyset" / "toy.txt").is_file()

    (tmp_path / "data" / "toyset" / "toy.txt").unlink()
    (served / "toy.txt").write_bytes(content + b"3 9 9 9\n")  # the source changed: refuse it
    with pytest.raises(DataFormatError, match="sha256"):
        load_dataset("toyset")


def test_offline_error_says_where_it_looked(monkeypatch, tmp_path):
    pytest.importorskip("pooch")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _fake_spec(monkeypatch, tmp_path, f"http://127.0.0.1:{port}/toy.txt", "0" * 64)
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("toyset")
    text = str(err.value)
    assert str(tmp_path / "data" / "toyset" / "toy.txt") in text and "FMREC_DATA_DIR" in text and "download" in text
    with pytest.raises(DatasetNotFoundError, match="looked in"):
        load_dataset("toyset", download=False)


def test_unpinned_dataset_is_not_downloaded_unverified(monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "project_data_dir", lambda: tmp_path / "data")
    monkeypatch.delenv("FMREC_DATA_DIR", raising=False)
    with pytest.raises(DatasetNotFoundError, match="no pinned sha256"):
        load_dataset("steam")


def test_env_variable_is_searched(monkeypatch, tmp_path):
    (tmp_path / "amazon_beauty").mkdir()
    (tmp_path / "amazon_beauty" / "Beauty.txt").write_text("1 1 2 3\n2 3 2 1\n")
    monkeypatch.setenv("FMREC_DATA_DIR", str(tmp_path))
    ds = load_dataset("beauty", download=False)
    assert ds.source == str(tmp_path / "amazon_beauty" / "Beauty.txt") and ds.display_name == "Beauty"
