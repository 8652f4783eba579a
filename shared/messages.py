"""Typed, read-only views of the queue messages passed between stages."""
from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from shared import names
from shared.errors import BadRequest, PipelineError

M = TypeVar("M", bound="Message")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _checked(rule: Any) -> Any:
    """A names.* rule as a pydantic validator (pydantic reports ValueError, ours raise InvalidParameter)."""
    def check(value: Any) -> Any:
        try:
            return rule(value)
        except PipelineError as exc:
            raise ValueError(exc.message) from None
    return AfterValidator(check)


def _sha256(value: str) -> str:
    if not _SHA256.fullmatch(value):
        raise ValueError(f"{value[:80]!r} is not a sha256 hex digest")
    return value


# Every field that later names a blob is checked here: a message may come from anyone with queue access.
ModelName = Annotated[str, _checked(names.model_name)]
RunId = Annotated[str, _checked(names.run_id)]
Version = Annotated[int, Field(ge=1, le=names.MAX_VERSION)]
Sha256 = Annotated[str, AfterValidator(_sha256)]


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

    run_id: RunId
    model: ModelName
    data_hash: Sha256
    spec_hash: Sha256
    source_blob: str | None = None
    git: GitOrigin | None = None
    reason: str = "data drop"
    received_at: datetime | None = None  # when the drop arrived: orders current-data pointer moves
    deferrals: int = 0  # times this delivery waited for a duplicate that was still running
    monitoring: dict[str, Any] | None = None  # a retrain monitoring started: its report, window, production rows


class StageRequest(Message):
    """Continue a candidate version through export or validation."""

    run_id: RunId
    model: ModelName
    version: Version
    deferrals: int = 0


class RetrainRequest(Message):
    """Retrain `model` on its current data with its current spec."""

    model: ModelName
    reason: str = "retrain requested"
    run_id: RunId | None = None
    git: GitOrigin | None = None
    spec_hash: Sha256 | None = None  # a push pins the spec at its commit; None = the current spec


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


class MonitorRequest(Message):
    """Compute the monitoring report of `model`'s champion for the window ending at window_end."""

    model: ModelName
    window_end: datetime
    trigger: str = "timer"
