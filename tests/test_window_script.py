"""tools/gpu_window.sh's bookkeeping around the campaign: the compile caches it shares with every
process of a window and sends back for the next one (the campaign itself is tested in
test_campaign.py; `make window-smoke` runs the whole script)."""
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "gpu_window.sh"


def _window(tmp_path, cache: Path, **env) -> Path:
    """The script with no time for a benchmark or a campaign (only its bookkeeping runs)."""
    out = tmp_path / "out"
    full = {**os.environ, "OUT": str(out), "BUDGET": "0", "BENCH": "0", "SIZE": "smoke", "DEVICE": "cpu",
            "COMPILE_CACHE": str(cache), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            **env}
    full.pop("TORCHINDUCTOR_CACHE_DIR", None)
    subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=full, check=True, timeout=120)
    return out


def _fill(cache: Path) -> None:
    (cache / "fxgraph" / "ab").mkdir(parents=True)
    (cache / "fxgraph" / "ab" / "entry").write_bytes(os.urandom(4096))
    (cache / "triton").mkdir()
    (cache / "triton" / "kernel.cubin").write_bytes(b"kernel")


@pytest.mark.parametrize("xz, packer", [("xz", "xz"), ("no-such-xz", "python lzma"), ("failing", "python lzma")])
def test_the_compile_cache_is_shared_and_sent_back(tmp_path, xz, packer):
    """Packed with the xz command where there is one, else (or when it fails) Python's lzma."""
    import shutil

    if xz == "xz" and shutil.which("xz") is None:
        pytest.skip("no xz command here")
    if xz == "failing":
        xz = tmp_path / "xz"
        xz.write_text("#!/bin/sh\ncat > /dev/null\nexit 1\n")
        xz.chmod(0o755)
    cache = tmp_path / "cache"
    cache.mkdir()
    _fill(cache)
    out = _window(tmp_path, cache, XZ=str(xz))
    assert f"packed in compile-cache.tar.xz ({packer})" in (out / "campaign.log").read_text()
    assert not (out / "compile-cache.tar.xz.part").exists()
    env = (out / "env.txt").read_text()
    assert f"compile cache {cache.resolve()}" in env  # what the script's python processes see
    assert "compile cache at start: 2 files" in env
    with tarfile.open(out / "compile-cache.tar.xz") as tar:
        names = {Path(n).as_posix().removeprefix("./") for n in tar.getnames()}
        assert tar.extractfile("./triton/kernel.cubin").read() == b"kernel"
    assert {"fxgraph/ab/entry", "triton/kernel.cubin"} <= names
    assert "compile cache:" in (out / "campaign.log").read_text()
    # unpacked into another folder (as the next window's carried .compile_cache), the same files
    again = tmp_path / "next"
    again.mkdir()
    with tarfile.open(out / "compile-cache.tar.xz") as tar:
        tar.extractall(again, filter="data")
    assert (again / "fxgraph" / "ab" / "entry").read_bytes() == (cache / "fxgraph" / "ab" / "entry").read_bytes()


@pytest.mark.parametrize("fill, max_mb, message", [(True, "0", "compile cache not sent back"),
                                                    (False, "15", None)])
def test_no_cache_archive_when_too_big_or_empty(tmp_path, fill, max_mb, message):
    cache = tmp_path / "cache"
    cache.mkdir()
    if fill:
        _fill(cache)
    out = _window(tmp_path, cache, COMPILE_CACHE_MAX_MB=max_mb)
    assert not (out / "compile-cache.tar.xz").exists()
    log = (out / "campaign.log").read_text()
    assert "window done" in log
    if message:
        assert message in log


def test_the_campaign_writes_under_the_window_root_that_a_second_call_finds(tmp_path, data_dir):
    """The campaign's output root is a git-ignored folder (WINDOW_ROOT), not the committed results/: a
    second call on the same warm machine gets a fresh copy of the tracked files but keeps that folder,
    so it sees what the first call recorded and resumes the runs a deadline stopped."""
    root = tmp_path / "window"
    out = _window(tmp_path, tmp_path / "cache", BUDGET="80", WINDOW_ROOT=str(root), JOBS="1",
                  FMREC_DATA_DIR=str(data_dir))
    log = (root / "results" / "smoke" / "campaign.log.jsonl").read_text()
    assert '"campaign start"' in log and '"campaign end"' in log
    assert f"window root {root} at start: 0 interrupted runs or stacks to resume" in (out / "env.txt").read_text()
    with tarfile.open(out / "results-smoke.tar.gz") as tar:  # the archive packs that root's results
        assert any(Path(n).name == "campaign.log.jsonl" for n in tar.getnames())
    again = _window(tmp_path / "second", tmp_path / "cache", BUDGET="0", WINDOW_ROOT=str(root))
    assert f"window root {root} at start:" in (again / "env.txt").read_text()


def test_auto_speed_takes_the_fastest_per_run_setting_that_fits_the_window(tmp_path):
    """AUTO_SPEED=1: the campaign's SPEED and STACK come from the bench lines of this device kind (those of
    this window's first call kept in WINDOW_ROOT, since $OUT is emptied between calls): the fastest per run
    whose run fits the window (a stack of 4 runs takes 4 times as long from start to end), and a second call
    keeps the first call's choice so that its stacks resume."""
    import json

    here = "cpu (2 threads)"  # what the script's python sees with OMP_NUM_THREADS=2

    def call(name, window_s, lines=None, **env):
        root = tmp_path / name
        root.mkdir(exist_ok=True)
        if lines is not None:
            rows = [{"dataset": "ml-100k", "model": "fmrec", "variant": v, "device": d, "stack": k,
                     "s_per_epoch": s * k, "s_per_run_epoch": s} for v, d, k, s in lines]
            (root / "bench.jsonl").write_text("\n".join(json.dumps(x) for x in rows) + "\n")
        # paper size: a run takes the authors' 260 ML-100k epochs (a smoke run its 2); 50 s: no campaign
        out = _window(tmp_path / name, tmp_path / "cache", **{"AUTO_SPEED": "1", "OMP_NUM_THREADS": "2", "SIZE": "paper",
                      "WINDOW_ROOT": str(root), "BUDGET": "50", "WINDOW_S": str(window_s), **env})
        return (out / "bench.log").read_text()

    lines = [("", here, 1, 0.5),  # a run: 0.5 s x 260 epochs x 1.15 = 150 s
             ("tf32=true,stack=4", here, 4, 0.3),  # faster per run, but the stack's runs take 359 s
             ("tf32=true,stack=8", "another GPU", 8, 0.1)]
    assert f"window settings (fastest on {here} that fits" in (log := call("long", 100_000, lines))
    assert "SPEED=tf32=true STACK=4" in log
    assert "SPEED= STACK=1" in call("short", 250, lines)  # the stack does not fit 250 s: one run at a time
    assert "(kept from this window's first call): SPEED=tf32=true STACK=4" in call("long", 250)
    # a call that benchmarks starts a new window: it chooses again (here: as given), and its second call keeps that
    assert "window settings (as given): SPEED= STACK=2" in call("long", 250, BENCH="1", AUTO_SPEED="0", STACK="2")
    assert "(kept from this window's first call): SPEED= STACK=2" in call("long", 250, STACK="8", SPEED="tf32=true")
