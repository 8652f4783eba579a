"""Finish what crashes left behind: re-send the work of expired leases, sync unsynced alias flips,
bring runs along whose version moved just before a crash.

Runs on a timer. A claim whose lease expired belongs to a dead worker (kill -9, a host restart,
a storage outage during its release): its message may be invisible for the host's 10-minute
lease, so the sweeper sends a copy at once; the stages are idempotent, so when the original
reappears it finds the work done. A re-sent claim is not re-sent again for `resend_after`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from shared import registry
from shared.lifecycle.claims import ClaimState
from shared.lifecycle.stages import Context

log = logging.getLogger("mlops.sweeper")
RESEND_AFTER_SECONDS = 120.0
# A released claim's message is retried by the host within its visibilityTimeout (2 s), and each
# retry takes the claim again: one still released this long later lost its retry. A stranded one
# (released only once storage came back) lost it for sure: its message is hidden for 10 minutes.
RELEASED_GRACE_SECONDS = 45.0
STRANDED_GRACE_SECONDS = 2.0


@dataclass
class SweepReport:
    """What one sweep did."""

    resent: list[str] = field(default_factory=list)  # "<stage>/<key>"
    synced: list[str] = field(default_factory=list)  # models whose alias flip was finished
    followed: list[str] = field(default_factory=list)  # "<model>/<version>" whose run caught up

    def to_json(self) -> dict[str, list[str]]:
        return {"resent": self.resent, "synced": self.synced, "followed": self.followed}


def sweep(ctx: Context, *, resend_after: float = RESEND_AFTER_SECONDS) -> SweepReport:
    """One pass over open claims and alias records."""
    report = SweepReport()
    _resend_expired(ctx, report, resend_after)
    for model in registry.list_models(ctx.storage):
        if not model.aliases.synced and registry.sync_statuses(ctx.storage, ctx.clock, model.name, full=True):
            report.synced.append(model.name)
            log.warning("sweeper: finished the alias flip of model %s", model.name)
    report.followed = registry.follow_pending(ctx.storage, ctx.clock, older_than=ctx.lease_seconds)
    return report


def _resend_expired(ctx: Context, report: SweepReport, resend_after: float) -> None:
    now = ctx.clock.now()
    claims = ctx.claims
    for claim, etag in claims.open_claims():
        if claim.state == ClaimState.RELEASED:
            grace = STRANDED_GRACE_SECONDS if claim.stranded else RELEASED_GRACE_SECONDS
            if (now - (claim.released_at or now)).total_seconds() < grace:
                continue  # the host's own retry is about to take it
        elif claim.lease_until is not None and claim.lease_until > now:
            continue  # its owner is alive (it renews the lease)
        if claim.swept_at is not None and (now - claim.swept_at).total_seconds() < resend_after:
            continue  # re-sent recently; the copy may still be waiting in the queue
        # Mark first: a crash between the two leaves a claim re-sent later, never twice at once.
        if claim.queue and claim.payload and claims.mark_swept(claim, etag):
            ctx.storage.enqueue(claim.queue, claim.payload)
            report.resent.append(f"{claim.stage}/{claim.key}")
            log.warning("sweeper: %s/%s (run %s) %s; re-sent its message to %s", claim.stage, claim.key,
                        claim.run_id, "was released and not retried" if claim.state == ClaimState.RELEASED
                        else f"lease expired at {claim.lease_until}", claim.queue)
