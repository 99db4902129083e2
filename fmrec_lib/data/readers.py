"""Readers for the raw formats the paper's datasets come in.

Each reader returns plain Python data and raises :class:`DataFormatError` naming the
file and the (1-based) line of the first malformed row, never a half-read result.

* interaction files (MovieLens ``u.data``, RecBole ``.inter``, a user's CSV or TSV with a
  ``user,item,timestamp`` header, MovieLens-1M ``user::item::rating::timestamp`` ``.dat``): a
  list of :class:`Interaction` rows in file order, exact duplicates included (they are
  dropped, with a logged count, when the dataset is built: see ``load_dataset(dedupe=)``);
* sequence files (ICLRec-style ``user item item ...``): ``{user: [items in order]}``;
* the authors' split pickle: ``{"train", "val", "test", "smap"[, "umap"]}`` read with an
  unpickler that resolves no global, so a pickle naming any class or function is refused;
* the raw Steam reviews (one Python dict literal per line, parsed with ``ast.literal_eval``).

Text is decoded as ``utf-8-sig``, so a file saved with a byte-order mark (as spreadsheet
programs write CSV) reads like one without. Timestamps are seconds since the epoch, or ISO
8601 dates: a date with a UTC offset (``2020-01-01T10:00:00+02:00``, or ``Z``) is converted
to UTC, a naive one is taken as UTC.
"""
from __future__ import annotations

import ast
import csv
import datetime as _dt
import gzip
import io
import math
import pickle
from dataclasses import dataclass
from pathlib import Path


class DataFormatError(ValueError):
    """A data file is empty, malformed or not of the expected kind."""


@dataclass(frozen=True, slots=True)
class Interaction:
    user: str
    item: str
    timestamp: float


def _open_text(path: Path):
    # utf-8-sig: a leading byte-order mark would otherwise become part of the first header name.
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig")
    return open(path, encoding="utf-8-sig")


