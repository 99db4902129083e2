"""Data-parallel training (DDP) on CPU: 2 processes with the gloo backend on a tiny dataset.

One spawn of 2 processes runs every scenario (starting processes is the slow part): a model
without randomness in its loss (SASRec, dropout 0) must give the numbers of one process
(uneven shares of a batch, and a last batch of one sample that leaves a rank without any);
FMRec, whose noise is drawn per rank, must give the same numbers for the same seed, after an
interruption and resume too, and through the command line; every rank ends with the same
numbers. A real ``torchrun`` launch of the command line then gives the spawned run's numbers
and writes its results once."""
import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from fmrec_lib import cli
from fmrec_lib.training import distributed
from fmrec_lib.experiments.store import read_per_user_ranks, read_results
from fmrec_lib.training.train import fit
from synthetic import TINY_FMREC, cyclic_dataset, write_sequences

REPO = Path(__file__).resolve().parents[2]
WORLD = 2
SASREC = dict(hidden=16, heads=1, blocks=1, max_len=8, dropout=0.0)  # no random number enters the loss
SASREC_TRAIN = dict(epochs=3, eval_every=1, lr=3e-3, patience=10)
# 333 training samples: batch 64 ends with 13 (7 + 6 on two ranks); batch 83 splits 42 + 41
# and ends with a batch of 1, which leaves rank 1 without a sample
SASREC_BATCHES = {"uneven": 64, "last_of_one": 83}
FMREC = dict(TINY_FMREC, hidden=16)
FMREC_TRAIN = dict(epochs=5, eval_every=2, batch_size=64, lr=3e-3, patience=10)  # validations after 3 and 5
CLI_ARGS = ["train", "--model", "fmrec", "--device", "cpu", "--size", "smoke", "--seed", "5", "--epochs", "3",
            "--eval-every", "1", "--batch-size", "64", "--hidden", "16", "--heads", "2", "--max-len", "8",
            "--rec-hidden", "16", "32", "--sampler-steps", "3", "--quiet"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _numbers(run) -> dict:
    return {"history": run.history, "val": run.val, "test": run.test, "best_epoch": run.best_epoch,
            "ranks": run.test_ranks.tolist()}


def _stop_at_4(epoch, record):
    if epoch == 4:  # after the checkpoint of epoch 3, before the validation of epoch 5
        raise KeyboardInterrupt


def _worker(rank: int, port: int, out: Path, data_file: Path) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(WORLD))
    torch.set_num_threads(1)
    with distributed.launched("cpu") as (group, device):
        assert group is not None and group.rank == rank and device == "cpu"
        ds = cyclic_dataset(60)
        results = {}
        for name, batch in SASREC_BATCHES.items():
            results[f"sasrec_{name}"] = _numbers(fit(ds, "sasrec", SASREC, dict(SASREC_TRAIN, batch_size=batch),
                                                     device="cpu", progress=False))
        for name in ("fmrec_a", "fmrec_b"):
            results[name] = _numbers(fit(ds, "fmrec", FMREC, FMREC_TRAIN, device="cpu", progress=False))
        try:
            fit(ds, "fmrec", FMREC, FMREC_TRAIN, device="cpu", checkpoint_dir=out / "ckpt", progress=False,
                on_epoch_end=_stop_at_4)
        except KeyboardInterrupt:
            pass
        results["checkpoints_after_stop"] = sorted(p.name for p in (out / "ckpt").iterdir())
        results["fmrec_resumed"] = _numbers(fit(ds, "fmrec", FMREC, FMREC_TRAIN, device="cpu",
                                                checkpoint_dir=out / "ckpt", progress=False))
        code = cli.main(CLI_ARGS + ["--dataset", str(data_file), "--output-dir", str(out / "cli")])
        results["cli_exit"] = code
        (out / f"rank{rank}.json").write_text(json.dumps(results))


@pytest.fixture(scope="module")
def spawned(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    data_file = write_sequences(cyclic_dataset(60), out / "seqs.txt")
    t0 = time.time()
    context = mp.spawn(_worker, args=(_free_port(), out, data_file), nprocs=WORLD, join=False)
    while not context.join(timeout=5):
        if time.time() - t0 > 600:
            for process in context.processes:
                process.terminate()
            pytest.fail("the 2-process run did not finish in 10 minutes (a rank waiting for another?)")
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]
    return out, data_file, ranks


