"""The registry's and pipeline's invariants, checked on any storage backend after any step."""
from __future__ import annotations

from collections import Counter
from typing import Any

from shared import paths, registry, runs
from shared.lifecycle.records import SETTLED_VERSION, RunStatus, VersionStatus, champion_stack
from shared.storage import Storage


def model_names(storage: Storage) -> list[str]:
    return [m.name for m in registry.list_models(storage)]


def check_always(storage: Storage, model: str) -> None:
    """What must hold at every moment, even between the writes of a crashed worker."""
    aliases, _ = registry.get_aliases(storage, model)
    assert aliases.champion is None or aliases.champion != aliases.previous, aliases
    stack = champion_stack(aliases.history)
    assert (aliases.champion, aliases.previous) == (stack[-1] if stack else None, stack[-2] if len(stack) > 1 else None)
    listed = registry.list_versions(storage, model) if registry.model_exists(storage, model) else []
    versions = {v.version: v for v in listed}
    # a failed version never produced a model: a later run may train the same (data, spec) again
    keys = Counter(v.key for v in versions.values() if v.key and v.status != VersionStatus.FAILED)
    assert all(n == 1 for n in keys.values()), f"two versions for one (data, spec): {keys}"
    for alias in (aliases.champion, aliases.previous):
        if alias is not None:
            assert alias in versions, f"alias points at missing version {alias}"
            assert registry.verify_artifact(storage, versions[alias]) is None


def check_settled(storage: Storage, model: str) -> None:
    """What must hold once the queues drained and the sweeper ran."""
    check_always(storage, model)
    aliases, _ = registry.get_aliases(storage, model)
    versions = registry.list_versions(storage, model) if registry.model_exists(storage, model) else []
    promoted = [v.version for v in versions if v.status == VersionStatus.PROMOTED]
    assert promoted == ([aliases.champion] if aliases.champion is not None else []), (promoted, aliases.champion)
    assert aliases.synced
    for v in versions:
        assert v.status in SETTLED_VERSION, f"version {v.version} left {v.status}"
        if v.run_id:
            run = runs.get(storage, model, v.run_id)
            assert run.status == v.status.value, f"run {v.run_id} is {run.status}, version {v.version} is {v.status}"
            if v.status not in (VersionStatus.REJECTED, VersionStatus.FAILED):
                assert run.error is None, run.error
    for run in runs.list_runs(storage, model):
        assert run.status not in (RunStatus.RECEIVED, RunStatus.QUEUED, RunStatus.PREPARED, RunStatus.TRAINED,
                                  RunStatus.EXPORTED), f"run {run.run_id} stuck at {run.status}"


def check_invariants(pipe: Any) -> None:
    """Every invariant, on a LocalPipeline that has gone idle."""
    for model in model_names(pipe.storage):
        check_settled(pipe.storage, model)
    assert not pipe.storage.blob_names(paths.MLOPS, paths.open_claims_prefix()), "open claims left"
    assert not pipe.storage.blob_names(paths.MLOPS, paths.run_follow_prefix()), "runs left behind their versions"
