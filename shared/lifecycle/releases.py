"""Human and operational release actions: approve, reject, rollback, and giving up on poisoned work.

Each is idempotent: approving the champion, rejecting a rejected version or rolling back to where
the champion already is answers "nothing changed" instead of changing something twice.
"""
from __future__ import annotations

import logging
from typing import Any

from shared import names, paths, registry, runs
from shared.errors import BadRequest, Conflict, IllegalTransition, NotFound
from shared.lifecycle.records import AliasAction, ModelVersion, RunStatus, VersionStatus, advance_version
from shared.lifecycle.stages import Context
from shared.messages import RetrainRequest, parse_message
from shared.registry import AliasOutcome

log = logging.getLogger("mlops.releases")
V = VersionStatus


def approve(ctx: Context, model: str, version: int, *, by: str) -> AliasOutcome:
    """Promote a version waiting for approval; approving the champion again changes nothing.

    Raises IllegalTransition (not pending approval), Conflict (being rejected right now), NotFound.
    """
    storage = ctx.storage
    already = _already_champion(ctx, model, version)
    if already is not None:
        return already
    # Mark the approval on the version first (under its ETag): a concurrent reject then fails
    # instead of rejecting a version that is about to become the champion.
    try:
        record = registry.update_version(storage, model, version, lambda r: _mark_approval(r, by, ctx))
    except IllegalTransition:
        already = _already_champion(ctx, model, version)  # a parallel approval finished meanwhile
        if already is None:
            raise
        return already
    return registry.promote(storage, ctx.clock, model, version, action=AliasAction.APPROVE, by=by,
                            reason=f"approved by {by}", run_id=record.run_id)


def _already_champion(ctx: Context, model: str, version: int) -> AliasOutcome | None:
    aliases, _ = registry.get_aliases(ctx.storage, model)
    if aliases.champion != version:
        return None
    registry.sync_statuses(ctx.storage, ctx.clock, model, full=not aliases.synced)
    return AliasOutcome(aliases, False, f"version {version} is already the champion; nothing changed")


def _mark_approval(record: ModelVersion, by: str, ctx: Context) -> ModelVersion:
    if record.status != V.PENDING_APPROVAL:
        raise IllegalTransition(f"model version (name={record.model}, version={record.version}) is {record.status}, "
                                "not pending_approval; only a pending version can be approved")
    if getattr(record, "approval", None):
        return record  # approved before; finish the promotion
    return record.model_copy(update={"approval": {"by": by, "at": ctx.clock.now().isoformat()}})


def reject(ctx: Context, model: str, version: int, *, by: str, reason: str) -> dict[str, Any]:
    """Reject a version waiting for approval; rejecting it again changes nothing.

    Raises IllegalTransition (not pending), Conflict (an approval of it is under way), NotFound.
    """
    why = f"rejected by {by}" + (f": {reason}" if reason else "")

    def change(record: ModelVersion) -> ModelVersion:
        if record.status == V.REJECTED:
            return record
        approval = getattr(record, "approval", None)
        if approval:
            raise Conflict(f"model version (name={model}, version={version}) is being approved by "
                           f"{approval['by']}; it cannot be rejected now")
        if record.status != V.PENDING_APPROVAL:
            raise IllegalTransition(f"model version (name={model}, version={version}) is {record.status}, "
                                    "not pending_approval; only a pending version can be rejected")
        return advance_version(record, V.REJECTED, at=ctx.clock.now(), by=by, reason=why)

    before = registry.get_version(ctx.storage, model, version)
    after = registry.move_version(ctx.storage, ctx.clock, model, version, change, detail=why)
    changed = before.status != V.REJECTED
    return {"model": model, "version": version, "status": str(after.status), "changed": changed,
            "message": why if changed else f"version {version} was already rejected; nothing changed"}


def rollback(ctx: Context, model: str, body: dict[str, Any], *, by: str) -> AliasOutcome:
    """Roll back per an API body {"from": N, "to": M} (both optional). Raises BadRequest, Conflict."""
    def version_field(name: str) -> int | None:
        value = body.get(name)
        return None if value is None else names.version(value, what=f"rollback field {name!r}")

    unknown = sorted(set(body) - {"from", "to", "reason", "by"})
    if unknown:
        raise BadRequest(f"rollback body has unknown field(s) {', '.join(unknown)}; expected from, to, reason")
    reason = names.text_field(body, "reason", default=f"rollback by {by}")
    return registry.rollback(ctx.storage, ctx.clock, model, expected_from=version_field("from"),
                             to=version_field("to"), by=by, reason=reason)


def give_up(ctx: Context, queue: str, body: bytes) -> str:
    """A stage message reached its poison queue: fail its run unless its work completed after all."""
    from shared.lifecycle.claims import ClaimState
    from shared.pipeline import STAGES

    if queue == paths.RETRAIN_QUEUE:
        return _give_up_retrain(ctx, body)
    stage = STAGES[queue]
    request = parse_message(stage.message, body)
    model, run_id = stage.run_of(request)
    key = stage.key(request)
    claim = ctx.claims.get(stage.name, key)
    if claim is not None and claim.state == ClaimState.COMPLETED:
        # done, but its hand-off to the next stage (written by the host after the function
        # returned) may be lost with the failed deliveries: on_done sends what is still owed
        stage.on_done(ctx, request, claim.result or {}, claim.run_id)
        return f"work (stage={stage.name}, key={key}) completed; run {run_id} is not failed"
    try:
        last = runs.last_error(runs.get(ctx.storage, model, run_id))
    except NotFound:
        last = None
    reason = (f"message moved to {paths.poison(queue)} after repeated failures; last error: "
              f"{last or 'none recorded (the invocation timed out or its worker died)'}")
    stage.on_fail(ctx, request, claim.notes if claim else {}, reason)
    ctx.claims.fail(stage.name, key, reason)
    return reason


def _give_up_retrain(ctx: Context, body: bytes) -> str:
    """A retrain request that kept failing: its run ends failed unless it already sent its training."""
    request = parse_message(RetrainRequest, body)
    if not request.run_id:
        return "retrain request without a run id: nothing to mark"
    try:
        run = runs.get(ctx.storage, request.model, request.run_id)
    except NotFound:
        run = None
    if run is not None and run.status == RunStatus.QUEUED:
        # its training request went into the output binding, which the failed deliveries may have lost
        from shared.pipeline import request_retrain

        request_retrain(ctx, request)
        return f"run {request.run_id} is queued; its training request was sent again"
    if run is not None and run.status != RunStatus.RECEIVED:
        return f"run {request.run_id} is {run.status}; the retrain went through, nothing to fail"
    last = runs.last_error(run) if run is not None else None
    reason = (f"message moved to {paths.poison(paths.RETRAIN_QUEUE)} after repeated failures; last error: "
              f"{last or 'none recorded'}")
    runs.record(ctx.storage, ctx.clock, request.model, request.run_id, RunStatus.FAILED, detail=reason, error=reason)
    return reason
