"""Ground-truth labels that arrive after the prediction, joined to it by prediction id.

Two records, both in storage:
- the current label per id, in 256 shard blobs `mlops/feedback-index/<model>/<xx>.json` (xx = the
  first two hex digits of sha256(id)) updated under ETags: {id: {"label", "at", "history", "joined"}};
  a repeated label is recorded once, a different one replaces it and both stay in `history`;
- an append-only log of every accepted or replaced label, `feedback/<model>/<date>/<time>-<id>.jsonl`
  (audit; nothing rewrites it).
A label is `unmatched` until a monitoring run finds its prediction in the log and marks it `joined`
(the prediction may not even be flushed when the label arrives).
"""
from __future__ import annotations

import csv
import hashlib
import io
import math
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from shared import names, paths
from shared.clock import Clock
from shared.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from shared.storage import Storage

MAX_LABELS = 10_000
MAX_BODY_BYTES = 5 * 1024 * 1024
SHARDS = 256
Label = str | int | float | bool


@dataclass(frozen=True)
class FeedbackLabel:
    prediction_id: str
    label: Label


@dataclass(frozen=True)
class FeedbackOutcome:
    """What one feedback request did (the 202 body): new labels, repeats, changed labels, and how many of the
    request's ids have no prediction joined yet."""

    accepted: int
    duplicates: int
    replaced: int
    unmatched: int

    def to_json(self) -> dict[str, int]:
        return {"accepted": self.accepted, "duplicates": self.duplicates, "replaced": self.replaced,
                "unmatched": self.unmatched}


# -- parsing --------------------------------------------------------------------------------------


def parse_feedback(body: bytes, content_type: str | None) -> list[FeedbackLabel]:
    """Labels from a JSON `{"labels": [{"prediction_id", "label"}]}` or a `prediction_id,label` CSV body.

    Raises BadRequest, PayloadTooLarge, UnsupportedMediaType.
    """
    if len(body) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"feedback body is {len(body)} bytes; the limit is {MAX_BODY_BYTES}")
    media = (content_type or "application/json").split(";", 1)[0].strip().lower()
    if media == "application/json":
        rows = _json_rows(body)
    elif media in ("text/csv", "application/csv"):
        rows = _csv_rows(body)
    else:
        raise UnsupportedMediaType(f"content type ({media}) is not supported; send application/json or text/csv")
    if not rows:
        raise BadRequest("feedback has no labels")
    if len(rows) > MAX_LABELS:
        raise BadRequest(f"feedback has {len(rows)} labels; send at most {MAX_LABELS} per request")
    return [_label(i, row) for i, row in enumerate(rows)]


def _json_rows(body: bytes) -> list[Any]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"feedback body is not valid JSON: {exc}") from None
    labels = doc.get("labels") if isinstance(doc, dict) else None
    if not isinstance(labels, list):
        raise BadRequest('feedback must be {"labels": [{"prediction_id": "...", "label": <value>}, ...]}')
    return labels


def _csv_rows(body: bytes) -> list[Any]:
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"feedback CSV is not valid UTF-8: {exc}") from None
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        if reader.fieldnames is None or {"prediction_id", "label"} - set(reader.fieldnames):
            raise BadRequest("feedback CSV needs a header row with the columns prediction_id,label")
        return [{"prediction_id": r.get("prediction_id"), "label": _csv_value(r.get("label"))} for r in reader]
    except csv.Error as exc:
        raise BadRequest(f"feedback CSV is malformed: {exc}") from None


def _csv_value(text: str | None) -> Label | None:
    """A CSV label as the number it spells (so 1 joins a model's class 1), else the text."""
    if text is None or text == "":
        return None
    try:
        return int(text) if text.lstrip("-").isascii() and text.lstrip("-").isdigit() else float(text)
    except ValueError:
        return text


def _label(index: int, row: Any) -> FeedbackLabel:
    if not isinstance(row, dict):
        raise BadRequest(f"label {index}: expected an object with prediction_id and label")
    pid, value = row.get("prediction_id"), row.get("label")
    pid = names.prediction_id(pid if isinstance(pid, str) else None, what=f"label {index}: prediction_id")
    if value is None or not isinstance(value, (str, int, float, bool)):
        raise BadRequest(f"label {index} ({pid}): label must be a number, a string or a boolean")
    if isinstance(value, float) and not math.isfinite(value):
        raise BadRequest(f"label {index} ({pid}): label must be finite")
    if isinstance(value, str) and len(value) > 200:
        raise BadRequest(f"label {index} ({pid}): a label has at most 200 characters")
    return FeedbackLabel(pid, value)