def _close(a: dict, b: dict, rel: float = 1e-5) -> None:
    assert a["best_epoch"] == b["best_epoch"] and a["ranks"] == b["ranks"]
    assert a["test"] == pytest.approx(b["test"], rel=1e-9, abs=1e-9)
    assert a["val"] == pytest.approx(b["val"], rel=1e-9, abs=1e-9)
    assert len(a["history"]) == len(b["history"])
    for h, g in zip(a["history"], b["history"]):
        assert h.keys() == g.keys() and h == pytest.approx(g, rel=rel)


@pytest.mark.parametrize("name", list(SASREC_BATCHES))
def test_two_processes_equal_one_for_a_loss_without_randomness(spawned, name):
    _, _, ranks = spawned
    one = _numbers(fit(cyclic_dataset(60), "sasrec", SASREC, dict(SASREC_TRAIN, batch_size=SASREC_BATCHES[name]),
                       device="cpu", progress=False))
    two = ranks[0][f"sasrec_{name}"]
    _close(two, json.loads(json.dumps(one)))


def test_every_rank_ends_with_the_same_numbers(spawned):
    _, _, ranks = spawned
    assert ranks[0] == ranks[1]


def test_fmrec_with_two_processes_same_seed_same_numbers_and_resume(spawned):
    out, _, ranks = spawned
    r = ranks[0]
    assert r["fmrec_a"] == r["fmrec_b"]
    assert r["checkpoints_after_stop"] and all(not n.endswith(".best.pt") for n in r["checkpoints_after_stop"])
    assert r["fmrec_resumed"] == r["fmrec_a"]  # every rank restored its own RNG state from rank 0's checkpoint


def test_one_process_resuming_a_two_process_checkpoint_says_so(spawned, caplog):
    out, _, _ = spawned
    with caplog.at_level(logging.WARNING, logger="fmrec_lib.training.train"):
        run = fit(cyclic_dataset(60), "fmrec", FMREC, FMREC_TRAIN, device="cpu", checkpoint_dir=out / "ckpt",
                  progress=False)
    assert run.epochs_run == FMREC_TRAIN["epochs"]
    assert any("written by 2 processes" in r.getMessage() for r in caplog.records)


def test_torchrun_command_line_writes_once_and_repeats_the_numbers(spawned, tmp_path):
    out, data_file, ranks = spawned
    assert ranks[0]["cli_exit"] == 0
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(WORLD),
                           "-m", "fmrec_lib", *CLI_ARGS, "--dataset", str(data_file), "--output-dir", str(tmp_path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1  # rank 0 alone prints
    rows = read_results(tmp_path / "results" / "smoke" / "runs.csv")
    spawned_rows = read_results(out / "cli" / "results" / "smoke" / "runs.csv")
    assert rows["run_id"].nunique() == 1 and spawned_rows["run_id"].nunique() == 1  # rank 0 alone records
    assert json.loads(rows["runtime"].iloc[0])["world_size"] == WORLD
    assert rows["value"].tolist() == spawned_rows["value"].tolist()  # a fresh launch, the same numbers
    (config_hash,) = set(rows["config_hash"])
    assert lines[0]["config_hash"] == config_hash
    assert (read_per_user_ranks(tmp_path / "results" / "smoke" / "runs.csv", config_hash)
            == read_per_user_ranks(out / "cli" / "results" / "smoke" / "runs.csv", config_hash)).all()
    assert not list((tmp_path / "checkpoints" / "smoke").glob("*[0-9a-f].pt"))  # recorded: running one removed


def test_shares_of_a_batch_cover_it_in_order():
    assert distributed.shard_sizes(13, 2) == [7, 6] and distributed.shard_sizes(1, 2) == [1, 0]
    idx = torch.arange(13)
    parts = [distributed.batch_share(idx, distributed.DistEnv(r, 2, r)) for r in range(2)]
    assert torch.cat([p for p, _ in parts]).tolist() == idx.tolist()
    assert [s for _, s in parts] == [7 / 13, 6 / 13]
    alone, share = distributed.batch_share(torch.tensor([4]), distributed.DistEnv(1, 2, 1))
    assert alone.tolist() == [4] and share == 0.0  # one sample with weight 0: DDP's all-reduce still happens
