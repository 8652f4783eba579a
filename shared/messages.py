"""Typed, read-only views of the queue messages passed between stages."""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from shared.errors import BadRequest

M = TypeVar("M", bound="Message")


class Message(BaseModel):
    """Base of every stage message: frozen, unknown fields rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def to_payload(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class GitOrigin(Message):
    """Where a spec came from when a push triggered the run."""

    provider: str
    repository: str
    ref: str
    commit: str
    delivery_id: str | None = None
    pusher: str | None = None
    path: str | None = None


class TrainRequest(Message):
    """Train `model` on prepared data `data_hash` with spec `spec_hash`."""

    run_id: str
    model: str
    data_hash: str
    spec_hash: str
    source_blob: str | None = None
    git: GitOrigin | None = None
    reason: str = "data drop"
    received_at: datetime | None = None  # when the drop arrived: orders current-data pointer moves
    deferrals: int = 0  # times this delivery waited for a duplicate that was still running


class StageRequest(Message):
    """Continue a candidate version through export or validation."""

    run_id: str
    model: str
    version: int
    deferrals: int = 0


class RetrainRequest(Message):
    """Retrain `model` on its current data with its current spec."""

    model: str
    reason: str = "retrain requested"
    run_id: str | None = None
    git: GitOrigin | None = None
    spec_hash: str | None = None  # a push pins the spec at its commit; None = the current spec


def parse_message(kind: type[M], body: bytes | str) -> M:
    """Decode a queue message body into its typed view. Raises BadRequest naming the fields."""
    try:
        data = json.loads(body)
        return kind.model_validate(data)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"{kind.__name__} message is not JSON: {exc}") from exc
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise BadRequest(f"{kind.__name__} message is invalid: {problems}") from exc
