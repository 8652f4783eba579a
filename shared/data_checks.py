"""Load a dataset, check it against the spec (reporting every problem), and canonicalise it."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from shared.errors import DataRejected
from shared.spec import TrainingSpec
from shared.training import CATEGORICAL_MISSING, category_strings, prepared_frame

MAX_EXAMPLES = 5
MAX_EXAMPLE_CHARS = 100
_OPTIONAL = ("examples", "rows")  # left out of the wire shape when None


@dataclass(frozen=True)
class Problem:
    """One failed check on one column (column None for dataset-wide checks)."""

    column: str | None
    check: str
    message: str
    count: int | None = None
    examples: list[Any] | None = None
    rows: list[int] | None = None  # a few offending row numbers (1 = the first data row)


@dataclass(frozen=True)
class RejectionReport:
    """Every problem found in a dataset; to_dict() is the JSON wire shape."""

    rows: int
    columns: list[str]
    problems: list[Problem] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form: {"status": "rejected", "rows", "columns", "problems"}."""
        problems = [{k: v for k, v in asdict(p).items() if v is not None or k not in _OPTIONAL}
                    for p in self.problems]
        return {"status": "rejected", "rows": self.rows, "columns": self.columns,
                "problems": problems}


@dataclass(frozen=True)
class PreparedData:
    """Canonical dataset (features in spec order then target) and the source columns outside the spec.

    data_hash covers frame only, so adding or changing extra columns never changes it.
    """

    frame: pd.DataFrame
    parquet_bytes: bytes
    data_hash: str
    rows: int
    extra: pd.DataFrame  # source columns outside the spec, as loaded, row-aligned with frame
    extra_parquet_bytes: bytes | None  # None when there are no extra columns


class _Loaded(NamedTuple):
    """A parsed file and its column names as the file spells them (before pandas renames a repeat)."""

    frame: pd.DataFrame
    names: list[str]  # as in the file: the CSV header, the Parquet schema, the JSONL keys
    repeats: dict[str, int]  # name -> times it appears (in the header, or in one JSONL object), when > 1
    where: str  # where the repeats are, for the message


def load_dataset(data: bytes, filename: str) -> pd.DataFrame:
    """Read .csv, .parquet, .jsonl or .ndjson bytes into a DataFrame.

    Raises:
        DataRejected: unknown extension, unparseable content or repeated column names; details is
            a RejectionReport (checks parse, duplicate_columns).
    """
    lower = filename.lower()
    if not lower.endswith((".csv", ".parquet", ".jsonl", ".ndjson")):
        raise _load_error(filename, f"unknown extension for file={filename}; "
                                    "use .csv, .parquet, .jsonl or .ndjson")
    try:
        loaded = _parse(data, lower)
    except Exception as exc:
        raise _load_error(filename,
                          f"cannot parse file={filename}: {type(exc).__name__}: {exc}") from exc
    if loaded.repeats:
        raise _duplicate_columns(filename, loaded)
    return loaded.frame


def _parse(data: bytes, lower: str) -> _Loaded:
    if lower.endswith(".csv"):
        # pandas would rename a repeated header name ('a', 'a' -> 'a', 'a.1'): read the raw header.
        header = _csv_header(data)
        # pandas 3 parses floats exactly by default (float_precision is deprecated); the
        # CSV/Parquet/JSONL data_hash test would catch a lossy parser.
        frame = pd.read_csv(io.BytesIO(data))
        return _Loaded(frame, header or [str(c) for c in frame.columns], _repeats(header), "the header")
    if lower.endswith(".parquet"):
        return _read_parquet(data)
    return _read_jsonl(data)


def _csv_header(data: bytes) -> list[str]:
    """The header row as csv (the same dialect as pandas' defaults) reads it; [] if it cannot."""
    text = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", newline="")
    try:
        for row in csv.reader(text):
            if row:  # pandas skips blank lines before the header
                return row
    except (csv.Error, UnicodeDecodeError):
        pass  # pandas reports what is wrong with the file
    return []


def _repeats(names: list[str]) -> dict[str, int]:
    """Names given more than once; pandas names each empty header cell 'Unnamed: <i>' anyway."""
    return {name: count for name, count in Counter(names).items() if count > 1 and name != ""}


