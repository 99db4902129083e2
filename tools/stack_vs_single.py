"""Does training as a stack change a run's numbers beyond seed noise? Train the given seeds of one
configuration as one stack (fmrec_lib.stacked) and set their test metrics beside the recorded
single runs of the same configurations (read from the stores, never retrained here).

    PYTHONPATH=. python tools/stack_vs_single.py --size quick --dataset ml-100k --seeds 1997 1998 1999 \
        --set lr=0.003 --device cpu --out runs/stack_vs_single.json

A paired comparison per seed would mean nothing (a stack draws other noise than the single run of
the same seed, by design); what is compared is the mean over seeds, against the single runs' sd.
The stack is trained with no checkpoint folder and no results file: nothing is recorded.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

METRICS = ("HR@10", "NDCG@10", "HR@20", "NDCG@20")


def main(argv: list[str] | None = None) -> int:
    from fmrec_lib.context import Context
    from fmrec_lib.runs import RunSpec, _resolve, find
    from fmrec_lib.stacked import fit_stacked

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="quick")
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--model", default="fmrec")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1997, 1998, 1999])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="overrides of the size's settings, JSON values (e.g. lr=0.003)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default=None, help="write the comparison as JSON here too")
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value

    ctx = Context.create(args.size, args.device, progress=False, reuse_only=True)
    specs = [RunSpec(args.dataset, args.model, seed, dict(overrides)) for seed in args.seeds]
    single = [find(ctx, spec) for spec in specs]
    missing = [spec.name for spec, run in zip(specs, single) if run is None]
    if missing:
        print(f"error: no recorded single run of {missing} at {args.size} size in {[str(s.runs) for s in ctx.stores]}",
              file=sys.stderr)
        return 2
    resolved = [_resolve(ctx, spec) for spec in specs]
    t0 = time.time()
    stacked = fit_stacked(resolved[0][0], args.model, [(mc, tc) for _, mc, tc in resolved], device=ctx.device,
                          progress=True)
    failed = [str(r) for r in stacked if isinstance(r, BaseException)]
    if failed:
        print(f"error: stacked runs failed: {failed}", file=sys.stderr)
        return 1
    rows = []
    for metric in METRICS:
        a = [r.test[metric] for r in single]
        b = [r.test[metric] for r in stacked]
        sd = statistics.stdev(a) if len(a) > 1 else float("nan")
        diff = statistics.fmean(b) - statistics.fmean(a)
        rows.append({"metric": metric, "single_mean": statistics.fmean(a), "single_sd": sd,
                     "stacked_mean": statistics.fmean(b), "stacked_sd": statistics.stdev(b) if len(b) > 1 else None,
                     "difference": diff, "difference_in_single_sd": diff / sd if sd == sd and sd > 0 else None,
                     "single": a, "stacked": b})
    report = {"size": args.size, "dataset": args.dataset, "model": args.model, "seeds": args.seeds,
              "overrides": overrides, "device": ctx.device_label, "stack_wall_s": round(time.time() - t0, 1),
              "epochs_single": [r.epochs_run for r in single], "epochs_stacked": [r.epochs_run for r in stacked],
              "rows": rows}
    for row in rows:
        print(f"{row['metric']:8s} single {row['single_mean']:.3f} ± {row['single_sd']:.3f}   stacked "
              f"{row['stacked_mean']:.3f} ± {row['stacked_sd'] or 0:.3f}   difference {row['difference']:+.3f}"
              + (f" ({row['difference_in_single_sd']:+.2f} sd)" if row["difference_in_single_sd"] is not None else ""))
    print(json.dumps(report))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
