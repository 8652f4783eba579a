"""Load a dataset, check it against the spec (reporting every problem), and canonicalise it."""
from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from shared.errors import DataRejected
from shared.spec import TrainingSpec
from shared.training import CATEGORICAL_MISSING, category_strings, prepared_frame

MAX_EXAMPLES = 5


@dataclass(frozen=True)
class Problem:
    """One failed check on one column (column None for dataset-wide checks)."""

    column: str | None
    check: str
    message: str
    count: int | None = None
    examples: list[Any] | None = None


@dataclass(frozen=True)
class RejectionReport:
    """Every problem found in a dataset; to_dict() is the JSON wire shape."""

    rows: int
    columns: list[str]
    problems: list[Problem] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form: {"status": "rejected", "rows", "columns", "problems"}."""
        problems = [{k: v for k, v in asdict(p).items() if v is not None or k != "examples"}
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


def load_dataset(data: bytes, filename: str) -> pd.DataFrame:
    """Read .csv, .parquet, .jsonl or .ndjson bytes into a DataFrame.

    Raises:
        DataRejected: unknown extension or unparseable content; details is a RejectionReport.
    """
    lower = filename.lower()
    try:
        if lower.endswith(".csv"):
            # pandas 3 parses floats exactly by default (float_precision is deprecated); the
            # CSV/Parquet/JSONL data_hash test would catch a lossy parser.
            return pd.read_csv(io.BytesIO(data))
        if lower.endswith(".parquet"):
            return pd.read_parquet(io.BytesIO(data))
        if lower.endswith((".jsonl", ".ndjson")):
            return _read_jsonl(data)
    except Exception as exc:
        raise _load_error(filename,
                          f"cannot parse file={filename}: {type(exc).__name__}: {exc}") from exc
    raise _load_error(filename, f"unknown extension for file={filename}; "
                                "use .csv, .parquet, .jsonl or .ndjson")


def _read_jsonl(data: bytes) -> pd.DataFrame:
    # json.loads parses floats exactly (pandas' ujson path does not by default).
    records = []
    for number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        if line.strip():
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError(f"line {number} is not a JSON object")
            records.append(record)
    return pd.DataFrame.from_records(records)


def _load_error(filename: str, message: str) -> DataRejected:
    report = RejectionReport(rows=0, columns=[], problems=[Problem(None, "parse", message)])
    return DataRejected(f"{message}; fix the file and upload it again", details=report.to_dict())


def check_dataset(df: pd.DataFrame, spec: TrainingSpec) -> RejectionReport | None:
    """Run every data check; None if the dataset is acceptable."""
    problems: list[Problem] = []
    rows = len(df)
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
    values = pd.to_numeric(column, errors="coerce")
    bad = column.notna() & values.isna()
    if bad.any():
        problems.append(Problem(name, "non_numeric", f"{int(bad.sum())} non-numeric value(s) "
                                f"in numeric column={name}", int(bad.sum()),
                                _examples(column[bad])))
    infinite = np.isinf(values.to_numpy(np.float64, na_value=np.nan))
    if infinite.any():
        problems.append(Problem(name, "non_finite", f"{int(infinite.sum())} infinite value(s) "
                                f"in column={name}", int(infinite.sum())))
    out = pd.Series(False, index=values.index)
    if low is not None:
        out |= values < low
    if high is not None:
        out |= values > high
    if out.any():
        problems.append(Problem(name, "out_of_range", f"{int(out.sum())} value(s) outside "
                                f"[{low}, {high}] in column={name}", int(out.sum()),
                                _examples(column[out])))
    return problems


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
            problems.append(Problem(name, "unknown_category", f"{int(unknown.sum())} value(s) "
                                    f"not in allowed {allowed} (column={name})",
                                    int(unknown.sum()), counts.index[:MAX_EXAMPLES].tolist()))
    return problems


def _target_problems(column: pd.Series, spec: TrainingSpec) -> list[Problem]:
    name = spec.target
    problems = []
    nulls = int(column.isna().sum())
    if nulls:
        problems.append(Problem(name, "target_nulls", f"{nulls} row(s) have no target "
                                f"(column={name}); drop or label them", nulls))
    present = column[column.notna()]
    if spec.task == "regression":
        problems.extend(p for p in _numeric_problems(present, None, None))
    else:
        classes = sorted({str(v) for v in present.tolist()})
        if len(classes) < 2:
            problems.append(Problem(name, "min_classes", f"classification target column={name} "
                                    f"has {len(classes)} class(es); need at least 2",
                                    len(classes), classes[:MAX_EXAMPLES]))
    return problems


def _examples(values: pd.Series) -> list[Any]:
    out = []
    for value in values.head(MAX_EXAMPLES).tolist():
        out.append(value.item() if isinstance(value, np.generic) else value)
    return [v if isinstance(v, int | float | str | bool) else str(v) for v in out]


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
