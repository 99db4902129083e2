"""Named datasets: where their files are found or downloaded from, and how they are read.

Lookup order for a named dataset: ``$FMREC_DATA_DIR/<folder>/<file>``, then the project's
``data/<folder>/<file>``, then a download from the public source into ``data/<folder>/``
checked against the pinned sha256 (with pooch, imported only when a download happens).

A file path is read by its suffix (:data:`SUFFIX_FORMATS`) or by ``fmt=`` (:data:`FORMATS`).
Its dataset is named after the file, so that results, run hashes and plot titles say where
it came from: the file's stem (``mine.csv`` -> ``mine``), or ``<parent folder>/<stem>`` when
the stem is a generic name such as ``dataset`` or ``ratings`` (:data:`GENERIC_STEMS`), so
``/x/amazon_toys/dataset.pkl`` is ``amazon_toys/dataset`` and ``/x/ml-1m/ratings.dat`` is
``ml-1m/ratings``. Named datasets keep their registry name and label (``ml-100k``,
``ML-100k``).

Interaction files (``inter``, ``csv``, ``tsv``, ``dat``, ``steam``) lose their exact
duplicate rows (same user, item and timestamp) unless ``dedupe=False``; the count is logged
and kept in ``dataset.duplicates_dropped`` and ``dataset.notes``. The named ML-100k file has
none, so its rebuilt split still equals the authors'.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from ..utils import REPO_ROOT
from .dataset import (SequentialDataset, build_dataset, dataset_from_split, drop_duplicate_interactions,
                      sequences_from_interactions)
from .readers import (DataFormatError, read_csv_interactions, read_dat_interactions, read_interactions,
                      read_sequences, read_split_pickle, read_steam_reviews, read_tsv_interactions)

log = logging.getLogger(__name__)

DATA_DIR_ENV = "FMREC_DATA_DIR"
REFERENCE_SPLIT = "fmrec_dataset.pkl"
Format = Literal["inter", "sequences", "csv", "tsv", "dat", "steam", "split"]
FORMATS: tuple[str, ...] = get_args(Format)


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    folder: str
    filename: str
    fmt: Format
    url: str
    sha256: str | None
    label: str
    min_core: int = 0


DATASETS: dict[str, DatasetSpec] = {
    "ml-100k": DatasetSpec(
        "ml-100k", "ml-100k", "ml-100k.inter", "inter",
        "https://raw.githubusercontent.com/RuihongQiu/DuoRec/4ebc30d8b7d9465f854867887b127a0bbc38bc31/"
        "recbole/dataset_example/ml-100k/ml-100k.inter",
        "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff", "ML-100k"),
    "beauty": DatasetSpec(
        "beauty", "amazon_beauty", "Beauty.txt", "sequences",
        "https://raw.githubusercontent.com/salesforce/ICLRec/2890e6c3ff6a22c6699fc19cb863b66786c1cde4/data/Beauty.txt",
        "226cce9c3105299ca0db9615d7d3fb32b3175e90da43100ae352599f0f0107b8", "Beauty"),
    "yelp": DatasetSpec(
        "yelp", "yelp", "Yelp.txt", "sequences",
        "https://raw.githubusercontent.com/salesforce/ICLRec/2890e6c3ff6a22c6699fc19cb863b66786c1cde4/data/Yelp.txt",
        "724b219106b81dd2349027da997334ddb6da9fe2f152ad6e0d97a93170f7caed", "Yelp (ICLRec)"),
    # SASRec's Steam: no checksum has been pinned (no offline copy to compute it from), so
    # a download needs allow_unverified=True and logs the sha256 to pin.
    "steam": DatasetSpec(
        "steam", "steam", "steam_reviews.json.gz", "steam",
        "http://cseweb.ucsd.edu/~wckang/steam_reviews.json.gz", None, "Steam", min_core=5),
}


class DatasetNotFoundError(FileNotFoundError):
    """A named dataset is neither on disk nor downloadable here."""


def project_data_dir() -> Path:
    """The project's ``data/`` folder: the repository's in a source checkout, else the working
    folder's (:data:`fmrec_lib.utils.REPO_ROOT`), never inside an installed package."""
    return REPO_ROOT / "data"


def search_dirs(data_dir: str | Path | None = None) -> list[Path]:
    dirs = []
    if data_dir is not None:
        dirs.append(Path(data_dir))
    if os.environ.get(DATA_DIR_ENV):
        dirs.append(Path(os.environ[DATA_DIR_ENV]))
    dirs.append(project_data_dir())
    return dirs


