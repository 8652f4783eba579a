"""Every container, queue and blob path of the app, built in one place."""
from __future__ import annotations

# Containers
DATASETS = "datasets"  # data drops: datasets/<model>/<file>; originals are never modified
REJECTED = "datasets-rejected"  # rejection reports next to the data: <model>/<file>.rejection.json
MLOPS = "mlops"  # registry, specs, prepared data, runs, idempotency markers
PREDICTIONS = "predictions"  # prediction logs: <model>/<date>/<time>-<id>.jsonl
FEEDBACK = "feedback"  # append-only label log: <model>/<date>/<time>-<id>.jsonl
SCORING_REQUESTS = "scoring-requests"  # files to batch-score: <model>/[v<N>/]<file>.csv|.parquet|.jsonl
SCORING_RESULTS = "scoring-results"  # <model>/<file>.predictions.csv|.parquet or <model>/<file>.rejection.json

# Queues (the trigger bindings name the same constants)
TRAIN_QUEUE = "train-requests"
EXPORT_QUEUE = "export-requests"
VALIDATE_QUEUE = "validate-requests"
RETRAIN_QUEUE = "retrain-requests"
MONITOR_QUEUE = "monitor-requests"
STAGE_QUEUES = (TRAIN_QUEUE, EXPORT_QUEUE, VALIDATE_QUEUE, RETRAIN_QUEUE)


def poison(queue: str) -> str:
    """The poison queue the Functions host moves a queue's failed messages to."""
    return f"{queue}-poison"


def rejection_report(dataset_path: str) -> str:
    """Report path in REJECTED for a dropped dataset path (<model>/<file>)."""
    return f"{dataset_path}.rejection.json"


def batch_result(request_path: str, extension: str) -> str:
    """Results in SCORING_RESULTS of a file dropped at SCORING_REQUESTS/<request_path> (<model>/<file>)."""
    return f"{request_path}.predictions.{extension}"


def batch_rejection(request_path: str) -> str:
    """Rejection report in SCORING_RESULTS of a file dropped at SCORING_REQUESTS/<request_path>."""
    return f"{request_path}.rejection.json"


def batch_marker(request_path: str, etag: str) -> str:
    """Idempotency marker (in MLOPS) of one version (ETag) of a file dropped for batch scoring."""
    return f"batch-scoring/{request_path}/{etag.strip(chr(34))}.json"


def spec_current(model: str) -> str:
    return f"specs/{model}/current.json"


def spec_version(model: str, spec_hash: str) -> str:
    return f"specs/{model}/versions/{spec_hash}.json"


def prepared_data(model: str, data_hash: str) -> str:
    return f"prepared/{model}/{data_hash}/data.parquet"


def prepared_profile(model: str, data_hash: str) -> str:
    return f"prepared/{model}/{data_hash}/profile.json"


def prepared_extra(model: str, data_hash: str) -> str:
    """Source columns the spec does not use, row-aligned: lets a champion with other features be scored."""
    return f"prepared/{model}/{data_hash}/extra.parquet"


def drop_pointer(blob_path: str) -> str:
    """The run of the latest version of a dropped file (<model>/<file>)."""
    return f"drops/{blob_path}.json"


def current_data(model: str) -> str:
    """Pointer to the latest accepted dataset of a model (what a retrain uses)."""
    return f"models/{model}/current-data.json"


def model_record(model: str) -> str:
    return f"models/{model}/model.json"


def models_prefix() -> str:
    return "models/"


def versions_prefix(model: str) -> str:
    return f"models/{model}/versions/"


def version_record(model: str, version: int) -> str:
    return f"models/{model}/versions/{version:06d}.json"


def artifact(model: str, version: int, name: str) -> str:
    return f"models/{model}/artifacts/{version:06d}/{name}"


def aliases(model: str) -> str:
    """champion and previous live in one blob so a promotion flips both atomically."""
    return f"models/{model}/aliases.json"


def run_record(model: str, run_id: str) -> str:
    return f"runs/{model}/{run_id}.json"


def runs_prefix(model: str) -> str:
    return f"runs/{model}/"


def page_index(model: str, part: str) -> str:
    """The model pages' index of one listing (part: versions, runs): derived from the records, rebuilt when stale."""
    return f"page-index/{model}/{part}.json"


def idempotency_marker(stage: str, key: str) -> str:
    return f"idempotency/{stage}/{key}.json"


def open_claim(stage: str, key: str) -> str:
    """Pointer to an in-progress claim; the sweeper lists these instead of every claim ever made."""
    return f"claims-open/{stage}/{key}.json"


def open_claims_prefix() -> str:
    return "claims-open/"


def run_follow(model: str, version: int) -> str:
    """Marks a version whose run has not yet followed its latest status (the sweeper finishes it)."""
    return f"runs-to-follow/{model}/{version:06d}.json"


def run_follow_prefix() -> str:
    return "runs-to-follow/"


def delivery_marker(provider: str, delivery_id: str) -> str:
    return f"deliveries/{provider}/{delivery_id}.json"


def feedback_shard(model: str, shard: str) -> str:
    """Current label per prediction id, for the ids whose sha256 starts with `shard` (2 hex digits)."""
    return f"feedback-index/{model}/{shard}.json"


def feedback_prefix(model: str) -> str:
    return f"feedback-index/{model}/"


def monitoring_report(model: str, window_end: str, version: int, hours: float) -> str:
    """Named so that name order is time order: <window end>-v<version>-<hours>h."""
    return f"monitoring/{model}/{window_end}-v{version:06d}-{hours:g}h.json"


def monitoring_prefix(model: str) -> str:
    return f"monitoring/{model}/"


def monitoring_failure(model: str, window_end: str) -> str:
    """Why the latest attempt at a window failed (kept apart from the reports, which list_reports reads)."""
    return f"monitoring-failures/{model}/{window_end}.json"
