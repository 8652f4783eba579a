"""Helpers for end-to-end tests: example specs under unique names, drops, polling runs, lifecycle invariants."""
from __future__ import annotations

import io
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import pandas as pd
import yaml
from azure.storage.queue import QueueServiceClient

from devhost.azurite import ROOT
from shared import paths, registry, runs
from shared.errors import NotFound, Unavailable
from shared.lifecycle.claims import ClaimRecord, ClaimState, migrate_claim
from shared.lifecycle.records import Aliases, ModelVersion, RunRecord, RunStatus, VersionStatus
from shared.storage import AzureStorage
from tests.fixtures.devhost_support import wait_for

SPECS = ROOT / "examples" / "specs"
R = RunStatus
V = VersionStatus
# Where a run stops on its own; superseded and rolled_back come later, from other runs or people.
TERMINAL = frozenset({R.PROMOTED, R.REJECTED, R.PENDING_APPROVAL, R.FAILED, R.DUPLICATE, R.WAITING_FOR_DATA})
# Statuses the pipeline is still working on: none may be left once everything is idle.
IN_FLIGHT = frozenset({V.TRAINING, V.TRAINED, V.EXPORTED})
STAGES = ("train", "export", "validate")
T = TypeVar("T")


def example_spec(example: str, name: str, **changes: Any) -> dict[str, Any]:
    """An example spec as a dict, renamed, with top-level fields replaced."""
    spec = yaml.safe_load((SPECS / f"{example}.yaml").read_text())
    spec.update(name=name, **changes)
    return spec


def upload(storage: AzureStorage, spec: dict[str, Any]) -> str:
    """Validate and store a spec dict; returns its hash."""
    return registry.upload_spec(storage, yaml.safe_dump(spec).encode(), "spec.yaml")[1]


def drop(storage: AzureStorage, model: str, name: str, frame: pd.DataFrame) -> str:
    """Drop a dataset as CSV into datasets/<model>/<name>; returns the blob path inside the container."""
    buf = io.StringIO()
    frame.to_csv(buf, index=False)
    storage.write(paths.DATASETS, f"{model}/{name}", buf.getvalue().encode())
    return f"{model}/{name}"


def promoted_diabetes(connection_string: str, prefix: str) -> str:
    """A fresh diabetes model (named <prefix>-<random>) with data and a promoted champion."""
    from examples.datasets import diabetes
    from shared.settings import Settings

    store = AzureStorage.from_settings(Settings.from_env({"AzureWebJobsStorage": connection_string}))
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    upload(store, example_spec("diabetes", name))
    drop(store, name, "data.csv", diabetes())
    run = wait_for_run(store, name, "data.csv")
    assert run.status == RunStatus.PROMOTED, run
    return name


def source_of(run: RunRecord) -> str:
    """The dropped blob a run came from ("" for retrains without one)."""
    return str(getattr(run, "source_blob", None) or "")


def run_for(storage: AzureStorage, model: str, predicate: Callable[[RunRecord], bool]) -> RunRecord | None:
    """The newest run of a model matching predicate, if any."""
    for run in runs.list_runs(storage, model):
        if predicate(run):
            return run
    return None


def wait_for_run(storage: AzureStorage, model: str, source_name: str | None = None, *, timeout: float = 120.0,
                 statuses: frozenset[RunStatus] = TERMINAL) -> RunRecord:
    """Poll until a run of `model` (from the dropped file `source_name`, if given) reaches one of statuses."""

    def check() -> RunRecord | None:
        try:
            return run_for(storage, model, lambda r: r.status in statuses and (
                source_name is None or source_of(r).endswith(f"/{source_name}")))
        except NotFound:
            return None

    return wait_for(check, f"a run of {model} ({source_name}) reaching {sorted(statuses)}", timeout=timeout)


def wait_for_run_id(storage: AzureStorage, model: str, run_id: str, *, timeout: float = 120.0,
                    statuses: frozenset[RunStatus] = TERMINAL) -> RunRecord:
    """Poll one run until it reaches one of statuses."""

    def check() -> RunRecord | None:
        try:
            run = runs.get(storage, model, run_id)
        except NotFound:
            return None
        return run if run.status in statuses else None

    return wait_for(check, f"run {run_id} of {model} reaching {sorted(statuses)}", timeout=timeout)


def champion(storage: AzureStorage, model: str) -> int | None:
    """The champion version of a model, or None."""
    try:
        return registry.resolve_alias(storage, model)[0]
    except (NotFound, Unavailable):
        return None


def in_parallel(calls: list[Callable[[], T]], timeout: float = 120.0) -> list[T]:
    """Run the calls on their own threads, released together by a barrier; their results in order."""
    barrier = threading.Barrier(len(calls))

    def released(call: Callable[[], T]) -> T:
        barrier.wait(timeout=timeout)
        return call()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(released, call) for call in calls]
        return [f.result(timeout=timeout) for f in futures]