def locate(name: str, data_dir: str | Path | None = None, download: bool = True,
           allow_unverified: bool = False) -> Path:
    """Path of a named dataset's raw file, downloading it if allowed and needed."""
    spec = _spec(name)
    candidates = [d / spec.folder / spec.filename for d in search_dirs(data_dir)]
    for path in candidates:
        if path.is_file():
            return path
    looked = "\n  ".join(str(p) for p in candidates)
    how = (f"Set {DATA_DIR_ENV} to a folder holding {spec.folder}/{spec.filename}, or put the file in "
           f"{project_data_dir() / spec.folder}/, or allow a download from {spec.url}")
    if not download:
        raise DatasetNotFoundError(f"dataset {name!r} not found; looked in:\n  {looked}\n{how}")
    return _download(spec, project_data_dir() / spec.folder, looked, how, allow_unverified)


def _download(spec: DatasetSpec, target: Path, looked: str, how: str, allow_unverified: bool) -> Path:
    if spec.sha256 is None and not allow_unverified:
        raise DatasetNotFoundError(
            f"dataset {spec.name!r} not found locally (looked in:\n  {looked}) and it has no pinned sha256, "
            f"so it is not downloaded unverified. Pass allow_unverified=True (CLI: --allow-unverified) to "
            f"download {spec.url} and log its sha256, or place the file yourself.")
    import pooch  # optional at import time: the GPU machine has no pooch

    target.mkdir(parents=True, exist_ok=True)
    try:
        path = pooch.retrieve(spec.url, known_hash=f"sha256:{spec.sha256}" if spec.sha256 else None,
                              fname=spec.filename, path=target, progressbar=True)
    except ValueError as e:  # pooch's hash mismatch
        raise DataFormatError(f"download of {spec.name!r} from {spec.url} failed its sha256 check: {e}") from e
    except Exception as e:  # offline, DNS, HTTP errors
        raise DatasetNotFoundError(
            f"dataset {spec.name!r} not found; looked in:\n  {looked}\nand the download from {spec.url} "
            f"failed ({type(e).__name__}: {e}).\n{how}") from e
    if spec.sha256 is None:
        log.warning("downloaded %s unverified; its sha256 is %s", spec.name, pooch.file_hash(path))
    return Path(path)


def _spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(DATASETS))} "
                         f"(or pass a path to a {_suffix_list()} file)")
    return DATASETS[name]


SUFFIX_FORMATS: dict[str, Format] = {
    ".inter": "inter", ".data": "inter", ".txt": "sequences", ".csv": "csv", ".tsv": "tsv", ".dat": "dat",
    ".pkl": "split", ".json.gz": "steam",
}

_INTERACTION_READERS = {"inter": read_interactions, "csv": read_csv_interactions, "tsv": read_tsv_interactions,
                        "dat": read_dat_interactions, "steam": read_steam_reviews}

# Stems that say nothing about the data; such a file is named after its folder too.
GENERIC_STEMS = frozenset({
    "dataset", "data", "fmrec_dataset", "train", "test", "valid", "split", "ratings", "rating", "interactions",
    "inter", "events", "reviews", "sequences", "u", "all", "full", "input",
})


def _suffix_list() -> str:
    return ", ".join(SUFFIX_FORMATS)


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; known formats: {', '.join(FORMATS)}")


def format_of(path: Path) -> Format | None:
    """The format a file's suffix implies (``.gz`` compressed text by the suffix before it), or None."""
    name = path.name.lower()
    for suffix, fmt in SUFFIX_FORMATS.items():
        if name.endswith(suffix) or (fmt != "split" and name.endswith(suffix + ".gz")):
            return fmt
    return None


def file_dataset_name(path: str | Path) -> str:
    """Short readable name of a dataset read from a file: its stem, or ``<folder>/<stem>`` when the
    stem is generic (:data:`GENERIC_STEMS`). Never an absolute path: plots show it as a title."""
    path = Path(path)
    name = path.name[:-3] if path.name.lower().endswith(".gz") else path.name
    stem = Path(name).stem  # steam_reviews.json.gz -> steam_reviews
    if stem.lower() in GENERIC_STEMS:
        folder = Path(os.path.abspath(path)).parent.name  # abspath: "dataset.pkl" and "../x.pkl" too
        if folder:
            return f"{folder}/{stem}"
    return stem


