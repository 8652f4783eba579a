"""Real traffic replay: score the champion's recently logged requests with a challenger before it is promoted.

The newest rows the champion version logged (shared.prediction_log's JSON Lines or a batch file's segments,
shared.prediction_segments, read as the same line dicts; newest blob first, newest row first, within
lookback_days of now) are rebuilt as JSON `dataframe_records` bodies from their logged inputs and go
through the scoring endpoint's own parser (scoring.parse_request, with the challenger's signature) and
scoring.predict, so a row fails here exactly when the endpoint would refuse it once the challenger is live.
A logged missing category (spec.CATEGORICAL_MISSING) is sent as null, as a client sends it.

What the parser refuses, and so what counts as breaking: a column the challenger needs that the log lacks
(an added input, unless optional: its values are then missing), a logged column the challenger does not
know (a removed input: unknown columns are a 400, not ignored), a value of the wrong type for the
challenger's input (a category in a now numeric input).
A category the challenger was not trained on, or its spec no longer allows, is NOT refused by the parser:
the exported encoder ignores unknown categories, so such rows are answered and show up only in
changed_predictions / output_shift.

Rows are sent in batches of BATCH_ROWS (rows with the same logged columns only, so a batch cannot hide a
missing column behind another row's value); a batch the parser refuses is replayed row by row to find
the failing rows.
"""
from __future__ import annotations

import hashlib
import logging
import math
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import numpy as np
import orjson

from shared.errors import NotFound, PipelineError
from shared.monitoring.window import log_blob_names
from shared.paths import PREDICTIONS
from shared.prediction_log import is_columnar
from shared.scoring import LoadedModel, load_model, parse_request, predict
from shared.spec import CATEGORICAL_MISSING
from shared.storage import Storage

log = logging.getLogger(__name__)

BATCH_ROWS = 256
MAX_BREAKING_EXAMPLES = 5
LOOKBACK_DAYS = 7  # how far back validation looks for the champion's logged requests
# Two regression predictions closer than this (relative, plus a tiny absolute floor) are the same prediction:
# the log carries the champion's float32 output as JSON, which reads back exactly, so only real changes count.
_REL_TOLERANCE = 1e-6
_ABS_TOLERANCE = 1e-9

ReplayStatus = Literal["ok", "no_traffic"]


@dataclass(frozen=True)
class LoggedRow:
    """One logged prediction of the champion: its id, inputs as logged, and the champion's outputs."""

    prediction_id: str
    inputs: Mapping[str, Any]
    prediction: Any
    probabilities: Mapping[str, Any] | None


@dataclass(frozen=True)
class Answer:
    """The challenger's answer for one row: its prediction and (classifiers) class -> probability."""

    prediction: Any
    probabilities: Mapping[str, Any] | None


@dataclass(frozen=True)
class BreakingRow:
    """A row the champion answered and the challenger cannot: the parser's or the model's message."""

    prediction_id: str
    error: str


@dataclass(frozen=True)
class ReplayReport:
    """What replaying logged traffic against a challenger found.

    changed_predictions: share of answered rows whose prediction differs from the champion's logged one
    (label for classifiers; beyond a 1e-6 relative tolerance for regressors). output_shift: classifiers, mean
    total-variation distance between the two probability vectors, which for a binary model is the mean
    absolute change of the positive-class probability; regressors, mean absolute change divided by the
    std of the champion's predictions on the replayed rows. Both are None when there is nothing to
    compare (no traffic, every row failed, no logged outputs) and output_shift also when that std is 0.
    """

    model: str
    champion_version: int
    challenger_version: int
    rows: int
    failed: int
    breaking: tuple[BreakingRow, ...]
    changed_predictions: float | None
    output_shift: float | None
    status: ReplayStatus

    def to_json(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "failed": self.failed,
            "breaking": [{"prediction_id": b.prediction_id, "error": b.error} for b in self.breaking],
            "changed_predictions": self.changed_predictions,
            "output_shift": self.output_shift,
            "status": self.status,
        }


