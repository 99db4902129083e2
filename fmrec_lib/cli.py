"""Command line: ``python -m fmrec_lib {data,train,bench,suite,campaign,merge} ...``.

``train`` runs one configuration at a size's settings through the notebooks' run store (a
recorded run is reused); every field of the model's config and of ``TrainConfig`` is an option
(``--alpha 0.1``, ``--sampler-steps 10``); it prints one JSON line with the run and its test
metrics; outputs go to ``runs/`` (git-ignored) unless ``--output-dir`` says where. Errors are
one line on stderr and a non-zero exit; ``--debug`` shows the traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import sys
import typing
from pathlib import Path

import pandas as pd
from tqdm.contrib.logging import logging_redirect_tqdm

from .data import DATASETS, FORMATS, DatasetNotFoundError, load_dataset, load_reference_split
from .experiments import context
from .experiments.context import Context
from .experiments.runs import RunSpec, find, run, spec_hash
from .experiments.sizes import SIZES
from .experiments.suite import run_suite
from .models import MODELS, model_config_class
from .ops.bench import benchmark
from .ops.campaign import merge_archive, run_campaign
from .training import TrainConfig, checkpoints, resolve_configs

EXIT_ERROR = 2
SPEED_FLAGS = ("fused_adam", "amp_bf16", "compile", "compile_mode", "tf32")


def positive(kind):
    def parse(text: str):
        if not kind(text) > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return kind(text)
    return parse


def _cmd_data(args) -> int:
    rows, differs = [], False
    for name in args.datasets or sorted(DATASETS):
        try:
            ds = load_dataset(name, download=args.download, fmt=args.format, dedupe=args.dedupe)
        except DatasetNotFoundError as e:
            print(f"{name}: missing. {e}", file=sys.stderr)
            continue
        same = None
        with contextlib.suppress(DatasetNotFoundError):  # no authors' split here: not checked
            same = ds.same_split(load_reference_split(name)) if name in DATASETS else None
        differs |= same is False
        rows.append({**ds.stats(), "authors' split": {None: "not checked", True: "equal", False: "DIFFERS"}[same]})
    if not rows:
        print("error: no dataset could be loaded (see above for where each was looked for)", file=sys.stderr)
        return 1
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 1 if differs else 0


def _add_dataclass_options(parser, cls, prefix: str = "", group=None) -> list[str]:
    """One ``--field-name`` option per dataclass field (defaults left to the dataclass); a
    nested config gets ``--<field>-<subfield>`` options (``--sampler-steps``)."""
    group = group or parser.add_argument_group(f"{cls.__name__} (defaults: the paper's)")
    hints, names = typing.get_type_hints(cls), []
    for f in dataclasses.fields(cls):
        hint, name = hints[f.name], prefix + f.name
        if dataclasses.is_dataclass(hint):
            names += _add_dataclass_options(parser, hint, prefix=name + ".", group=group)
            continue
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        kw: dict = {"dest": name, "default": argparse.SUPPRESS, "help": f"default: {f.default}"}
        if hint is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif origin is typing.Literal:
            kw["choices"] = list(args)
        elif origin is tuple:
            kw.update(nargs="+", type=args[0] if args else int)
        else:
            kw["type"] = next((a for a in args if a is not type(None)), hint)  # Optional[int] -> int
        group.add_argument("--" + name.replace("_", "-").replace(".", "-"), **kw)
        names.append(name)
    return names


def _collect(args, names: list[str]) -> dict:
    """Options given on the command line, nested ``a.b`` names folded into ``{"a": {"b": ...}}``."""
    out: dict = {}
    for name in (n for n in names if hasattr(args, n)):
        head, _, tail = name.partition(".")
        (out.setdefault(head, {}) if tail else out)[tail or head] = getattr(args, name)
    return out


def _cmd_train(args, model_fields: list[str], train_fields: list[str]) -> int:
    overrides = {**_collect(args, model_fields), **_collect(args, train_fields)}
    seed = overrides.pop("seed", 1997)
    ctx = Context.create(args.size, args.device, Path(args.output_dir) if args.output_dir else context.LOCAL_ROOT,
                         progress=not args.quiet)
    ctx.allow_cpu_training = True  # asked for explicitly on the command line
    ctx.data_options = {k: v for k, v in {"fmt": args.format, "max_users": args.max_users,  # none: the default read
                                           "allow_unverified": args.allow_unverified or None,
                                           "dedupe": None if args.dedupe else False}.items() if v is not None}
    if "sampler" in overrides:  # partial sampler options complete the size's sampler
        base = ctx.size.configs(args.model)[0].get("sampler")
        base = dataclasses.asdict(base) if dataclasses.is_dataclass(base) else (base or {})
        overrides["sampler"] = {**base, **overrides["sampler"]}
    resolve_configs(args.model, *ctx.size.configs(args.model, seed=seed, **overrides))  # bad settings fail now
    spec = RunSpec(args.dataset, args.model, seed, overrides)
    stale = checkpoints.running_path(ctx.store.checkpoints, args.model, spec_hash(ctx, spec))
    if not args.resume and stale.exists():
        stale.rename(stale.with_suffix(".pt.discarded"))
        logging.getLogger(__name__).warning("--no-resume: moved %s aside", stale)
    if find(ctx, spec) is not None:
        print(f"already finished: {spec.name} is recorded in {ctx.stores[0].runs} or a store beside it; reusing it "
              "(nothing trained). Change a setting or --output-dir to train another.", file=sys.stderr)
    r = run(ctx, spec)
    print(json.dumps({"dataset": ctx.label(r.dataset), "model": r.model, "config_hash": r.config_hash,
                      "seed": r.spec.seed, "size": ctx.size.name, "reused": r.reused, "best_epoch": r.best_epoch,
                      "epochs_run": r.epochs_run, "stop_reason": r.stop_reason, "device": r.device,
                      "results": str(r.results_path), "profile": r.model_config.get("profile"),
                      "model_config": r.model_config, "train_config": r.train_config, "val": r.val, **r.test},
                     default=str))
    return 0


def _cmd_bench(args, model_fields: list[str]) -> int:
    """Time training and sampling; each ``--variant`` (model-config fields and speed flags,
    ``key=value,...``) is timed in turn in this one process, so the numbers compare as ratios. A
    variant that fails prints its error (also as a JSON line with ``error``) and the next one is
    timed; the exit status is then 1."""
    ds = load_dataset(args.dataset, max_users=args.max_users, fmt=args.format, dedupe=args.dedupe)
    base = _collect(args, model_fields)
    variants = [(v, parse_settings(v)) for v in args.variant or [""]]
    for _, over in variants:  # unknown keys fail before any timing
        resolve_configs(args.model, {**base, **{k: v for k, v in over.items() if k not in SPEED_FLAGS}}, None)
    failed = 0
    for variant, over in variants:
        flags = {**{k: getattr(args, k) for k in SPEED_FLAGS}, **{k: v for k, v in over.items() if k in SPEED_FLAGS}}
        config = {**base, **{k: v for k, v in over.items() if k not in SPEED_FLAGS}}
        try:
            report = benchmark(ds, model=args.model, model_config=config, device=args.device,
                               batch_size=args.batch_size, train_steps=args.train_steps, warmup=args.warmup,
                               sample_users=args.sample_users, **flags)
        except Exception as e:
            failed, error = failed + 1, f"{type(e).__name__}: {e}"
            print(f"{args.model} on {ds.name}, variant {variant!r}: FAILED ({error})", file=sys.stderr)
            print(json.dumps({"dataset": ds.name, "model": args.model, "variant": variant, "error": error}), flush=True)
            continue
        print(f"{report['model']} on {report['dataset']}, {report['device']}, flags {report['flags']}: "
              f"{report['s_per_epoch']:.2f} s per epoch ({report['ms_per_step']:.1f} ms per step), sampling "
              f"{report['users_per_s']:.0f} users/s", file=sys.stderr)
        print(json.dumps({**{k: v for k, v in report.items() if k != "model_config"}, "variant": variant},
                         default=str), flush=True)
    return 1 if failed else 0


def parse_settings(text: str) -> dict:
    """``"rec_loss=dense,alpha=0.1"`` -> ``{"rec_loss": "dense", "alpha": 0.1}`` (JSON values, else strings)."""
    out = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"settings are key=value[,key=value...], got {item!r}")
        with contextlib.suppress(json.JSONDecodeError):
            value = json.loads(value)
        out[key.strip().replace("-", "_")] = value
    return out


CLUSTER_OPTIONS = {"partition": str, "gpus-per-job": int, "cpus-per-job": int, "mem-gb": float, "slurm-folder": str,
                   "time-limit-min": int, "array-parallelism": int, "max-retries": int}  # docs/campaign.md


def build_parser(model: str = "fmrec") -> tuple[argparse.ArgumentParser, dict[str, list[str]]]:
    parser = argparse.ArgumentParser(prog="python -m fmrec_lib", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)
    fields: dict[str, list[str]] = {}

    p = sub.add_parser("data", help="build the datasets, print their statistics, check the authors' splits")
    p.add_argument("datasets", nargs="*", help=f"names or file paths (default: all of {', '.join(sorted(DATASETS))})")
    p.add_argument("--no-download", dest="download", action="store_false", help="only use local files")
    _add_format_options(p)

    p = sub.add_parser("suite", help="run the notebook suite with papermill (the main job)")
    p.add_argument("--size", default="auto", choices=["auto", *SIZES], help="auto: paper with CUDA, quick without")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--only", nargs="*", help="notebook name prefixes, e.g. 00 01")
    p.add_argument("--output-dir", default=None, help="executed copies (default notebooks/executed/<size>)")
    p.add_argument("--reuse-only", action="store_true", help="train nothing: render what the stores hold")

    p = sub.add_parser("campaign", help="train the runs the notebooks need at a size, by tier and priority")
    p.add_argument("--size", default="paper", choices=SIZES)
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--tier", type=positive(int), default=None, help="run tiers 1..N only (default: all)")
    p.add_argument("--deadline", type=positive(float), default=None, help="seconds from now to stop by")
    p.add_argument("--fit-within", type=positive(float), default=None, metavar="SECONDS",
                   help="start runs that can finish within this time (>= --deadline); a later campaign resumes them")
    p.add_argument("--output-dir", default=None, help="output root (default: the repository)")
    p.add_argument("--archive", default=None, help="pack results/<size>/ into this .tar.gz after every job")
    p.add_argument("--speed", default="", metavar="KEY=VALUE[,...]",
                   help="speed settings for every run, e.g. tf32=true,fused_adam=true,compile=true")
    p.add_argument("--epochs-estimate", default="max", choices=["max", "expected"])
    p.add_argument("--retry-failed", action="store_true", help="retry runs whose last attempt failed for good (NaN)")
    p.add_argument("--dry-run", action="store_true", help="the plan, estimates and device minutes per tier")
    p.add_argument("--bench", nargs="*", default=None, help="bench lines to price a dry run with")
    p.add_argument("--allow-cpu-training", action="store_true", help="train paper-size runs on a CPU (hours each)")
    p.add_argument("--executor", default="local", choices=["local", "slurm", "debug", "local-submitit"])
    for name, kind in CLUSTER_OPTIONS.items():
        p.add_argument(f"--{name}", type=kind, default=None, help="submitit executors (docs/campaign.md)")

    p = sub.add_parser("merge", help="merge a campaign archive (or results folder) into results/<size>/")
    p.add_argument("archive", help="a .tar.gz written by campaign --archive, or a results/<size> folder")
    p.add_argument("--size", default="paper", choices=SIZES)
    p.add_argument("--output-dir", default=None, help="output root (default: the repository)")

    for name in ("train", "bench"):
        p = sub.add_parser(name, help="train and test one model" if name == "train" else "time training and sampling")
        p.add_argument("--dataset", required=True, help=f"{', '.join(sorted(DATASETS))} or a file path")
        p.add_argument("--model", default="fmrec", choices=list(MODELS))
        p.add_argument("--device", default="auto", help="cpu, cuda or auto")
        p.add_argument("--max-users", type=positive(int), default=None, help="a deterministic subset of users")
        _add_format_options(p)
        fields[f"{name}_model"] = _add_dataclass_options(p, model_config_class(model))
        if name == "train":
            p.add_argument("--size", default="paper", choices=SIZES, help="the size whose settings to start from")
            p.add_argument("--output-dir", default=None, help="output root (default: runs/, git-ignored)")
            p.add_argument("--allow-unverified", action="store_true", help="download a dataset with no pinned sha256")
            p.add_argument("--no-resume", dest="resume", action="store_false", help="move an existing checkpoint aside")
            p.add_argument("--quiet", action="store_true", help="no progress bar")
            fields["train_train"] = _add_dataclass_options(p, TrainConfig)
        else:
            for flag, kind, default in (("batch-size", int, 512), ("train-steps", int, 20), ("warmup", int, 3),
                                        ("sample-users", int, None)):
                p.add_argument(f"--{flag}", type=positive(kind), default=default)
            for flag in ("fused-adam", "amp-bf16", "compile", "tf32"):
                p.add_argument(f"--{flag}", action="store_true")
            p.add_argument("--compile-mode", default="default", help="torch.compile mode with --compile")
            p.add_argument("--variant", action="append", metavar="KEY=VALUE[,...]",
                           help="model-config fields and speed flags timed in turn (repeatable)")
    return parser, fields


def _add_format_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", default=None, choices=FORMATS, help="format of a data file (default: its suffix)")
    parser.add_argument("--no-dedupe", dest="dedupe", action="store_false",
                        help="keep exact duplicate interactions (same user, item and timestamp)")


def _dispatch(args, fields) -> int:
    if args.command == "data":
        return _cmd_data(args)
    if args.command == "suite":
        return 1 if run_suite(args.size, args.device, args.only, args.output_dir, args.reuse_only) else 0
    if args.command == "train":
        return _cmd_train(args, fields["train_model"], fields["train_train"])
    if args.command == "bench":
        return _cmd_bench(args, fields["bench_model"])
    if args.command == "merge":
        print(json.dumps(merge_archive(args.archive, size=args.size, output_dir=args.output_dir)))
        return 0
    options = {k.replace("-", "_"): getattr(args, k.replace("-", "_")) for k in CLUSTER_OPTIONS
               if getattr(args, k.replace("-", "_")) is not None}
    summary = run_campaign(size=args.size, device=args.device, deadline_s=args.deadline, tier=args.tier,
                           output_dir=args.output_dir, archive=args.archive, dry_run=args.dry_run,
                           executor=args.executor, executor_options=options, allow_cpu_training=args.allow_cpu_training,
                           epochs_estimate=args.epochs_estimate, retry_failed=args.retry_failed,
                           speed=parse_settings(args.speed), fit_within_s=args.fit_within, bench=args.bench)
    print(json.dumps(summary, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--model", default="fmrec", choices=list(MODELS))
    parser, fields = build_parser(pre.parse_known_args(argv)[0].model)  # train/bench: the model's config fields
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        with logging_redirect_tqdm():  # log lines go above the progress bar instead of breaking it
            return _dispatch(args, fields)
    except KeyboardInterrupt:
        print("interrupted: a running checkpoint (if any) is kept; the same command resumes it", file=sys.stderr)
        return 130
    except Exception as e:  # one clear line, not a traceback; --debug shows it
        if args.debug:
            raise
        message = " ".join(str(e).split()) if str(e) else type(e).__name__
        print(f"error: {message} ({type(e).__name__}; --debug for the traceback)", file=sys.stderr)
        return EXIT_ERROR