def dataset_label(name_or_path: str | Path) -> str:
    """What a dataset is called in tables, titles and captions: a named dataset's name, a file's
    :func:`file_dataset_name` (never an absolute path). Reads nothing."""
    return str(name_or_path) if str(name_or_path) in DATASETS else file_dataset_name(name_or_path)


def read_file(path: Path, fmt: Format, name: str, *, min_core: int = 0, on_short: str = "drop",
              label: str = "", dedupe: bool = True) -> SequentialDataset:
    """Read ``path`` in format ``fmt`` and split it; interaction formats drop exact duplicates
    (same user, item and timestamp) unless ``dedupe=False``."""
    _check_format(fmt)
    if fmt == "split":
        return dataset_from_split(read_split_pickle(path), name, source=str(path))
    dropped = 0
    if fmt == "sequences":
        sequences = read_sequences(path)
    else:
        rows = _INTERACTION_READERS[fmt](path)
        if dedupe:
            rows, dropped = drop_duplicate_interactions(rows, source=str(path))
        sequences = sequences_from_interactions(rows)
    ds = build_dataset(sequences, name, min_core=min_core, on_short=on_short, source=str(path), label=label)
    if dropped:
        ds.duplicates_dropped = dropped
        ds.notes.append(f"dropped {dropped} exact duplicate interaction(s) (same user, item and timestamp)")
    return ds


def load_dataset(
    name_or_path: str | Path,
    *,
    data_dir: str | Path | None = None,
    download: bool = True,
    allow_unverified: bool = False,
    fmt: Format | None = None,
    min_core: int | None = None,
    on_short: Literal["drop", "error"] = "drop",
    max_users: int | None = None,
    subset_seed: int = 0,
    dedupe: bool = True,
) -> SequentialDataset:
    """Load a named dataset (``ml-100k``, ``beauty``, ``yelp``, ``steam``) or a file.

    Files are read by suffix unless ``fmt`` (one of :data:`FORMATS`) is given:
    ``.inter``/``.data`` (``inter``: user item rating timestamp), ``.txt`` (``sequences``: one
    user per line), ``.csv``/``.tsv`` (header user,item,timestamp), ``.dat`` (MovieLens-1M
    ``user::item::rating::timestamp``), ``.pkl`` (``split``: the authors' split), ``.json.gz``
    (``steam``: raw Steam reviews); a ``.gz`` text file by the suffix before it. A named
    dataset has its own format, so ``fmt`` may only repeat it. ``dedupe`` drops exact
    duplicate interactions (logged and counted in ``duplicates_dropped``). ``max_users``
    keeps a deterministic random subset of users for quick runs.
    """
    if fmt is not None:
        _check_format(fmt)
    key = str(name_or_path)
    if key in DATASETS:
        spec = DATASETS[key]
        if fmt is not None and fmt != spec.fmt:
            raise ValueError(f"dataset {key!r} is in format {spec.fmt!r}, not {fmt!r} (fmt= is for files)")
        path = locate(key, data_dir, download, allow_unverified)
        ds = read_file(path, spec.fmt, key, min_core=spec.min_core if min_core is None else min_core,
                       on_short=on_short, label=spec.label, dedupe=dedupe)
    else:
        path = Path(key)
        if path.is_dir():
            raise IsADirectoryError(f"{path} is a folder, not a data file: give the file inside it (a "
                                    f"{_suffix_list()} file), or a dataset name ({', '.join(sorted(DATASETS))})")
        if not path.is_file():
            if path.suffix or os.sep in key:
                raise FileNotFoundError(f"data file not found: {path}")
            _spec(key)  # raises the unknown-name error listing the known datasets
        fmt = fmt or format_of(path)
        if fmt is None:
            raise ValueError(f"cannot tell the format of {path} from its suffix (known: {_suffix_list()}); "
                             f"pass fmt= (CLI: --format) one of {', '.join(FORMATS)}")
        ds = read_file(path, fmt, file_dataset_name(path), min_core=min_core or 0, on_short=on_short,
                       dedupe=dedupe)
    return ds.subset(max_users, seed=subset_seed)


def load_reference_split(name: str, data_dir: str | Path | None = None) -> SequentialDataset:
    """The authors' exact split (``fmrec_dataset.pkl`` beside the raw file), read safely."""
    spec = _spec(name)
    candidates = [d / spec.folder / REFERENCE_SPLIT for d in search_dirs(data_dir)]
    for path in candidates:
        if path.is_file():
            return dataset_from_split(read_split_pickle(path), name, source=str(path))
    raise DatasetNotFoundError(f"no authors' split for {name!r}; looked in: " + ", ".join(map(str, candidates)))
