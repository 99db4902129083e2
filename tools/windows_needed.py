"""How many GPU windows the rest of the suite needs: the campaign's pending jobs priced with the
benchmark's measured seconds per epoch (fmrec_lib.planning).

    python tools/windows_needed.py --size paper --bench results/paper/benchmarks/*_h100_bench_*.jsonl \
        --setting tf32=true,fused_adam=true,compile=true,compile_mode=reduce-overhead --window-s 720

Prints a Markdown table (jobs by dataset, model, budgeted epochs and speed) and one JSON line with
the device minutes and windows. --setting is a bench --variant string ("" for eager fp32); models
without a line for it are priced with their eager line, datasets without one by scaling ML-100k's
line by training samples per epoch (each row says which).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fmrec_lib.context import Context  # noqa: E402
from fmrec_lib.planning import by_notebook, markdown, read_bench, suite_estimate, summary_table, windows_needed  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="paper")
    p.add_argument("--bench", nargs="+", required=True, help="bench JSON-lines files")
    p.add_argument("--setting", default="", help="the bench variant to price FMRec and the baselines with")
    p.add_argument("--device", default=None, help="only bench lines of this device name")
    p.add_argument("--epochs", choices=("max", "expected"), default="expected")
    p.add_argument("--compile-s", type=float, default=30.0,
                   help="compilation per run of a compiled setting (one graph since the last batch runs eagerly: "
                        "31 to 34 s cold on the H100, 13 s warm; 30 s: the first run of each kind in a window is "
                        "cold, the later ones warm)")
    p.add_argument("--window-s", type=float, default=720.0,
                   help="compute seconds one window gives (both calls, machine start excluded)")
    p.add_argument("--throughput", type=float, default=1.0, help="throughput gain of the jobs run at once")
    p.add_argument("--datasets", nargs="+", default=None, help="only these datasets' jobs (default: all)")
    p.add_argument("--by-notebook", action="store_true",
                   help="also a table of device minutes per notebook (all its jobs, and those only it needs)")
    args = p.parse_args(argv)
    ctx = Context.create(args.size, "cpu", progress=False)
    jobs = suite_estimate(ctx, read_bench(args.bench), args.setting, epochs_mode=args.epochs,
                          compile_s=args.compile_s, device=args.device)
    if args.datasets:
        jobs = jobs[jobs["dataset"].isin(args.datasets)]
    print(markdown(summary_table(jobs)))
    if args.by_notebook:
        print()
        print(markdown(by_notebook(jobs)))
    print(json.dumps({"size": args.size, "setting": args.setting, "epochs": args.epochs, "datasets": args.datasets,
                      **windows_needed(jobs, args.window_s, args.throughput)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