def _read_parquet(data: bytes) -> _Loaded:
    names = [str(name) for name in pq.read_schema(io.BytesIO(data)).names]
    repeats = _repeats(names)
    if repeats:  # pyarrow refuses to convert such a file; the rows are counted for the report
        rows = pq.read_metadata(io.BytesIO(data)).num_rows
        return _Loaded(pd.DataFrame(index=range(rows)), names, repeats, "the schema")
    return _Loaded(pd.read_parquet(io.BytesIO(data)), names, {}, "the schema")


def _read_jsonl(data: bytes) -> _Loaded:
    records = []
    repeats: dict[str, int] = {}
    first_line = 0
    for number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        if line.strip():
            record, keys = _json_object(line, number)
            for key, count in _repeats(list(keys.elements())).items():
                first_line = first_line or number
                repeats[key] = max(count, repeats.get(key, 0))
            records.append(record)
    frame = pd.DataFrame.from_records(records)
    return _Loaded(frame, [str(c) for c in frame.columns], repeats,
                   f"one JSON object (first at line {first_line})")


def _json_object(line: str, number: int) -> tuple[dict[str, Any], Counter[str]]:
    """One JSONL record and the count of each of its top-level keys (json.loads keeps the last of a repeat)."""
    counted: list[Counter[str]] = []

    def keep_counts(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        counted.append(Counter(key for key, _ in pairs))  # innermost object first, top level last
        return dict(pairs)

    # json.loads parses floats exactly (pandas' ujson path does not by default).
    record = json.loads(line, object_pairs_hook=keep_counts)
    if not isinstance(record, dict):
        raise ValueError(f"line {number} is not a JSON object")
    return record, counted[-1]


def _duplicate_columns(filename: str, loaded: _Loaded) -> DataRejected:
    problems = [
        Problem(name, "duplicate_columns",
                f"column={name} appears {count} times in {loaded.where} of file={filename}; "
                "give every column a distinct name", count)
        for name, count in loaded.repeats.items()
    ]
    report = RejectionReport(rows=len(loaded.frame), columns=loaded.names, problems=problems)
    return DataRejected(f"{problems[0].message}; fix the file and upload it again", details=report.to_dict())


def _load_error(filename: str, message: str) -> DataRejected:
    report = RejectionReport(rows=0, columns=[], problems=[Problem(None, "parse", message)])
    return DataRejected(f"{message}; fix the file and upload it again", details=report.to_dict())


def check_dataset(df: pd.DataFrame, spec: TrainingSpec) -> RejectionReport | None:
    """Run every data check; None if the dataset is acceptable."""
    rows = len(df)
    repeated = _repeated_columns(df)
    if repeated:  # df[name] would be a frame, not a column: no other check can run
        return RejectionReport(rows=rows, columns=[str(c) for c in df.columns], problems=repeated)
    problems: list[Problem] = []
    if rows < spec.data_checks.min_rows:
        problems.append(Problem(None, "min_rows", f"rows={rows} is below "
                                f"min_rows={spec.data_checks.min_rows}", rows))
    for column in [*spec.feature_names, spec.target]:
        if column not in df.columns:
            problems.append(Problem(column, "missing_column",
                                    f"column={column} is required by the spec but absent"))
    problems.extend(_feature_problems(df, spec))
    if spec.target in df.columns:
        problems.extend(_target_problems(df[spec.target], spec))
    if not problems:
        return None
    return RejectionReport(rows=rows, columns=[str(c) for c in df.columns], problems=problems)


def _repeated_columns(df: pd.DataFrame) -> list[Problem]:
    counts = Counter(str(c) for c in df.columns)
    return [Problem(name, "duplicate_columns", f"column={name} appears {count} times; "
                    "give every column a distinct name", count)
            for name, count in counts.items() if count > 1]


def _feature_problems(df: pd.DataFrame, spec: TrainingSpec) -> list[Problem]:
    problems: list[Problem] = []
    for feat in spec.features:
        if feat.name not in df.columns:
            continue
        problems.extend(_null_problems(df[feat.name], spec.null_limit(feat.name)))
        if feat.kind == "numeric":
            problems.extend(_numeric_problems(df[feat.name], feat.min, feat.max))
        else:
            problems.extend(_category_problems(df[feat.name], feat.allowed))
    return problems


def _null_problems(column: pd.Series, limit: float) -> list[Problem]:
    nulls = int(column.isna().sum())
    fraction = nulls / len(column) if len(column) else 0.0
    if fraction <= limit:
        return []
    return [Problem(str(column.name), "null_fraction",
                    f"null fraction {fraction:.3f} exceeds max {limit} (column={column.name})",
                    nulls)]


def _numeric_problems(column: pd.Series, low: float | None, high: float | None) -> list[Problem]:
    name = str(column.name)
    problems = []
    values = as_float64(column)
    bad = column.notna().to_numpy() & np.isnan(values)
    if bad.any():
        problems.append(Problem(name, "non_numeric", f"{int(bad.sum())} non-numeric value(s) "
                                f"in numeric column={name}", int(bad.sum()),
                                _examples(column[bad])))
    problems.extend(_non_finite_problems(column, np.isinf(values), "inf, -inf, or beyond float64's ±1.8e308"))
    finite = np.isfinite(values)
    out = np.zeros(len(values), dtype=bool)
    if low is not None:
        out |= finite & (values < low)
    if high is not None:
        out |= finite & (values > high)
    if out.any():
        problems.append(Problem(name, "out_of_range", f"{int(out.sum())} value(s) outside "
                                f"[{low}, {high}] in column={name}", int(out.sum()),
                                _examples(column[out]), _row_numbers(out)))
    return problems


def as_float64(column: pd.Series) -> np.ndarray:
    """Cells as float64: NaN when missing or not a number; inf, -inf for infinities and numbers beyond float64."""
    try:
        return pd.to_numeric(column, errors="coerce").to_numpy(np.float64, na_value=np.nan)
    except (OverflowError, TypeError, ValueError):  # e.g. a JSON integer of 400 digits: pandas raises
        return np.array([_cell_float(value) for value in column.tolist()], dtype=np.float64)


def _cell_float(value: Any) -> float:
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return math.nan


def _non_finite_problems(column: pd.Series, infinite: np.ndarray, what: str) -> list[Problem]:
    """inf, -inf, 1e999 or an integer beyond float64: no model can use them, and JSON cannot carry them."""
    if not infinite.any():
        return []
    name, count = str(column.name), int(infinite.sum())
    rows = _row_numbers(infinite)
    return [Problem(name, "non_finite", f"{count} infinite or overflowing value(s) ({what}) in column={name}, "
                    f"e.g. row(s) {rows}; fix or drop those rows", count, _examples(column[infinite]), rows)]


def _row_numbers(mask: np.ndarray) -> list[int]:
    """The first few row numbers where mask is true; 1 is the first data row (a CSV's line 2)."""
    return [int(i) + 1 for i in np.flatnonzero(mask)[:MAX_EXAMPLES]]


def _category_problems(column: pd.Series, allowed: list[str] | None) -> list[Problem]:
    name = str(column.name)
    values = pd.Series(category_strings(column), dtype=object)
    problems = []
    reserved = int((values == CATEGORICAL_MISSING).sum())
    if reserved:
        problems.append(Problem(name, "reserved_value", f"{reserved} value(s) equal the reserved "
                                f"missing marker {CATEGORICAL_MISSING!r}; leave them empty instead",
                                reserved))
    if allowed is not None:
        unknown = values.notna() & ~values.isin(allowed)
        if unknown.any():
            counts = values[unknown].value_counts()
            shown = f"{allowed[:10]}" if len(allowed) <= 10 else f"{allowed[:10]} (and {len(allowed) - 10} more)"
            problems.append(Problem(name, "unknown_category", f"{int(unknown.sum())} value(s) "
                                    f"not in allowed {shown} (column={name})",
                                    int(unknown.sum()), _examples(pd.Series(counts.index[:MAX_EXAMPLES]))))
    return problems


def _target_problems(column: pd.Series, spec: TrainingSpec) -> list[Problem]:
    name = spec.target
    problems = []
    nulls = int(column.isna().sum())
    if nulls:
        problems.append(Problem(name, "target_nulls", f"{nulls} row(s) have no target "
                                f"(column={name}); drop or label them", nulls))
    if spec.task == "regression":
        problems.extend(_numeric_problems(column, None, None))
        return problems
    # A label may be any text ('inf' too), but a numeric label that is infinite or beyond int64 is a
    # broken value: whole-number labels become int64 classes (training.target_array), and the cast
    # would turn -9223372036854776833 into another number.
    numbers = np.array([not isinstance(v, str) for v in column.tolist()], dtype=bool)
    with np.errstate(invalid="ignore"):
        overflowing = numbers & ~(np.abs(as_float64(column)) < 2.0**63)  # inf too; NaN is a missing label
    overflowing &= column.notna().to_numpy()
    problems.extend(_non_finite_problems(column, overflowing, "inf, -inf, or a number beyond int64's ±9.2e18"))
    classes = sorted({str(v) for v in column[column.notna()].tolist()})
    if len(classes) < 2:
        problems.append(Problem(name, "min_classes", f"classification target column={name} "
                                f"has {len(classes)} class(es); need at least 2",
                                len(classes), _examples(pd.Series(classes))))
    return problems


def _examples(values: pd.Series) -> list[Any]:
    """A few values for a report, JSON-safe: inf/NaN and long text as short strings."""
    return [_example(value.item() if isinstance(value, np.generic) else value)
            for value in values.head(MAX_EXAMPLES).tolist()]


def _example(value: Any) -> Any:
    if isinstance(value, bool) or (isinstance(value, float) and math.isfinite(value)):
        return value
    if isinstance(value, int) and abs(value) < 2**63:
        return value
    if isinstance(value, int) and value.bit_length() > 10_000:  # str() refuses over 4300 digits
        return f"<integer of about {int(value.bit_length() * math.log10(2))} digits>"
    text = value if isinstance(value, str) else str(value)  # inf, nan, huge ints, objects
    return text if len(text) <= MAX_EXAMPLE_CHARS else text[:MAX_EXAMPLE_CHARS - 3] + "..."


def prepare(df: pd.DataFrame, spec: TrainingSpec) -> PreparedData:
    """Canonical frame (features then target), Parquet bytes, data hash, and the source columns outside the spec.

    Raises:
        DataRejected: the dataset fails check_dataset; details is the RejectionReport.
    """
    report = check_dataset(df, spec)
    if report is not None:
        first = report.problems[0]
        raise DataRejected(
            f"dataset rejected for model={spec.name}: {len(report.problems)} problem(s), first: "
            f"{first.message}; see details and fix the data", details=report.to_dict())
    frame = prepared_frame(df, spec)
    table = _arrow_table(frame, spec)
    used = {*spec.feature_names, spec.target}
    extra = df[[c for c in df.columns if c not in used]].reset_index(drop=True)
    return PreparedData(frame=frame, parquet_bytes=_parquet_bytes(table), data_hash=_data_hash(table),
                        rows=len(frame), extra=extra, extra_parquet_bytes=_extra_parquet(extra))


def _extra_parquet(extra: pd.DataFrame) -> bytes | None:
    """Deterministic Parquet of the extra columns; a column Arrow cannot type is stored as strings."""
    if extra.columns.empty:
        return None
    arrays = []
    for name in extra.columns:
        try:
            arrays.append(pa.array(extra[name], from_pandas=True))
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            # e.g. JSONL with numbers and strings in one column: keep every value, as text.
            arrays.append(pa.array(category_strings(extra[name]), type=pa.string()))
    return _parquet_bytes(pa.Table.from_arrays(arrays, names=[str(c) for c in extra.columns]))


def _arrow_table(frame: pd.DataFrame, spec: TrainingSpec) -> pa.Table:
    arrays = []
    for name in frame.columns:
        values = frame[name]
        if values.dtype == object:
            arrays.append(pa.array(values.tolist(), type=pa.string()))
        else:
            arrays.append(pa.array(values.to_numpy(), from_pandas=True))
    return pa.Table.from_arrays(arrays, names=[str(c) for c in frame.columns])


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    # Fixed writer settings and no pandas metadata: same table -> same bytes.
    pq.write_table(table, sink, compression="zstd", use_dictionary=False,
                   write_statistics=False, store_schema=False)
    return sink.getvalue()


def _data_hash(table: pa.Table) -> str:
    """sha256 over column names, types and values; independent of source format and file name."""
    digest = hashlib.sha256()
    digest.update(json.dumps([[f.name, str(f.type)] for f in table.schema]).encode())
    for column in table.columns:
        if pa.types.is_string(column.type):
            digest.update(json.dumps(column.to_pylist(), ensure_ascii=False).encode("utf-8"))
        else:
            array = column.to_numpy(zero_copy_only=False)
            if array.dtype.kind == "f":
                array = np.where(np.isnan(array), np.nan, array + 0.0)  # one NaN; -0.0 -> 0.0
            little_endian = array.dtype.newbyteorder("<")
            digest.update(np.ascontiguousarray(array, dtype=little_endian).tobytes())
        digest.update(b"\x1e")
    return digest.hexdigest()
