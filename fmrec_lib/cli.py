"""Command line: ``python -m fmrec_lib {data,suite,train,bench} ...``.

``train`` accepts every field of the chosen model's config and of :class:`TrainConfig` as an
option (``--alpha 0.1``, ``--eval-steps 10``, ``--batch-size 256``, ...) and ends by printing one
JSON line with the run's configuration and its test metrics.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import typing

from .data import DATASETS, DatasetNotFoundError, load_dataset, load_reference_split


def _cmd_data(args) -> int:
    import pandas as pd

    rows, checks = [], []
    for name in args.datasets or sorted(DATASETS):
        try:
            ds = load_dataset(name, download=args.download)
        except DatasetNotFoundError as e:
            print(f"{name}: missing ({str(e).splitlines()[0]})", file=sys.stderr)
            continue
        rows.append(ds.stats())
        try:
            ref = load_reference_split(name)
        except (DatasetNotFoundError, ValueError):
            continue
        checks.append(f"{name}: rebuilt split {'equals' if ds.same_split(ref) else 'DIFFERS FROM'} "
                      "the authors' fmrec_dataset.pkl")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print("\n".join(checks))
    return 0 if all("equals" in c for c in checks) else 1


def _add_dataclass_options(parser: argparse.ArgumentParser, cls, skip: set[str] = frozenset()) -> list[str]:
    """One ``--field-name`` option per dataclass field (defaults left to the dataclass)."""
    group = parser.add_argument_group(f"{cls.__name__} (defaults: the paper's)")
    hints = typing.get_type_hints(cls)
    names = []
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        hint, flag = hints[f.name], "--" + f.name.replace("_", "-")
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        kw: dict = {"dest": f.name, "default": argparse.SUPPRESS, "help": f"default: {f.default}"}
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
        names.append(f.name)
    return names


def _cmd_train(args, model_fields: list[str], train_fields: list[str]) -> int:
    from .train import fit

    ds = load_dataset(args.dataset, data_dir=args.data_dir, allow_unverified=args.allow_unverified)
    model_config = {k: getattr(args, k) for k in model_fields if hasattr(args, k)}
    train_config = {k: getattr(args, k) for k in train_fields if hasattr(args, k)}
    result = fit(ds, args.model, model_config, train_config, device=args.device,
                 checkpoint_dir=args.checkpoint_dir, resume=args.resume,
                 results_path=None if args.results == "none" else args.results, progress=not args.quiet)
    print(json.dumps(result.summary()))
    return 0


def _cmd_bench(args, model_fields: list[str]) -> int:
    from .bench import benchmark
    from .config import from_dict
    from .models import model_config_class

    ds = load_dataset(args.dataset, data_dir=args.data_dir, max_users=args.max_users)
    model_config = {k: getattr(args, k) for k in model_fields if hasattr(args, k)}
    for variant in args.variant or [""]:
        config = {**model_config, **_parse_overrides(variant)}
        from_dict(model_config_class(args.model), config)  # unknown keys fail before any timing
        report = benchmark(ds, model=args.model, model_config=config, device=args.device,
                           batch_size=args.batch_size, train_steps=args.steps, warmup=args.warmup,
                           sample_users=args.sample_users, fused_adam=args.fused_adam, amp_bf16=args.amp_bf16,
                           compile=args.compile, compile_mode=args.compile_mode, tf32=args.tf32)
        print(f"{report['model']} on {report['dataset']} ({report['profile']} profile), {report['device']}, "
              f"torch {report['torch']}, flags {report['flags']}" + (f", variant {variant}" if variant else ""))
        print(f"  training: {report['samples_per_s']:.0f} samples/s at batch {report['batch_size']} "
              f"({report['ms_per_step']:.1f} ms per step) -> {report['s_per_epoch']:.2f} s per epoch "
              f"({report['train_samples_per_epoch']} samples); warm-up {report['warmup_s']:.2f} s, "
              f"last batch of {report['partial_batch_size']}: {report['partial_step_s']:.2f} s")
        print(f"  sampling: {report['users_per_s']:.0f} users/s ({report['model_calls_per_user']} model calls each, "
              f"{report['sample_users']} users in {report['sampling_s']:.2f} s)")
        print(json.dumps({**{k: v for k, v in report.items() if k != "model_config"}, "variant": variant}))
    return 0


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


def build_parser(model: str = "fmrec") -> tuple[argparse.ArgumentParser, dict[str, list[str]]]:
    from .models import MODELS, model_config_class
    from .train import TrainConfig

    parser = argparse.ArgumentParser(prog="python -m fmrec_lib", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    fields: dict[str, list[str]] = {}

    p = sub.add_parser("data", help="build the datasets, print their statistics, check the authors' splits")
    p.add_argument("datasets", nargs="*", help=f"names (default: all of {', '.join(sorted(DATASETS))})")
    p.add_argument("--no-download", dest="download", action="store_false", help="only use local files")

    p = sub.add_parser("suite", help="run the notebook suite with papermill (the main job)")
    p.add_argument("--size", default="auto", help="smoke, quick, paper or auto (paper with CUDA, quick without)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--only", nargs="*", help="notebook name prefixes, e.g. 00 01")
    p.add_argument("--output-dir", default=None, help="executed copies (default notebooks/executed/<size>)")

    for name in ("train", "bench"):
        p = sub.add_parser(name, help="train and test one model" if name == "train" else "time training and sampling")
        p.add_argument("--dataset", required=True, help=f"{', '.join(sorted(DATASETS))} or a file path")
        p.add_argument("--model", default="fmrec", choices=list(MODELS))
        p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default)")
        p.add_argument("--data-dir", default=None, help="folder searched before FMREC_DATA_DIR and data/")
        fields[f"{name}_model"] = _add_dataclass_options(p, model_config_class(model))
        if name == "train":
            p.add_argument("--allow-unverified", action="store_true", help="download a dataset with no pinned sha256")
            p.add_argument("--results", default=str(_default_results()), help="results CSV ('none': do not record)")
            p.add_argument("--checkpoint-dir", default="checkpoints", help="atomic checkpoints, for resume")
            p.add_argument("--no-resume", dest="resume", action="store_false", help="ignore an existing checkpoint")
            p.add_argument("--quiet", action="store_true", help="no progress bar")
            fields["train_train"] = _add_dataclass_options(p, TrainConfig)
        else:
            p.add_argument("--batch-size", type=int, default=512)
            p.add_argument("--steps", type=int, default=20, help="timed training steps")
            p.add_argument("--max-users", type=int, default=None, help="a subset of users (a tiny run)")
            p.add_argument("--sample-users", type=int, default=None, help="users to sample for (default: all)")
            p.add_argument("--warmup", type=int, default=3, help="untimed full steps first (compilation)")
            p.add_argument("--compile-mode", default="default", help="torch.compile mode with --compile")
            p.add_argument("--variant", action="append", metavar="KEY=VALUE[,KEY=VALUE]",
                           help="model-config overrides benchmarked in turn in this process (repeatable), "
                                "e.g. --variant rec_loss=dense --variant rec_loss=sparse")
            for flag in ("fused-adam", "amp-bf16", "compile", "tf32"):
                p.add_argument(f"--{flag}", action="store_true")
    return parser, fields


def _default_results():
    from .results import DEFAULT_RESULTS
    return DEFAULT_RESULTS


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--model", default="fmrec")
    model = pre.parse_known_args(argv)[0].model
    from .models import MODELS
    parser, fields = build_parser(model if model in MODELS else "fmrec")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "data":
        return _cmd_data(args)
    if args.command == "suite":
        from .suite import run_suite
        return 1 if run_suite(args.size, args.device, args.only, args.output_dir) else 0
    if args.command == "train":
        return _cmd_train(args, fields["train_model"], fields["train_train"])
    return _cmd_bench(args, fields["bench_model"])
