"""Command line: ``python -m fmrec_lib {data,train,bench,suite} ...``."""
from __future__ import annotations

import argparse
import json
import logging
import sys

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
        same = list(ds.train) == list(ref.train) and ds.train == ref.train and ds.val == ref.val and ds.test == ref.test
        checks.append(f"{name}: rebuilt split {'equals' if same else 'DIFFERS FROM'} the authors' fmrec_dataset.pkl")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print("\n".join(checks))
    return 0 if all("equals" in c for c in checks) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fmrec_lib", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("data", help="build the datasets, print their statistics, check the authors' splits")
    p.add_argument("datasets", nargs="*", help=f"names (default: all of {', '.join(sorted(DATASETS))})")
    p.add_argument("--no-download", dest="download", action="store_false", help="only use local files")
    p.set_defaults(func=_cmd_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return args.func(args)