# -- recording ------------------------------------------------------------------------------------


def shard_of(prediction_id: str) -> str:
    return hashlib.sha256(prediction_id.encode("utf-8")).hexdigest()[:2]


def record(storage: Storage, clock: Clock, model: str, labels: Iterable[FeedbackLabel]) -> FeedbackOutcome:
    """Record labels; replaying the same request changes nothing and counts them as duplicates."""
    latest: dict[str, Label] = {}
    for item in labels:  # within one request the last label for an id wins
        latest[item.prediction_id] = item.label
    by_shard: dict[str, dict[str, Label]] = defaultdict(dict)
    for pid, value in latest.items():
        by_shard[shard_of(pid)][pid] = value
    now = clock.now().isoformat()
    counts = {"accepted": 0, "duplicates": 0, "replaced": 0, "unmatched": 0}
    events: list[dict[str, Any]] = []
    for shard, wanted in sorted(by_shard.items()):
        _apply_shard(storage, model, shard, wanted, now, counts, events)
    if events:
        stamp = clock.now()
        path = f"{model}/{stamp:%Y-%m-%d}/{stamp:%H%M%S}-{uuid.uuid4().hex}.jsonl"
        storage.write(paths.FEEDBACK, path, b"\n".join(orjson.dumps(e) for e in events) + b"\n",
                      content_type="application/x-ndjson")
    return FeedbackOutcome(**counts)


def _apply_shard(storage: Storage, model: str, shard: str, wanted: Mapping[str, Label], now: str,
                 counts: dict[str, int], events: list[dict[str, Any]]) -> None:
    outcome: dict[str, str] = {}

    def change(current: dict[str, Any] | None) -> dict[str, Any]:
        outcome.clear()
        entries = dict(current or {})
        for pid, value in wanted.items():
            entry = entries.get(pid)
            if entry is not None and _same(entry["label"], value):
                outcome[pid] = "duplicate-joined" if entry.get("joined") else "duplicate"
                continue
            history = [*(entry or {}).get("history", []), {"label": value, "at": now}]
            entries[pid] = {"label": value, "at": now, "history": history, "joined": None}
            outcome[pid] = "replaced" if entry is not None else "accepted"
        return entries if any(o in ("accepted", "replaced") for o in outcome.values()) else (current or {})

    storage.update_json(paths.MLOPS, paths.feedback_shard(model, shard), change)
    for pid, what in outcome.items():
        if what in ("accepted", "replaced"):
            counts[what] += 1
            events.append({"prediction_id": pid, "label": wanted[pid], "received_at": now, "change": what})
        else:
            counts["duplicates"] += 1
        if what != "duplicate-joined":
            counts["unmatched"] += 1


def _same(a: Any, b: Any) -> bool:
    """The same JSON value: 1 and 1.0 or true and 1 are different labels (a class is not a score)."""
    return orjson.dumps(a) == orjson.dumps(b)


# -- reading (monitoring) -------------------------------------------------------------------------


@dataclass(frozen=True)
class KnownLabel:
    label: Label
    at: datetime  # when the current label arrived (label lag = at - prediction time)


def current_labels(storage: Storage, model: str) -> dict[str, KnownLabel]:
    """Every prediction id's current label."""
    labels: dict[str, KnownLabel] = {}
    for blob in storage.list(paths.MLOPS, paths.feedback_prefix(model)):
        entries, _ = storage.read_json(paths.MLOPS, blob.name)
        for pid, entry in entries.items():
            labels[pid] = KnownLabel(entry["label"], datetime.fromisoformat(entry["at"]))
    return labels


def mark_joined(storage: Storage, model: str, joined: Iterable[str], by: str) -> None:
    """Record that monitoring found these ids' predictions (they stop counting as unmatched)."""
    by_shard: dict[str, set[str]] = defaultdict(set)
    for pid in joined:
        by_shard[shard_of(pid)].add(pid)
    for shard, ids in sorted(by_shard.items()):
        def change(current: dict[str, Any] | None, ids: set[str] = ids) -> dict[str, Any]:
            entries = dict(current or {})
            fresh = [pid for pid in ids if pid in entries and not entries[pid].get("joined")]
            for pid in fresh:
                entries[pid] = {**entries[pid], "joined": by}
            return entries if fresh else (current or {})

        storage.update_json(paths.MLOPS, paths.feedback_shard(model, shard), change)