def replay(
    storage: Storage,
    model: str,
    champion_version: int,
    challenger_onnx: bytes,
    *,
    challenger_version: int,
    limit: int = 1000,
    now: datetime | None = None,
    lookback_days: int = LOOKBACK_DAYS,
) -> ReplayReport:
    """Replay up to `limit` of the champion version's newest logged rows against the challenger's ONNX.

    Raises ValueError for a naive `now`, limit < 1 or lookback_days < 1; ModelArtifactError when the
    challenger's ONNX or signature cannot be loaded.
    """
    now = now if now is not None else datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("now must be a timezone-aware datetime (the log is in UTC)")
    if limit < 1 or lookback_days < 1:
        raise ValueError(f"limit and lookback_days must be at least 1 (limit={limit}, lookback_days={lookback_days})")
    challenger = load_model(challenger_onnx, hashlib.sha256(challenger_onnx).hexdigest(), model, challenger_version)
    rows = recent_rows(storage, model, champion_version, limit, now, lookback_days)
    answered: list[tuple[LoggedRow, Answer]] = []
    failures: list[BreakingRow] = []
    for batch in _batches(rows):
        for row, outcome in replay_rows(challenger, batch):
            if isinstance(outcome, Answer):
                answered.append((row, outcome))
            else:
                failures.append(BreakingRow(row.prediction_id, outcome))
    report = ReplayReport(
        model=model, champion_version=champion_version, challenger_version=challenger_version,
        rows=len(rows), failed=len(failures), breaking=_examples(failures),
        changed_predictions=changed_share(challenger.signature.task, answered),
        output_shift=output_shift(challenger.signature.task, answered),
        status="ok" if rows else "no_traffic",
    )
    log.info("replay (name=%s, champion=%d, challenger=%d): rows=%d failed=%d changed=%s shift=%s",
             model, champion_version, challenger_version, report.rows, report.failed,
             report.changed_predictions, report.output_shift)
    return report


# ---------------------------------------------------------------------------------------------
# Reading the log, newest first


def recent_rows(
    storage: Storage, model: str, version: int, limit: int, now: datetime, lookback_days: int
) -> list[LoggedRow]:
    """Up to `limit` rows of `version`, newest blob first and newest line first, from blobs flushed in the lookback."""
    rows: list[LoggedRow] = []
    # Blobs are named for their flush time; one flushed after `now` holds rows scored after it.
    paths = log_blob_names(storage, model, now - timedelta(days=lookback_days), now, timedelta(0))
    for path in reversed(paths):
        for row in _rows_of(storage, path, version, limit - len(rows)):
            rows.append(row)
            if len(rows) >= limit:
                return rows
    return rows


def _rows_of(storage: Storage, path: str, version: int, wanted: int) -> Iterator[LoggedRow]:
    """The blob's rows of `version`, last line first (at least the last `wanted` of them); unreadable lines are
    skipped (as the drift window does)."""
    try:
        data = storage.read(PREDICTIONS, path).data
    except NotFound:  # removed by retention between listing and reading
        return
    if is_columnar(path):
        yield from _segment_rows(storage, path, data, version, wanted)
        return
    for line in reversed(data.splitlines()):
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(doc, dict) and doc.get("version") == version and isinstance(doc.get("inputs"), dict):
            yield _logged_row(doc)


def _segment_rows(storage: Storage, path: str, data: bytes, version: int, wanted: int) -> Iterator[LoggedRow]:
    """A segment's (or a scored file's) rows of `version`, last row first, each as its JSON line reads; rows are
    made only as they are asked for (a replay wants the newest few hundred rows; a segment may hold tens of
    thousands, a file millions: only the batches that hold its last `wanted` rows are kept as they are read)."""
    from shared import prediction_segments  # pyarrow: loaded by the first replay that meets a segment

    try:
        batches = _last_batches(prediction_segments.log_batches(storage, path, data), version, wanted)
    except ValueError as exc:  # not a segment, or damaged: skipped as an unparsable JSON line is
        log.warning("prediction log blob (container=%s, path=%s): skipped, unreadable: %s", PREDICTIONS, path, exc)
        return
    for batch in reversed(batches):
        for stop in range(batch.num_rows, 0, -BATCH_ROWS):
            part = batch.slice(max(0, stop - BATCH_ROWS), min(BATCH_ROWS, stop))
            for doc in reversed(prediction_segments.batch_rows(part)):
                if isinstance(doc.get("inputs"), dict):
                    yield _logged_row(doc)


def _last_batches(batches: Iterator[Any], version: int, wanted: int) -> deque[Any]:
    """The batches' rows of `version`, as the fewest last batches that hold `wanted` of them (or all there are)."""
    kept: deque[Any] = deque()
    rows = 0
    for batch in batches:
        kept.append(batch.filter(_version_mask(batch, version)))
        rows += kept[-1].num_rows
        while len(kept) > 1 and rows - kept[0].num_rows >= wanted:  # the later batches hold `wanted` already
            rows -= kept.popleft().num_rows
    return kept


def _version_mask(batch: Any, version: int) -> Any:
    import pyarrow.compute as pc

    return pc.fill_null(pc.equal(batch.column("version"), version), False)


def _logged_row(doc: dict[str, Any]) -> LoggedRow:
    outputs = doc.get("outputs")
    outputs = outputs if isinstance(outputs, dict) else {}
    probabilities = outputs.get("probabilities")
    prediction_id = doc.get("prediction_id")
    return LoggedRow(
        prediction_id=prediction_id if isinstance(prediction_id, str) else f"{doc.get('request_id')}-?",
        inputs=doc["inputs"],
        prediction=outputs.get("predictions"),
        probabilities=probabilities if isinstance(probabilities, dict) else None,
    )


# ---------------------------------------------------------------------------------------------
# Replaying through the endpoint's parser


