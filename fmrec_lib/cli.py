"""Command line: ``python -m fmrec_lib {data,train,bench,suite,campaign,merge} ...``.

``train`` runs one configuration at a size's settings (``--size``, default ``paper``: the
paper's) through the same run store as the notebooks: a run already recorded is reused, not
retrained. It accepts every field of the chosen model's config and of ``TrainConfig`` as an
option (``--alpha 0.1``, ``--sampler-steps 10``, ``--batch-size 256``, ...) and ends by
printing one JSON line with the run's configuration and its test metrics. By default outputs
go to ``runs/`` (git-ignored): ``runs/results/<size>/runs.csv`` and ``runs/checkpoints/<size>/``;
``--output-dir .`` writes to the repository's ``results/<size>/``.

Errors are one line on stderr and a non-zero exit; ``--debug`` shows the traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import typing
from pathlib import Path

from .data import DATASETS, FORMATS, DatasetNotFoundError, load_dataset, load_reference_split

EXIT_ERROR = 2


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return value


# -- data ------------------------------------------------------------------------------------

def _cmd_data(args) -> int:
    import pandas as pd

    rows, checks, missing = [], [], []
    for name in args.datasets or sorted(DATASETS):
        try:
            ds = load_dataset(name, download=args.download, fmt=args.format, dedupe=args.dedupe)
        except DatasetNotFoundError as e:
            missing.append(f"{name}: missing. {e}")
            continue
        rows.append(ds.stats())
        if name in DATASETS:
            try:
                ref = load_reference_split(name)
            except (DatasetNotFoundError, ValueError):
                continue
            checks.append(f"{name}: rebuilt split {'equals' if ds.same_split(ref) else 'DIFFERS FROM'} "
                          "the authors' fmrec_dataset.pkl")
    if rows:
        print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print("\n".join(checks))
    for text in missing:
        print(text, file=sys.stderr)
    if not rows:
        print("error: no dataset could be loaded (see above for where each was looked for and how to get it)",
              file=sys.stderr)
        return 1
    return 0 if all("equals" in c for c in checks) else 1


# -- options from the config dataclasses -------------------------------------------------------

def _add_dataclass_options(parser: argparse.ArgumentParser, cls, prefix: str = "", skip: frozenset = frozenset(),
                           group=None) -> list[str]:
    """One ``--field-name`` option per dataclass field (defaults left to the dataclass); a
    nested config gets ``--<field>-<subfield>`` options (``--sampler-steps``)."""
    group = group or parser.add_argument_group(f"{cls.__name__} (defaults: the paper's)")
    hints = typing.get_type_hints(cls)
    names = []
    for f in dataclasses.fields(cls):
        if f.name in skip or f.name.isupper():
            continue
        hint, name = hints[f.name], prefix + f.name
        if dataclasses.is_dataclass(hint):
            names += _add_dataclass_options(parser, hint, prefix=name + ".", group=group)
            continue
        flag = "--" + name.replace("_", "-").replace(".", "-")
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        kw: dict = {"dest": name, "default": argparse.SUPPRESS, "help": f"default: {f.default}"}
        if hint is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif origin is typing.Literal:
            kw["choices"] = list(args)
        elif origin is tuple:
            kw.update(nargs="+", type=args[0] if args else int)
        elif type(None) in args:  # Optional[int]
            kw["type"] = next(a for a in args if a is not type(None))
        else:
            kw["type"] = hint
        group.add_argument(flag, **kw)
        names.append(name)
    return names


def _collect(args, names: list[str]) -> dict:
    """Options given on the command line, nested ``a.b`` names folded into ``{"a": {"b": ...}}``."""
    out: dict = {}
    for name in names:
        if hasattr(args, name):
            head, _, tail = name.partition(".")
            if tail:
                out.setdefault(head, {})[tail] = getattr(args, name)
            else:
                out[name] = getattr(args, name)
    return out


# -- train -----------------------------------------------------------------------------------

def _context(args):
    from .context import LOCAL_ROOT, Context

    output_dir = Path(args.output_dir) if args.output_dir else LOCAL_ROOT
    ctx = Context.create(args.size, args.device, output_dir, progress=not args.quiet)
    ctx.allow_cpu_training = True  # asked for explicitly on the command line
    ctx.data_options = {k: v for k, v in {"fmt": args.format, "data_dir": args.data_dir,
                                           "allow_unverified": getattr(args, "allow_unverified", False),
                                           "max_users": args.max_users}.items() if v not in (None, False)}
    if not args.dedupe:
        ctx.data_options["dedupe"] = False
    return ctx


def _cmd_train(args, model_fields: list[str], train_fields: list[str]) -> int:
    """One run; under ``torchrun --nproc-per-node N`` trained data-parallel on N processes
    (:mod:`fmrec_lib.distributed`), rank 0 writing and printing."""
    from .distributed import launched

    with launched(args.device) as (group, device):
        args.device = device
        return _train(args, model_fields, train_fields, group is None or group.is_main)


def _train(args, model_fields: list[str], train_fields: list[str], main: bool) -> int:
    from .distributed import barrier
    from .runs import RunSpec, find, run
    from .train import resolve_configs

    overrides = {**_collect(args, model_fields), **_collect(args, train_fields)}
    seed = overrides.pop("seed", 1997)
    ctx = _context(args)
    ctx.progress = ctx.progress and main
    if "sampler" in overrides:  # partial sampler options complete the size's sampler
        base = ctx.size.configs(args.model)[0].get("sampler")
        base = dataclasses.asdict(base) if dataclasses.is_dataclass(base) else (base or {})
        overrides["sampler"] = {**base, **overrides["sampler"]}
    resolve_configs(args.model, *ctx.size.configs(args.model, seed=seed, **overrides))  # bad settings fail now
    spec = RunSpec(args.dataset, args.model, seed, overrides)
    if not args.resume:
        from . import checkpoints
        from .runs import spec_hash

        stale = checkpoints.running_path(ctx.store.checkpoints, args.model, spec_hash(ctx, spec))
        if main and stale.exists():
            stale.rename(stale.with_suffix(".pt.discarded"))
            logging.getLogger(__name__).warning("--no-resume: moved %s aside", stale)
        barrier()
    done = find(ctx, spec)
    if done is not None and main:
        print(f"already finished: run {done.config_hash} ({spec.name}) is recorded in {done.results_path}; "
              "reusing it (nothing trained). Change a setting or --output-dir to train another.", file=sys.stderr)
    r = done if done is not None else run(ctx, spec)
    if not main:
        return 0
    print(json.dumps({"dataset": r.dataset, "model": r.model, "config_hash": r.config_hash, "seed": r.spec.seed,
                      "size": ctx.size.name, "reused": r.reused, "best_epoch": r.best_epoch, "epochs_run": r.epochs_run,
                      "stop_reason": r.stop_reason, "device": r.device, "results": str(r.results_path),
                      "profile": r.model_config.get("profile"), "model_config": r.model_config,
                      "train_config": r.train_config, "val": r.val, **r.test}, default=str))
    return 0


# -- bench -----------------------------------------------------------------------------------

BENCH_FLAGS = ("fused_adam", "amp_bf16", "compile", "compile_mode", "tf32", "stack")


def _cmd_bench(args, model_fields: list[str]) -> int:
    """Time training and sampling; each ``--variant`` (model-config fields and speed flags,
    ``key=value,...``) is timed in turn in this one process, so the numbers compare. A variant
    that fails (one process) prints its error, as a JSON line with ``error`` too, and the next
    one is timed: a GPU window keeps the lines it can get; the exit status is then 1. Under
    ``torchrun --nproc-per-node N`` the N processes train data-parallel (rank 0 reports) and a
    failure ends them all."""
    from .distributed import launched

    with launched(args.device) as (group, device):
        args.device = device
        return _bench(args, model_fields, group is None or group.is_main, go_on=group is None)


def _bench(args, model_fields: list[str], main: bool, go_on: bool = True) -> int:
    from .bench import benchmark
    from .config import from_dict
    from .models import model_config_class

    ds = load_dataset(args.dataset, data_dir=args.data_dir, max_users=args.max_users, fmt=args.format,
                      dedupe=args.dedupe)
    model_config = _collect(args, model_fields)
    base_flags = {k: getattr(args, k) for k in BENCH_FLAGS}
    variants = [(v, _parse_overrides(v)) for v in args.variant or [""]]
    for _, overrides in variants:  # unknown keys fail before any timing
        from_dict(model_config_class(args.model), {**model_config, **{k: v for k, v in overrides.items()
                                                                      if k not in BENCH_FLAGS}})
    failed = 0
    for variant, overrides in variants:
        flags = {**base_flags, **{k: v for k, v in overrides.items() if k in BENCH_FLAGS}}
        config = {**model_config, **{k: v for k, v in overrides.items() if k not in BENCH_FLAGS}}
        try:
            report = benchmark(ds, model=args.model, model_config=config, device=args.device,
                               batch_size=args.batch_size, train_steps=args.train_steps, warmup=args.warmup,
                               sample_users=args.sample_users, **flags)
        except Exception as e:
            if not go_on:
                raise
            failed += 1
            error = f"{type(e).__name__}: {e}"
            logging.getLogger(__name__).debug("bench variant %r failed", variant, exc_info=True)
            print(f"{args.model} on {ds.name}, variant {variant!r}: FAILED ({error}); the next variant goes on",
                  file=sys.stderr)
            print(json.dumps({"dataset": ds.name, "model": args.model, "variant": variant, "error": error}),
                  flush=True)
            continue
        if not main:
            continue
        processes = f", {report['world_size']} processes" if "world_size" in report else ""
        print(f"{report['model']} on {report['dataset']} ({report['profile']} profile), {report['device']}, "
              f"torch {report['torch']}, flags {report['flags']}{processes}" + (f", variant {variant}" if variant else ""),
              file=sys.stderr)
        print(f"  training: {report['samples_per_s']:.0f} samples/s at batch {report['batch_size']} "
              f"({report['ms_per_step']:.1f} ms per step) -> {report['s_per_epoch']:.2f} s per epoch "
              f"({report['train_samples_per_epoch']} samples); warm-up {report['warmup_s']:.2f} s, "
              f"last batch of {report['partial_batch_size']}{' (eager)' if report['partial_eager'] else ''}: "
              f"{report['partial_step_s']:.2f} s, then {report['partial_steady_s']:.3f} s"
              + (f"; a stack of {report['stack']}: {report['s_per_run_epoch']:.2f} s per run-epoch"
                 if report["stack"] > 1 else ""), file=sys.stderr)
        print(f"  sampling: {report['users_per_s']:.0f} users/s ({report['model_calls_per_user']} model calls each, "
              f"{report['sample_users']} users in {report['sampling_s']:.2f} s)", file=sys.stderr)
        print(json.dumps({**{k: v for k, v in report.items() if k != "model_config"}, "variant": variant}, default=str),
              flush=True)
    return 1 if failed else 0


def _parse_overrides(text: str) -> dict:
    """``"rec_loss=dense,alpha=0.1"`` -> ``{"rec_loss": "dense", "alpha": 0.1}`` (JSON values, else strings)."""
    out = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"a variant is key=value[,key=value...], got {item!r}")
        try:
            out[key.strip().replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip().replace("-", "_")] = value
    return out


# -- campaign and merge -------------------------------------------------------------------------

def _cmd_campaign(args) -> int:
    from .campaign import run_campaign

    if args.deadline is None and args.executor == "local":
        raise ValueError("campaign --executor local needs --deadline SECONDS (a cluster executor does not)")
    summary = run_campaign(size=args.size, device=args.device, deadline_s=args.deadline, jobs=args.jobs,
                           output_dir=args.output_dir, archive=args.archive, dry_run=args.dry_run,
                           executor=args.executor, executor_options=_executor_options(args),
                           allow_cpu_training=args.allow_cpu_training, epochs_estimate=args.epochs_estimate,
                           retry_failed=args.retry_failed, speed=_parse_overrides(args.speed or ""),
                           stack=args.stack, fit_within_s=args.fit_within, share_again=args.share_again)
    print(json.dumps(summary, default=str))
    return 0


def _executor_options(args) -> dict:
    return {k: getattr(args, k) for k in ("partition", "gpus_per_job", "cpus_per_job", "mem_gb", "time_limit_min",
                                          "array_parallelism", "slurm_folder", "max_retries", "separate_outputs")
            if getattr(args, k, None) not in (None, False)}


def _cmd_merge(args) -> int:
    from .campaign import merge_archive

    added = merge_archive(args.archive, size=args.size, output_dir=args.output_dir)
    print(json.dumps(added))
    return 0


def _cmd_pick_speed(args) -> int:
    from .planning import fastest_setting, read_bench
    from .sizes import get_size

    epochs = args.epochs
    if epochs is None and args.size != "paper":  # the size's epochs (paper: what the authors' runs took)
        epochs = get_size(args.size).train.get("epochs")
    best = fastest_setting(read_bench(args.bench), args.dataset, args.model, args.device, args.fit_seconds, epochs)
    if best is None:
        raise ValueError(f"no bench line of {args.model} on {args.dataset} that the campaign can run"
                         f"{f' and that finishes a run within {args.fit_seconds:g} s' if args.fit_seconds else ''} in "
                         f"{', '.join(map(str, args.bench))}")
    print(json.dumps(best), file=sys.stderr)
    print(best["speed"] or "-", best["stack"])  # what tools/gpu_window.sh reads: SPEED ("-": none) and STACK
    return 0


# -- parser ----------------------------------------------------------------------------------

def build_parser(model: str = "fmrec") -> tuple[argparse.ArgumentParser, dict[str, list[str]]]:
    from .models import MODELS, model_config_class
    from .sizes import SIZES
    from .train import TrainConfig

    parser = argparse.ArgumentParser(prog="python -m fmrec_lib", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)
    fields: dict[str, list[str]] = {}

    p = sub.add_parser("data", help="build the datasets, print their statistics, check the authors' splits")
    p.add_argument("datasets", nargs="*", help=f"names or file paths (default: all of {', '.join(sorted(DATASETS))})")
    p.add_argument("--no-download", dest="download", action="store_false", help="only use local files")
    _add_format_option(p)

    p = sub.add_parser("suite", help="run the notebook suite with papermill (the main job)")
    p.add_argument("--size", default="auto", help="smoke, quick, paper or auto (paper with CUDA, quick without)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--only", nargs="*", help="notebook name prefixes, e.g. 00 01")
    p.add_argument("--output-dir", default=None, help="executed copies (default notebooks/executed/<size>)")
    p.add_argument("--reuse-only", action="store_true",
                   help="train nothing: render what results/<size>/ and runs/ hold; missing runs are reported "
                        "(the main table marks them 'not computed yet')")

    p = sub.add_parser("campaign", help="train every run the notebooks need at a size, by priority, before a deadline")
    p.add_argument("--size", default="paper", choices=SIZES)
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--deadline", type=positive_float, default=None,
                   help="seconds from now to stop by (required with --executor local; on a cluster each job has "
                        "--time-limit-min instead, and a deadline only keeps jobs that cannot finish by then from starting)")
    p.add_argument("--fit-within", type=positive_float, default=None, metavar="SECONDS",
                   help="start runs that can finish within this many seconds from now (>= --deadline), though "
                        "training stops at the deadline: a later call on the same machine and output root resumes "
                        "them (a GPU window's first call)")
    p.add_argument("--jobs", type=positive_int, default=1, help="runs at once (processes sharing the device)")
    p.add_argument("--output-dir", default=None, help="output root (default: the repository)")
    p.add_argument("--archive", default=None, help="pack results/<size>/ into this .tar.gz after every finished job")
    p.add_argument("--speed", default=None, metavar="KEY=VALUE[,KEY=VALUE]",
                   help="speed settings for every run, e.g. tf32=true,fused_adam=true,compile=true,"
                        "compile_mode=reduce-overhead (not part of a run's identity; recorded with each result)")
    p.add_argument("--retry-failed", action="store_true", help="also retry jobs whose last attempt failed for good "
                                                                "(a NaN loss or NaN scores)")
    p.add_argument("--share-again", action="store_true",
                   help="run --jobs at once although runs with this device, speed settings and stack size did not "
                        "fit while sharing the device before (logged 'one job at a time'; by default such a "
                        "campaign runs one job at a time)")
    p.add_argument("--dry-run", action="store_true", help="print the plan (priority order, estimates), run nothing")
    p.add_argument("--allow-cpu-training", action="store_true", help="train paper-size runs on a CPU (hours each)")
    p.add_argument("--stack", type=positive_int, default=1,
                   help="train up to K runs that differ only in seed and loss weights as one stack in one worker "
                        "(fmrec_lib.stacked; local executor)")
    p.add_argument("--epochs-estimate", default="max", choices=["max", "expected"],
                   help="budget each run for its maximum epochs (never cut off) or for the epochs such runs took "
                        "so far (more runs start in a short window; one that runs longer is stopped at the deadline)")
    p.add_argument("--executor", default="local", choices=["local", "slurm", "debug", "local-submitit"],
                   help="local processes; SLURM job arrays through submitit (pip install 'fmrec-lib[cluster]'); "
                        "submitit's in-process debug executor or its local subprocesses (tests of the cluster path)")
    cluster_help = {"partition": "SLURM partition", "gpus-per-job": "GPUs per job (default 1 on SLURM)",
                    "cpus-per-job": "CPU cores per job", "mem-gb": "memory per job, GB",
                    "time-limit-min": "time limit of each job in minutes (default 240); a job that reaches it is "
                                      "requeued and resumes from its running checkpoint",
                    "array-parallelism": "jobs of an array running at once (SLURM's --array=...%%N)",
                    "slurm-folder": "submitit's logs and pickles (default <output root>/submitit/<size>)",
                    "max-retries": "times a failed job is resubmitted (default 2 on a cluster, 0 locally)"}
    for name, kind in (("partition", str), ("gpus-per-job", int), ("cpus-per-job", int), ("mem-gb", float),
                       ("time-limit-min", int), ("array-parallelism", int), ("slurm-folder", str),
                       ("max-retries", int)):
        p.add_argument(f"--{name}", type=kind, default=None, help=cluster_help[name])
    p.add_argument("--separate-outputs", action="store_true",
                   help="each job writes under <output root>/jobs/<size>/<config hash>/ and the campaign alone merges "
                        "it into results/<size>/: for a shared disk whose file locks do not hold across nodes")

    p = sub.add_parser("merge", help="merge a campaign archive (or results folder) into results/<size>/")
    p.add_argument("archive", help="a .tar.gz written by campaign --archive, or a results/<size> folder")
    p.add_argument("--size", default="paper", choices=SIZES)
    p.add_argument("--output-dir", default=None, help="output root (default: the repository)")

    p = sub.add_parser("pick-speed", help="the fastest per-run setting the campaign can use, from bench lines")
    p.add_argument("bench", nargs="+", help="bench JSON-lines files (this window's, and earlier ones)")
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument("--model", default="fmrec")
    p.add_argument("--device", default=None, help="bench lines of this device (default: the last line's)")
    p.add_argument("--fit-seconds", type=positive_float, default=None,
                   help="only settings whose run (a stack: all its runs) finishes within this time")
    p.add_argument("--size", default="paper", choices=SIZES, help="the size whose runs must fit")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="epochs a run takes, for --fit-seconds (default: at paper size the authors' FMRec epochs, "
                        "else the maximum; at another size its epochs)")

    for name in ("train", "bench"):
        p = sub.add_parser(name, help="train and test one model" if name == "train" else "time training and sampling")
        p.add_argument("--dataset", required=True, help=f"{', '.join(sorted(DATASETS))} or a file path")
        p.add_argument("--model", default="fmrec", choices=list(MODELS))
        p.add_argument("--device", default="auto", help="cpu, cuda or auto")
        p.add_argument("--data-dir", default=None, help="folder holding the named datasets")
        p.add_argument("--max-users", type=positive_int, default=None,
                       help="a deterministic subset of users (default: the size's cap)")
        _add_format_option(p)
        fields[f"{name}_model"] = _add_dataclass_options(p, model_config_class(model))
        if name == "train":
            p.add_argument("--size", default="paper", choices=SIZES, help="the size whose settings to start from")
            p.add_argument("--output-dir", default=None, help="output root (default: runs/, git-ignored)")
            p.add_argument("--allow-unverified", action="store_true", help="download a dataset with no pinned sha256")
            p.add_argument("--no-resume", dest="resume", action="store_false", help="move an existing checkpoint aside")
            p.add_argument("--quiet", action="store_true", help="no progress bar")
            fields["train_train"] = _add_dataclass_options(p, TrainConfig)
        else:
            p.add_argument("--batch-size", type=positive_int, default=512)
            p.add_argument("--train-steps", type=positive_int, default=20, help="timed training steps")
            p.add_argument("--sample-users", type=positive_int, default=None, help="users to sample for (default: all)")
            p.add_argument("--warmup", type=positive_int, default=3, help="untimed full steps first (compilation)")
            for flag in ("fused-adam", "amp-bf16", "compile", "tf32"):
                p.add_argument(f"--{flag}", action="store_true")
            p.add_argument("--compile-mode", default="default", help="torch.compile mode with --compile")
            p.add_argument("--stack", type=positive_int, default=1,
                           help="train K models as one stack (fmrec_lib.stacked); rates count all K runs")
            p.add_argument("--variant", action="append", metavar="KEY=VALUE[,KEY=VALUE]",
                           help="model-config fields and speed flags timed in turn in this process (repeatable), "
                                "e.g. --variant tf32=true,fused_adam=true --variant compile=true")
    return parser, fields


def _add_format_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", default=None, choices=FORMATS,
                        help="format of a data file (default: from its suffix)")
    parser.add_argument("--no-dedupe", dest="dedupe", action="store_false",
                        help="keep exact duplicate interactions (same user, item and timestamp; dropped by default, "
                             "with a logged count)")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--model", default="fmrec")
    pre.add_argument("--debug", action="store_true")
    known = pre.parse_known_args(argv)[0]
    from .models import MODELS

    parser, fields = build_parser(known.model if known.model in MODELS else "fmrec")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm():  # log lines go above the progress bar instead of breaking it
        return _dispatch(args, fields)


def _dispatch(args, fields) -> int:
    try:
        if args.command == "data":
            return _cmd_data(args)
        if args.command == "suite":
            from .suite import run_suite
            return 1 if run_suite(args.size, args.device, args.only, args.output_dir, args.reuse_only) else 0
        if args.command == "train":
            return _cmd_train(args, fields["train_model"], fields["train_train"])
        if args.command == "campaign":
            return _cmd_campaign(args)
        if args.command == "merge":
            return _cmd_merge(args)
        if args.command == "pick-speed":
            return _cmd_pick_speed(args)
        return _cmd_bench(args, fields["bench_model"])
    except KeyboardInterrupt:
        print("interrupted: a running checkpoint (if any) is kept; the same command resumes it", file=sys.stderr)
        return 130
    except Exception as e:  # one clear line, not a traceback; --debug shows it
        if args.debug:
            raise
        message = " ".join(str(e).split()) if str(e) else type(e).__name__
        print(f"error: {message} ({type(e).__name__}; --debug for the traceback)", file=sys.stderr)
        return EXIT_ERROR