# -- lifecycle invariants ------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """What the registry and run history say about one model at one moment."""

    versions: list[ModelVersion]
    aliases: Aliases
    runs: list[RunRecord]

    def to_json(self) -> dict[str, Any]:
        return {"versions": [v.to_json() for v in self.versions], "aliases": self.aliases.to_json(),
                "runs": sorted((r.to_json() for r in self.runs), key=lambda r: r["run_id"])}

    def describe(self) -> str:
        """One line for the drill figures: versions with status, aliases, history length, runs."""
        versions = ", ".join(f"v{v.version}={v.status}" for v in self.versions) or "none"
        statuses = sorted(str(r.status) for r in self.runs)
        return (f"versions={len(self.versions)} [{versions}] champion={self.aliases.champion} "
                f"previous={self.aliases.previous} history={len(self.aliases.history)} runs={statuses}")


def snapshot(storage: AzureStorage, model: str) -> Snapshot:
    return Snapshot(registry.list_versions(storage, model), registry.get_aliases(storage, model)[0],
                    runs.list_runs(storage, model))


SYNC_SECONDS = 2.0


def assert_invariants(storage: AzureStorage, model: str) -> Snapshot:
    """Check the lifecycle invariants of an idle model and return what was checked.

    champion != previous; one version per (data hash, spec hash); at most one version promoted and
    it is the champion; the run that made a version ends with the version's status; no version
    left half-way (training, trained, exported); the alias flip is synced.

    A flip's last write (synced) lands just after the statuses it moved, which is what the callers waited
    for: the flip gets SYNC_SECONDS to finish (well under the sweeper's 10 s, which would hide a flip the promoting
    worker never finished) before it counts as unsynced.
    """
    snap = snapshot(storage, model)
    deadline = time.monotonic() + SYNC_SECONDS
    while not snap.aliases.synced and time.monotonic() < deadline:
        time.sleep(0.05)  # polling under a deadline, not synchronisation
        snap = snapshot(storage, model)
    aliases, versions = snap.aliases, snap.versions
    where = snap.describe()
    assert aliases.champion is None or aliases.champion != aliases.previous, where
    assert aliases.synced, f"alias flip not synced within {SYNC_SECONDS} s: {where}"
    keys = [v.key for v in versions]
    assert all(keys) and len(set(keys)) == len(keys), f"two versions for one (data, spec): {keys}"
    promoted = [v.version for v in versions if v.status == V.PROMOTED]
    assert promoted == ([aliases.champion] if aliases.champion is not None else []), where
    assert not [v.version for v in versions if v.status in IN_FLIGHT], f"versions left half-way: {where}"
    by_number = {v.version: v for v in versions}
    run_ids = {r.run_id for r in snap.runs}
    for version in versions:
        assert version.run_id in run_ids, f"version {version.version} names run {version.run_id}, which is missing"
    for run in snap.runs:
        assert run.status in TERMINAL | {R.SUPERSEDED, R.ROLLED_BACK}, f"run {run.run_id} is {run.status}: {where}"
        made = by_number.get(run.version) if run.version is not None else None
        if made is not None and made.run_id == run.run_id:
            assert str(run.status) == str(made.status), (
                f"run {run.run_id} is {run.status} but its version {made.version} is {made.status}")
    return snap


# -- queues and claims ---------------------------------------------------------------------------


def queue_depths(connection_string: str, queues: tuple[str, ...] = paths.STAGE_QUEUES) -> dict[str, int]:
    """Messages in each queue, including invisible ones being worked on (peek cannot see those)."""
    service = QueueServiceClient.from_connection_string(connection_string)
    depths = {}
    for name in queues:
        try:
            depths[name] = service.get_queue_client(name).get_queue_properties().approximate_message_count
        except Exception:  # noqa: BLE001 - a queue never created holds nothing
            depths[name] = 0
    return depths


def claims_of(storage: AzureStorage, model: str, stage: str) -> list[ClaimRecord]:
    """Every claim of one stage for a model (claim keys start with the model name)."""
    folder = paths.idempotency_marker(stage, "").removesuffix(".json")  # idempotency/<stage>/
    found = []
    for blob in storage.list(paths.MLOPS, f"{folder}{model}-"):
        key = blob.name[len(folder):].removesuffix(".json")
        found.append(migrate_claim(storage.read_json(paths.MLOPS, blob.name)[0], stage, key))
    return found


def open_claims(storage: AzureStorage, model: str) -> list[ClaimRecord]:
    """Claims of the model's stages that are still in progress."""
    return [c for stage in STAGES for c in claims_of(storage, model, stage) if c.state == ClaimState.IN_PROGRESS]


def wait_until_idle(storage: AzureStorage, connection_string: str, model: str, timeout: float = 90.0) -> None:
    """Poll until every stage queue is empty (visible or not) and no claim of the model is in progress."""

    def idle() -> bool:
        return not any(queue_depths(connection_string).values()) and not open_claims(storage, model)

    try:
        wait_for(idle, f"the stage queues to drain and the claims of {model} to settle", timeout=timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: queues={queue_depths(connection_string)}, "
                             f"open claims={[(c.stage, c.key) for c in open_claims(storage, model)]}") from None