def _batches(rows: Sequence[LoggedRow]) -> Iterator[list[LoggedRow]]:
    """Rows in batches of BATCH_ROWS, each batch holding rows with the same logged columns only."""
    groups: dict[tuple[str, ...], list[LoggedRow]] = {}
    for row in rows:
        groups.setdefault(tuple(sorted(row.inputs)), []).append(row)
    for group in groups.values():
        for start in range(0, len(group), BATCH_ROWS):
            yield group[start:start + BATCH_ROWS]


def replay_rows(model: LoadedModel, rows: Sequence[LoggedRow]) -> list[tuple[LoggedRow, Answer | str]]:
    """Each row with the challenger's Answer or the error message that refused it."""
    outcome = _score(model, rows)
    if not isinstance(outcome, str):
        return list(zip(rows, outcome, strict=True))
    if len(rows) == 1:
        return [(rows[0], outcome)]
    return [(row, _single(model, row)) for row in rows]  # find which rows the batch error came from


def _single(model: LoadedModel, row: LoggedRow) -> Answer | str:
    outcome = _score(model, [row])
    return outcome if isinstance(outcome, str) else outcome[0]


def _score(model: LoadedModel, rows: Sequence[LoggedRow]) -> list[Answer] | str:
    """The challenger's answers for rows sent as one request, or the message of the error that refused it."""
    body = orjson.dumps({"dataframe_records": [request_record(row.inputs) for row in rows]})
    try:
        # the size limit is the client's concern: these rows came in requests the champion accepted
        inputs = parse_request(body, "application/json", model.signature, max_bytes=len(body))
    except PipelineError as err:
        return err.message
    try:
        result = predict(model, inputs)
    except Exception as exc:  # onnxruntime raises several unrelated types; the endpoint would answer 500
        return f"challenger model (name={model.name}, version={model.version}) failed to score the row: {exc}"
    probabilities = result.get("probabilities") or [None] * len(rows)
    return [Answer(p, q) for p, q in zip(result["predictions"], probabilities, strict=True)]


def request_record(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """A logged row's inputs as a client sends them: the logged missing-category marker becomes null."""
    return {name: None if value == CATEGORICAL_MISSING else value for name, value in inputs.items()}


def _examples(failures: Sequence[BreakingRow]) -> tuple[BreakingRow, ...]:
    """Up to MAX_BREAKING_EXAMPLES failures, one per distinct message first, then the next ones in order."""
    first: dict[str, BreakingRow] = {}
    for failure in failures:
        first.setdefault(failure.error, failure)
    distinct = list(first.values())
    rest = [f for f in failures if f not in distinct]
    return tuple((distinct + rest)[:MAX_BREAKING_EXAMPLES])


# ---------------------------------------------------------------------------------------------
# Comparing with the champion


def changed_share(task: str, answered: Sequence[tuple[LoggedRow, Answer]]) -> float | None:
    """Share of answered rows (with a logged champion prediction) whose prediction changed; None if none."""
    pairs = [(row.prediction, answer.prediction) for row, answer in answered if row.prediction is not None]
    if not pairs:
        return None
    if task == "classification":
        changed = sum(_label(old) != _label(new) for old, new in pairs)
    else:
        changed = sum(not _same_number(old, new) for old, new in pairs)
    return changed / len(pairs)


def output_shift(task: str, answered: Sequence[tuple[LoggedRow, Answer]]) -> float | None:
    """Classifiers: mean total-variation distance of probabilities; regressors: mean |change| / champion std."""
    if task == "classification":
        distances = [_distance(row.probabilities, answer.probabilities) for row, answer in answered]
        kept = [d for d in distances if d is not None]
        return float(np.mean(kept)) if kept else None
    pairs = [(_number(row.prediction), _number(answer.prediction)) for row, answer in answered]
    values = np.array([p for p in pairs if not (math.isnan(p[0]) or math.isnan(p[1]))], dtype=np.float64)
    if len(values) == 0:
        return None
    std = float(np.std(values[:, 0]))
    change = float(np.mean(np.abs(values[:, 1] - values[:, 0])))
    if std > 0:
        return change / std
    return 0.0 if change == 0 else None


def _distance(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> float | None:
    """Half the L1 distance between two class -> probability maps (a class absent from one counts as 0)."""
    if not old or not new:
        return None
    classes = {str(c) for c in old} | {str(c) for c in new}
    old_p = {str(c): _number(p) for c, p in old.items()}
    new_p = {str(c): _number(p) for c, p in new.items()}
    total = sum(abs(old_p.get(c, 0.0) - new_p.get(c, 0.0)) for c in classes)
    return None if math.isnan(total) else total / 2


def _label(value: Any) -> str:
    """A class label spelled one way whatever JSON made of it: 1, 1.0 and '1' are the same label."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    return float(value)


def _same_number(old: Any, new: Any) -> bool:
    a, b = _number(old), _number(new)
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=_REL_TOLERANCE, abs_tol=_ABS_TOLERANCE)
