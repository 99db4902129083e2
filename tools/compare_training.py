"""Does a way of training change a run's numbers beyond seed noise? Train the given seeds of one
configuration again, as one stack (``--mode stack``, fmrec_lib.stacked) or one by one (``--mode
single``), with speed settings (``--speed``, e.g. TF32 and CUDA graphs), and set their test metrics
beside the recorded runs of the same configurations (read from the stores, never retrained here).

    # a stack against the recorded single runs (quick size, CPU)
    PYTHONPATH=. python tools/compare_training.py --size quick --dataset ml-100k --seeds 1997 1998 1999 \
        --set lr=0.003 --device cpu --out runs/stack_vs_single.json
    # the fast GPU settings against recorded fp32 runs (paper size, in a GPU window)
    PYTHONPATH=. python tools/compare_training.py --size paper --dataset ml-100k --mode single \
        --speed tf32=true,fused_adam=true,compile=true,compile_mode=reduce-overhead --device cuda

A paired comparison per seed would mean little (a stack draws other noise than the single run of
the same seed, and CUDA runs are not bit-reproducible); what is compared is the mean over seeds,
against the recorded runs' sd. Nothing is recorded: no checkpoint folder, no results file.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

METRICS = ("HR@10", "NDCG@10", "HR@20", "NDCG@20")


def main(argv: list[str] | None = None) -> int:
    from fmrec_lib.cli import _parse_overrides
    from fmrec_lib import context as context_module
    from fmrec_lib.context import Context
    from fmrec_lib.results import find_run
    from fmrec_lib.runs import RunSpec, _resolve, find
    from fmrec_lib.stacked import fit_stacked
    from fmrec_lib.train import TrainConfig, fit

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="quick")
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--model", default="fmrec")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1997, 1998, 1999])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="overrides of the size's settings, JSON values (e.g. lr=0.003)")
    parser.add_argument("--mode", default="stack", choices=["stack", "single"],
                        help="train the seeds as one stack or one by one")
    parser.add_argument("--speed", default="", metavar="KEY=VALUE[,KEY=VALUE]",
                        help=f"speed settings of the new runs ({', '.join(TrainConfig.SPEED_FIELDS)})")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default=None, help="write the comparison as JSON here too")
    args = parser.parse_args(argv)
    overrides = _parse_overrides(",".join(args.set))

    speed = _parse_overrides(args.speed)
    # written nowhere committed: a recorded run found in another store is copied into the context's
    # own store, so that store is the git-ignored runs/, never results/<size>/
    ctx = Context.create(args.size, args.device, output_dir=context_module.LOCAL_ROOT, progress=False, reuse_only=True)
    specs = [RunSpec(args.dataset, args.model, seed, dict(overrides)) for seed in args.seeds]
    single = [find(ctx, spec) for spec in specs]
    missing = [spec.name for spec, run in zip(specs, single) if run is None]
    if missing:
        print(f"error: no recorded single run of {missing} at {args.size} size in {[str(s.runs) for s in ctx.stores]}",
              file=sys.stderr)
        return 2
    ctx.speed = speed  # the new runs' settings (a field that is not a speed field fails below)
    resolved = [_resolve(ctx, spec) for spec in specs]
    t0 = time.time()
    if args.mode == "stack":
        fresh = fit_stacked(resolved[0][0], args.model, [(mc, tc) for _, mc, tc in resolved], device=ctx.device,
                            progress=True)
    else:
        fresh = [fit(ds, args.model, mc, tc, device=ctx.device, progress=True) for ds, mc, tc in resolved]
    failed = [str(r) for r in fresh if isinstance(r, BaseException)]
    if failed:
        print(f"error: the new runs failed: {failed}", file=sys.stderr)
        return 1
    rows = []
    for metric in METRICS:
        a = [r.test[metric] for r in single]
        b = [r.test[metric] for r in fresh]
        sd = statistics.stdev(a) if len(a) > 1 else float("nan")
        diff = statistics.fmean(b) - statistics.fmean(a)
        rows.append({"metric": metric, "recorded_mean": statistics.fmean(a), "recorded_sd": sd,
                     "new_mean": statistics.fmean(b), "new_sd": statistics.stdev(b) if len(b) > 1 else None,
                     "difference": diff, "difference_in_recorded_sd": diff / sd if sd == sd and sd > 0 else None,
                     "recorded": a, "new": b})
    report = {"size": args.size, "dataset": args.dataset, "model": args.model, "seeds": args.seeds,
              "overrides": overrides, "mode": args.mode, "speed": speed, "device": ctx.device_label,
              "new_wall_s": round(time.time() - t0, 1),
              "recorded_runtime": [json.loads(find_run(r.config_hash, r.results_path)["runtime"].iloc[0] or "{}")
                                   for r in single],
              "new_runtime": [r.runtime for r in fresh], "epochs_recorded": [r.epochs_run for r in single],
              "epochs_new": [r.epochs_run for r in fresh], "rows": rows}
    for row in rows:
        print(f"{row['metric']:8s} recorded {row['recorded_mean']:.3f} ± {row['recorded_sd']:.3f}   new "
              f"{row['new_mean']:.3f} ± {row['new_sd'] or 0:.3f}   difference {row['difference']:+.3f}"
              + (f" ({row['difference_in_recorded_sd']:+.2f} sd)" if row["difference_in_recorded_sd"] is not None
                 else ""))
    print(json.dumps(report))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