def _check_exists(path: Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    return path


def _integer_token(token: str, path: Path, line_no: int, what: str) -> str:
    """Ids are kept as strings but must be integers in the integer-id formats."""
    try:
        int(token)
    except ValueError:
        raise DataFormatError(f"{path}:{line_no}: {what} {token!r} is not an integer id") from None
    return token


def read_interactions(path: str | Path) -> list[Interaction]:
    """Read MovieLens ``u.data`` or a RecBole ``.inter`` file: ``user item rating timestamp``.

    Tab or whitespace separated; a RecBole header (``user_id:token ...``) is recognised and
    skipped. Users and items must be integer ids; the rating is ignored (the paper treats
    every rating as an implicit interaction).
    """
    path = _check_exists(path)
    rows: list[Interaction] = []
    with _open_text(path) as f:
        for line_no, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if line_no == 1 and ":" in fields[0]:
                names = [c.split(":")[0] for c in fields]
                if names[:2] != ["user_id", "item_id"] or "timestamp" not in names:
                    raise DataFormatError(f"{path}:1: header {line.strip()!r} lacks user_id, item_id, timestamp")
                continue
            if len(fields) < 4:
                raise DataFormatError(
                    f"{path}:{line_no}: expected 'user item rating timestamp', got {line.strip()!r}"
                )
            user = _integer_token(fields[0], path, line_no, "user")
            item = _integer_token(fields[1], path, line_no, "item")
            try:
                ts = float(fields[3])
            except ValueError:
                raise DataFormatError(f"{path}:{line_no}: timestamp {fields[3]!r} is not a number") from None
            if not math.isfinite(ts):
                raise DataFormatError(f"{path}:{line_no}: timestamp {fields[3]!r} is not a finite number")
            rows.append(Interaction(user, item, ts))
    if not rows:
        raise DataFormatError(f"{path}: no interactions (empty file)")
    return rows


def read_csv_interactions(path: str | Path, delimiter: str = ",") -> list[Interaction]:
    """Read a user's own data: a CSV with a header naming ``user``, ``item``, ``timestamp``.

    Ids may be any non-empty strings (they are remapped); timestamps must be numbers or
    ISO dates. Other columns are ignored.
    """
    path = _check_exists(path)
    rows: list[Interaction] = []
    with _open_text(path) as f:
        reader = csv.reader(f, delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            raise DataFormatError(f"{path}: empty file")
        names = [h.strip().lower() for h in header]
        missing = {"user", "item", "timestamp"} - set(names)
        if missing:
            raise DataFormatError(f"{path}:1: header {header} lacks column(s) {sorted(missing)}")
        iu, ii, it = names.index("user"), names.index("item"), names.index("timestamp")
        for line_no, fields in enumerate(reader, 2):
            if not fields or all(not x.strip() for x in fields):
                continue
            if len(fields) < len(names):
                raise DataFormatError(f"{path}:{line_no}: expected {len(names)} fields, got {fields}")
            user, item, ts = fields[iu].strip(), fields[ii].strip(), fields[it].strip()
            if not user or not item:
                raise DataFormatError(f"{path}:{line_no}: empty user or item id")
            rows.append(Interaction(user, item, _parse_time(ts, path, line_no)))
    if not rows:
        raise DataFormatError(f"{path}: no interactions (header only)")
    return rows


def read_tsv_interactions(path: str | Path) -> list[Interaction]:
    """Tab-separated version of :func:`read_csv_interactions` (same header, same rules)."""
    return read_csv_interactions(path, delimiter="\t")


def read_dat_interactions(path: str | Path) -> list[Interaction]:
    """Read MovieLens-1M style ``ratings.dat``: ``user::item::rating::timestamp``, no header.

    Users and items must be integer ids; the rating is ignored, as in :func:`read_interactions`.
    """
    path = _check_exists(path)
    rows: list[Interaction] = []
    with _open_text(path) as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            fields = [x.strip() for x in line.split("::")]
            if len(fields) != 4:
                raise DataFormatError(
                    f"{path}:{line_no}: expected 'user::item::rating::timestamp', got {line.strip()!r}"
                )
            user = _integer_token(fields[0], path, line_no, "user")
            item = _integer_token(fields[1], path, line_no, "item")
            rows.append(Interaction(user, item, _parse_time(fields[3], path, line_no)))
    if not rows:
        raise DataFormatError(f"{path}: no interactions (empty file)")
    return rows


def _parse_time(token: str, path: Path, line_no: int) -> float:
    """Seconds since the epoch: a number as is, an ISO date converted to UTC (naive = UTC)."""
    try:
        seconds = float(token)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):  # 'nan' would sort anywhere and defeat the duplicate check
            raise DataFormatError(f"{path}:{line_no}: timestamp {token!r} is not a finite number")
        return seconds
    try:
        iso = token[:-1] + "+00:00" if token[-1:] in ("Z", "z") else token
        when = _dt.datetime.fromisoformat(iso)
        if when.tzinfo is None:
            when = when.replace(tzinfo=_dt.timezone.utc)
        return when.timestamp()  # an aware datetime: the offset is applied, not discarded
    except ValueError:
        raise DataFormatError(f"{path}:{line_no}: timestamp {token!r} is neither a number nor an ISO date") from None


def read_sequences(path: str | Path) -> dict[str, list[str]]:
    """Read ICLRec-style text: one user per line, ``user item_1 ... item_n`` in time order."""
    path = _check_exists(path)
    sequences: dict[str, list[str]] = {}
    with _open_text(path) as f:
        for line_no, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            user = _integer_token(fields[0], path, line_no, "user")
            if len(fields) < 2:
                raise DataFormatError(f"{path}:{line_no}: user {user} has no items")
            if user in sequences:
                raise DataFormatError(f"{path}:{line_no}: user {user} appears twice")
            sequences[user] = [_integer_token(x, path, line_no, "item") for x in fields[1:]]
    if not sequences:
        raise DataFormatError(f"{path}: no users (empty file)")
    return sequences


def read_steam_reviews(path: str | Path) -> list[Interaction]:
    """Read the raw UCSD Steam reviews (``steam_reviews.json.gz``).

    Each line is a Python dict literal (single quotes, ``True``/``False``), so it is parsed
    with ``ast.literal_eval``, which evaluates literals only. Interactions are
    ``(username, product_id, date)``; the date (``YYYY-MM-DD``) is the timestamp.
    """
    path = _check_exists(path)
    rows: list[Interaction] = []
    with _open_text(path) as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = ast.literal_eval(line)
            except (ValueError, SyntaxError):
                raise DataFormatError(f"{path}:{line_no}: not a Steam review record: {line[:80]!r}") from None
            if not isinstance(record, dict) or not {"username", "product_id", "date"} <= record.keys():
                raise DataFormatError(f"{path}:{line_no}: record lacks username, product_id or date")
            rows.append(Interaction(str(record["username"]), str(record["product_id"]),
                                    _parse_time(str(record["date"]), path, line_no)))
    if not rows:
        raise DataFormatError(f"{path}: no reviews (empty file)")
    return rows


class _NoGlobalsUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global: only dicts, lists, tuples, str, numbers load."""

    def __init__(self, file, path: Path):
        super().__init__(file)
        self._path = path

    def find_class(self, module: str, name: str):
        raise DataFormatError(
            f"{self._path}: refusing to unpickle {module}.{name}: a split pickle must hold only "
            "plain dicts, lists and ints (it may be malicious or of another kind)"
        )


def read_split_pickle(path: str | Path) -> dict:
    """Read the authors' ``dataset.pkl`` safely and check its layout.

    Returns ``{"train": {u: [items]}, "val": {u: [item]}, "test": {u: [item]}, "smap": {...}}``
    plus ``"umap"`` when present.
    """
    path = _check_exists(path)
    with open(path, "rb") as f:
        try:
            obj = _NoGlobalsUnpickler(f, path).load()
        except DataFormatError:
            raise
        except Exception as e:  # truncated or not a pickle at all
            raise DataFormatError(f"{path}: not a readable split pickle ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict) or not {"train", "val", "test"} <= obj.keys():
        raise DataFormatError(f"{path}: expected a dict with keys train, val, test")
    for part in ("train", "val", "test"):
        if not isinstance(obj[part], dict):
            raise DataFormatError(f"{path}: {part!r} is not a dict of user -> items")
    return obj
