"""The training pipeline's stages over storage: prepare -> train -> export -> validate -> promote.

prepare runs on the blob trigger (its run id is derived from the blob and its ETag); train,
export and validate are Stages run by lifecycle.stages.run_stage, which owns the claim, the
lease and the error policy. Each `work` is resumable: after a crash it finds what is already
done (the version noted on its claim, the version's status) and continues from there, then
sends the next stage's message before its claim completes, so nothing is left half-done.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any

from shared import names, paths, registry, runs
from shared.contract import Difference, ModelSignature, compare, prediction_range_of, signature_from, signature_of
from shared.errors import ArtifactCorrupt, DataRejected, ModelRejected, NotFound, PipelineError
from shared.lifecycle.claims import Held
from shared.lifecycle.records import (
    SETTLED_VERSION,
    AliasAction,
    Artifact,
    ModelVersion,
    RunRecord,
    RunStatus,
    VersionStatus,
)
from shared.lifecycle.stages import Context, Stage, note_attempt
from shared.messages import RetrainRequest, StageRequest, TrainRequest, parse_message
from shared.registry import ChampionMoved
from shared.validation import Decision, decide

if TYPE_CHECKING:
    from shared.data_checks import PreparedData
    from shared.replay import ReplayReport
    from shared.spec import TrainingSpec

log = logging.getLogger("mlops.pipeline")
V = VersionStatus
OUTCOME_STATUS = {"promote": V.PROMOTED, "reject": V.REJECTED, "pending_approval": V.PENDING_APPROVAL}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_artifact(ctx: Context, model: str, version: int, stem: str, suffix: str, data: bytes) -> Artifact:
    # Content-addressed names: a late writer (a worker whose lease was taken over) can never
    # overwrite the bytes another record's sha256 vouches for.
    digest = _sha256(data)
    path = paths.artifact(model, version, f"{stem}-{digest[:16]}.{suffix}")
    ctx.storage.write(paths.MLOPS, path, data)
    return Artifact(path=path, sha256=digest)


# -- 1. prepare ---------------------------------------------------------------------------------


def prepare_drop(ctx: Context, blob_path: str, data: bytes, etag: str) -> dict[str, Any]:
    """Validate a dropped dataset; reject it with a report or store it prepared and request training.

    `blob_path` is `<model>/<file>` inside the datasets container; the original is never touched.
    """
    model, _, name = blob_path.partition("/")
    run_id = runs.run_id_for("drop", blob_path, etag)
    if not (names.is_model_name(model) and names.is_blob_file_name(name)):
        return _reject_misplaced_drop(ctx, model, name, run_id, blob_path)
    _close_replaced_drop(ctx, model, blob_path, run_id)
    try:
        spec, digest = _pinned_spec(ctx, model, run_id, blob_path, etag)
        prepared = _checked(data, name, spec)
    except DataRejected as exc:
        details = exc.details if isinstance(exc.details, dict) else {"problems": [{"message": exc.message}]}
        return _reject_drop(ctx, model, run_id, blob_path, details)
    store_prepared(ctx, model, prepared, spec)
    # Recorded before the training request is sent: a run still "received" has sent nothing.
    run = runs.record(ctx.storage, ctx.clock, model, run_id, RunStatus.PREPARED, data_hash=prepared.data_hash,
                      spec_hash=digest, rows=prepared.rows)
    if run.status != RunStatus.PREPARED:
        return {"outcome": str(run.status), "run_id": run_id}  # closed meanwhile: a newer drop replaced it
    ctx.send(paths.TRAIN_QUEUE, _train_request(run).to_payload())
    return {"outcome": "prepared", "run_id": run_id, "data_hash": prepared.data_hash}


def _pinned_spec(ctx: Context, model: str, run_id: str, blob_path: str, etag: str) -> tuple[TrainingSpec, str]:
    """Record the run as received with the spec it trains on: the first delivery's, whatever was
    uploaded since (a redelivery after a spec upload trains the same). Raises DataRejected."""
    storage, source = ctx.storage, f"{paths.DATASETS}/{blob_path}"
    try:
        spec, digest = registry.current_spec(storage, model)
    except NotFound as exc:
        runs.record(storage, ctx.clock, model, run_id, RunStatus.RECEIVED, source_blob=source, source_etag=etag)
        raise DataRejected(exc.message, details={
            "status": "rejected", "rows": None, "columns": [],
            "problems": [{"column": None, "check": "spec", "message": exc.message, "count": None}]}) from exc
    run = runs.record(storage, ctx.clock, model, run_id, RunStatus.RECEIVED, source_blob=source, source_etag=etag,
                      spec_hash=digest)
    pinned = str(run.to_json().get("spec_hash") or digest)
    return (spec, digest) if pinned == digest else (registry.spec_at(storage, model, pinned), pinned)


def _checked(data: bytes, name: str, spec: TrainingSpec) -> PreparedData:
    """The dataset checked against the spec and prepared. Raises DataRejected with the report."""
    from shared.data_checks import check_dataset, load_dataset, prepare

    df = load_dataset(data, name)
    report = check_dataset(df, spec)
    if report is not None:
        raise DataRejected(f"dataset rejected for model={spec.name}", details=report.to_dict())
    return prepare(df, spec)


def store_prepared(ctx: Context, model: str, prepared: PreparedData, spec: TrainingSpec) -> None:
    """Store prepared data with its profile under its content hash (drops and monitoring retrains)."""
    from shared.profile import profile_dataset

    storage = ctx.storage
    if storage.exists(paths.MLOPS, paths.prepared_data(model, prepared.data_hash)):
        return  # content-addressed: prepared before, by this or another drop
    if prepared.extra_parquet_bytes is not None:
        storage.write(paths.MLOPS, paths.prepared_extra(model, prepared.data_hash), prepared.extra_parquet_bytes)
    storage.write_json(paths.MLOPS, paths.prepared_profile(model, prepared.data_hash),
                       profile_dataset(prepared.frame, spec))
    # the data blob last: its existence says the whole prepared set is there
    storage.write(paths.MLOPS, paths.prepared_data(model, prepared.data_hash), prepared.parquet_bytes)


def _train_request(run: RunRecord) -> TrainRequest:
    """The training request of a prepared drop's run (rebuilt the same from its record every time)."""
    facts = run.to_json()
    return TrainRequest(run_id=run.run_id, model=run.model, data_hash=facts["data_hash"],
                        spec_hash=facts["spec_hash"], source_blob=facts.get("source_blob"), received_at=run.created)


def _close_replaced_drop(ctx: Context, model: str, blob_path: str, run_id: str) -> None:
    """The earlier version of an overwritten file: a run that crashed before it was prepared ends
    here; one that was prepared gets its training request again (it may have died before sending it)."""
    pointer = paths.drop_pointer(blob_path)
    try:
        earlier = ctx.storage.read_json(paths.MLOPS, pointer)[0].get("run_id")
    except NotFound:
        earlier = None
    if earlier and earlier != run_id:
        try:
            run = runs.get(ctx.storage, model, earlier)
        except NotFound:
            run = None  # the earlier delivery died before recording its run
        if run is not None and run.status == RunStatus.RECEIVED:
            why = f"{paths.DATASETS}/{blob_path} was replaced before this version was prepared; see run {run_id}"
            runs.record(ctx.storage, ctx.clock, model, earlier, RunStatus.FAILED, detail=why, error=why)
        elif run is not None and run.status == RunStatus.PREPARED:
            # Sent now, not through the output binding: the pointer moves on below, so after a crash
            # nothing would remember that this earlier run still waits for its training request.
            ctx.storage.enqueue(paths.TRAIN_QUEUE, _train_request(run).to_payload())
    ctx.storage.write_json(paths.MLOPS, pointer, {"run_id": run_id, "at": ctx.clock.now().isoformat()})


def _reject_drop(ctx: Context, model: str, run_id: str, blob_path: str, report: dict[str, Any]) -> dict[str, Any]:
    report = {**report, "source_blob": f"{paths.DATASETS}/{blob_path}", "run_id": run_id,
              "at": ctx.clock.now().isoformat()}
    ctx.storage.write_json(paths.REJECTED, paths.rejection_report(blob_path), report)
    problems = report.get("problems") or []
    summary = "; ".join(str(p.get("message")) for p in problems[:5])
    runs.record(ctx.storage, ctx.clock, model, run_id, RunStatus.REJECTED, detail=f"data rejected: {summary}",
                error=f"data rejected: {summary}",
                rejection_report=f"{paths.REJECTED}/{paths.rejection_report(blob_path)}")
    log.warning("prepare: rejected %s/%s: %s", paths.DATASETS, blob_path, summary)
    return {"outcome": "rejected", "run_id": run_id, "problems": problems}


def _reject_misplaced_drop(ctx: Context, model: str, name: str, run_id: str, blob_path: str) -> dict[str, Any]:
    """A drop whose folder is no model name (or whose file name could climb folders): a report under
    names made safe, and no run (run history is kept per valid model name)."""
    safe_model = model if names.is_model_name(model) else names.safe_segment(model)
    safe_name = name if names.is_blob_file_name(name) else names.safe_segment(name)
    problem = (f"folder {model[:80]!r} is not a model name: drop data at datasets/<model>/<file> where <model> is "
               f"{names.MODEL_NAME_RULE}" if safe_model != model else
               f"file name {name[:80]!r} is not allowed: use a name without empty, '.' or '..' segments")
    report = {"status": "rejected", "rows": None, "columns": [], "run_id": run_id,
              "source_blob": f"{paths.DATASETS}/{blob_path}", "at": ctx.clock.now().isoformat(),
              "problems": [{"column": None, "check": "location", "message": problem, "count": None}]}
    report_path = paths.rejection_report(f"{safe_model}/{safe_name}")
    ctx.storage.write_json(paths.REJECTED, report_path, report)
    log.warning("prepare: rejected %s/%s: %s (report %s/%s)", paths.DATASETS, blob_path, problem, paths.REJECTED,
                report_path)
    return {"outcome": "rejected", "run_id": run_id, "problems": report["problems"], "report": report_path}


# -- retrain ------------------------------------------------------------------------------------


def retrain(ctx: Context, body: bytes, dequeue_count: int) -> dict[str, Any]:
    """One delivery of a retrain-requests message; a failed try is kept on the run, then re-raised."""
    request = parse_message(RetrainRequest, body)
    try:
        return request_retrain(ctx, request)
    except Exception as exc:
        if request.run_id:
            note_attempt(ctx, request.model, request.run_id, "retrain", dequeue_count, exc, transient=True)
        raise


def request_retrain(ctx: Context, request: RetrainRequest) -> dict[str, Any]:
    """Turn a retrain request into a training request on the model's current data and spec."""
    storage = ctx.storage
    run_id = request.run_id or runs.new_run_id()
    try:
        current, digest = _retrain_inputs(ctx, request, run_id)
    except NotFound as exc:
        why = f"cannot retrain model (name={request.model}): {exc.message}; drop a dataset first"
        runs.record(storage, ctx.clock, request.model, run_id, RunStatus.REJECTED, detail=why, error=why)
        return {"outcome": "rejected", "run_id": run_id, "reason": why}
    train_request = TrainRequest(
        run_id=run_id, model=request.model, data_hash=current["data_hash"], spec_hash=digest,
        source_blob=current.get("source_blob"), git=request.git, reason=request.reason,
    )
    runs.record(storage, ctx.clock, request.model, run_id, RunStatus.QUEUED,
                detail=f"{request.reason}: training on data {current['data_hash'][:12]}",
                source_blob=current.get("source_blob"), data_hash=current["data_hash"], spec_hash=digest)
    ctx.send(paths.TRAIN_QUEUE, train_request.to_payload())
    return {"outcome": "queued", "run_id": run_id}


def _retrain_inputs(ctx: Context, request: RetrainRequest, run_id: str) -> tuple[dict[str, Any], str]:
    """(current data, spec hash) of a retrain; a redelivery reuses what its first delivery chose.

    Raises NotFound.
    """
    try:
        run = runs.get(ctx.storage, request.model, run_id).to_json()
    except NotFound:
        run = {}
    if run.get("data_hash") and run.get("spec_hash"):  # pinned: the spec may have changed since
        return {"data_hash": run["data_hash"], "source_blob": run.get("source_blob")}, str(run["spec_hash"])
    current, _ = ctx.storage.read_json(paths.MLOPS, paths.current_data(request.model))
    return current, request.spec_hash or registry.current_spec(ctx.storage, request.model)[1]


# -- 2. train -----------------------------------------------------------------------------------


class TrainStage:
    """Fit once per (model, data hash, spec hash) and store the candidate as a new version."""

    name = "train"
    queue = paths.TRAIN_QUEUE
    message = TrainRequest

    def key(self, request: TrainRequest) -> str:
        return f"{request.model}-{request.data_hash[:20]}-{request.spec_hash[:20]}"

    def run_of(self, request: TrainRequest) -> tuple[str, str]:
        return request.model, request.run_id

    def work(self, ctx: Context, request: TrainRequest, held: Held) -> dict[str, Any]:
        record = self._noted_version(ctx, request, held)
        if record is None or record.status == V.TRAINING:
            record = self._fit(ctx, request, held, record)
        if record.status not in SETTLED_VERSION:
            self._move_current_data(ctx, request)
            self._hand_off(ctx, request, record)
        log.info("train: model=%s version=%s %s", request.model, record.version, record.status)
        return {"outcome": "trained", "version": record.version, "run_id": record.run_id}

    def _fit(self, ctx: Context, request: TrainRequest, held: Held, record: ModelVersion | None) -> ModelVersion:
        storage, ml, model = ctx.storage, ctx.learner(), request.model
        spec = registry.spec_at(storage, model, request.spec_hash)
        frame = ml.read_frame(storage.read(paths.MLOPS, paths.prepared_data(model, request.data_hash)).data)
        extra = None
        if storage.exists(paths.MLOPS, paths.prepared_extra(model, request.data_hash)):
            extra = ml.read_frame(storage.read(paths.MLOPS, paths.prepared_extra(model, request.data_hash)).data)
        result = ml.fit(frame, spec, extra)
        record = record or self._allocate(ctx, request, held)
        artifacts = {
            "pipeline": _write_artifact(ctx, model, record.version, "pipeline", "joblib",
                                        ml.pipeline_bytes(result.pipeline)),
            "holdout": _write_artifact(ctx, model, record.version, "holdout", "parquet",
                                       ml.frame_bytes(result.holdout)),
        }
        lineage = {
            "source_blob": request.source_blob, "data_hash": request.data_hash, "spec_hash": request.spec_hash,
            "git": request.git.to_payload() if request.git else None, "seed": spec.split.seed,
            "estimator": spec.estimator.type, "libraries": ml.library_versions(), "reason": request.reason,
            "train_rows": result.train_rows, "holdout_rows": result.holdout_rows,
            "monitoring": request.monitoring,  # a monitoring retrain: its report, window, production rows
        }
        return registry.transition(
            storage, ctx.clock, model, record.version, V.TRAINED, reason=f"fit in {result.fit_seconds:.2f}s",
            lineage=lineage, task=spec.task, classes=result.classes, fit_seconds=result.fit_seconds,
            metrics={"sklearn_holdout": result.metrics}, artifacts=artifacts, trained_at=ctx.clock.now())

    @staticmethod
    def _version_key(request: TrainRequest) -> str:
        return f"{request.data_hash}/{request.spec_hash}"

    def _noted_version(self, ctx: Context, request: TrainRequest, held: Held) -> ModelVersion | None:
        noted = held.claim.notes.get("version")
        if noted is None:
            return None
        try:
            record = registry.get_version(ctx.storage, request.model, int(noted))
        except NotFound:
            return None  # noted, then crashed before creating it: _allocate creates it
        usable = record.key == self._version_key(request) and record.status != V.FAILED
        return record if usable else None

    def _allocate(self, ctx: Context, request: TrainRequest, held: Held) -> ModelVersion:
        # Note the number on the claim BEFORE creating the version: after a crash the takeover
        # finds it and reuses it, so one (data, spec) never gets two versions.
        noted = held.claim.notes.get("version")
        listed = ctx.storage.list(paths.MLOPS, paths.versions_prefix(request.model))
        n = int(noted) if noted is not None else len(listed) + 1
        key = self._version_key(request)
        for _ in range(1000):
            ctx.claims.note(held, version=n)
            record = ModelVersion(model=request.model, version=n, status=V.TRAINING, created=ctx.clock.now(),
                                  status_at=ctx.clock.now(), run_id=request.run_id, key=key)
            if ctx.storage.create_json(paths.MLOPS, paths.version_record(request.model, n), record.to_json()):
                return record
            existing = registry.get_version(ctx.storage, request.model, n)
            if existing.key == key and existing.status != V.FAILED:
                return existing
            n += 1
        raise RuntimeError(f"could not allocate a version for model (name={request.model})")

    def _move_current_data(self, ctx: Context, request: TrainRequest) -> None:
        """Point retrains at this data, only after it trained and only if no newer drop already did."""
        if request.received_at is None:
            return  # a retrain: the pointer already names this data
        new: dict[str, Any] = {"data_hash": request.data_hash, "source_blob": request.source_blob,
               "received_at": request.received_at.isoformat(), "run_id": request.run_id,
               "at": ctx.clock.now().isoformat()}

        def change(current: dict[str, Any] | None) -> dict[str, Any]:
            if current is not None and str(current.get("received_at") or "") > new["received_at"]:
                return current  # a newer drop trained first: keep pointing at it
            return new

        ctx.storage.update_json(paths.MLOPS, paths.current_data(request.model), change)

    @staticmethod
    def _hand_off(ctx: Context, request: TrainRequest, record: ModelVersion) -> None:
        ctx.send(paths.EXPORT_QUEUE, StageRequest(
            run_id=record.run_id or request.run_id, model=request.model, version=record.version).to_payload())

    def on_done(self, ctx: Context, request: TrainRequest, result: dict[str, Any], by_run: str | None) -> None:
        if by_run == request.run_id or result.get("run_id") == request.run_id:
            # A redelivery of our own run's message: the output binding's export request may never
            # have been written (the host writes it after the function returned), so send it again
            # while the version still waits for export; export's claim makes a second copy harmless.
            version = result.get("version")
            if version is not None:
                record = registry.get_version(ctx.storage, request.model, int(version))
                if record.status not in SETTLED_VERSION:
                    self._hand_off(ctx, request, record)
            return
        same = f"same data (hash={request.data_hash[:12]}) and spec (hash={request.spec_hash[:12]})"
        if result.get("outcome") == "rejected":
            why = f"{same} were rejected by run {by_run}: {result.get('reason')}"
            runs.record(ctx.storage, ctx.clock, request.model, request.run_id, RunStatus.REJECTED, detail=why,
                        error=why)
            return
        version = result.get("version")
        detail = (f"{same} {'trained' if result.get('outcome') == 'trained' else 'being trained'} by run {by_run}"
                  + (f" as version {version}" if version else "") + "; nothing to do")
        runs.record(ctx.storage, ctx.clock, request.model, request.run_id, RunStatus.DUPLICATE, detail=detail,
                    version=version, duplicate_of=by_run)
        log.info("train: %s", detail)

    def on_reject(self, ctx: Context, request: TrainRequest, held: Held,
                  exc: DataRejected | ModelRejected) -> dict[str, Any]:
        report = {**(exc.details if isinstance(exc.details, dict) else {}), "status": "rejected", "stage": self.name,
                  "message": exc.message, "run_id": request.run_id, "source_blob": request.source_blob,
                  "data_hash": request.data_hash, "spec_hash": request.spec_hash, "at": ctx.clock.now().isoformat()}
        where = _store_report(ctx, request.model, request.run_id, request.source_blob, report)
        noted = self._noted_version(ctx, request, held)
        if noted is not None and noted.status not in SETTLED_VERSION:
            registry.transition(ctx.storage, ctx.clock, request.model, noted.version, V.REJECTED, reason=exc.message,
                                decision={"outcome": "reject", "reasons": [f"rejected: {exc.message}"]})
        runs.record(ctx.storage, ctx.clock, request.model, request.run_id, RunStatus.REJECTED,
                    detail=f"training rejected: {exc.message}", error=exc.message, rejection_report=where)
        log.warning("train: run %s rejected: %s", request.run_id, exc.message)
        return {"outcome": "rejected", "reason": exc.message, "run_id": request.run_id, "report": where}

    def on_fail(self, ctx: Context, request: TrainRequest, notes: dict[str, Any], reason: str) -> None:
        _fail(ctx, request.model, request.run_id, notes.get("version"), reason)


def _store_report(ctx: Context, model: str, run_id: str, source_blob: str | None, report: dict[str, Any]) -> str:
    """Write a rejection report next to the dropped file (or with the run); returns where."""
    prefix = f"{paths.DATASETS}/"
    if source_blob and source_blob.startswith(prefix):
        path = paths.rejection_report(source_blob[len(prefix):])
        ctx.storage.write_json(paths.REJECTED, path, report)
        return f"{paths.REJECTED}/{path}"
    path = paths.run_record(model, run_id).removesuffix(".json") + ".rejection.json"
    ctx.storage.write_json(paths.MLOPS, path, report)
    return f"{paths.MLOPS}/{path}"


def _fail(ctx: Context, model: str, run_id: str, version: int | None, reason: str) -> None:
    """Mark a run failed, and its version if the pipeline was still working on it."""
    if version is not None:
        try:
            record = registry.get_version(ctx.storage, model, int(version))
            if record.status not in SETTLED_VERSION:
                registry.transition(ctx.storage, ctx.clock, model, record.version, V.FAILED, reason=reason,
                                    decision={"outcome": "failed", "error": reason})
        except NotFound:
            pass
    try:
        runs.record(ctx.storage, ctx.clock, model, run_id, RunStatus.FAILED, detail=reason, error=reason)
    except Exception as exc:  # a settled run (e.g. promoted) cannot fail: the registry already says why
        log.error("run (model=%s, run_id=%s) not marked failed: %s", model, run_id, exc)


# -- 3. export and 4. validate ------------------------------------------------------------------


class _VersionStage:
    """Shared by export and validate: keyed by the version, the run is the version's."""

    name = ""
    queue = ""
    message = StageRequest

    def key(self, request: StageRequest) -> str:
        return f"{request.model}-{request.version:06d}"

    def run_of(self, request: StageRequest) -> tuple[str, str]:
        return request.model, request.run_id

    def on_done(self, ctx: Context, request: StageRequest, result: dict[str, Any], by_run: str | None) -> None:
        log.info("%s: model=%s version=%s already %s", self.name, request.model, request.version, result.get("outcome"))

    def on_reject(self, ctx: Context, request: StageRequest, held: Held,
                  exc: DataRejected | ModelRejected) -> dict[str, Any]:
        reasons = [f"rejected: {exc.message}"]
        record = registry.get_version(ctx.storage, request.model, request.version)
        if record.status not in SETTLED_VERSION:
            registry.transition(ctx.storage, ctx.clock, request.model, request.version, V.REJECTED, reason=exc.message,
                                decision={"outcome": "reject", "reasons": reasons, "stage": self.name})
        return {"outcome": "rejected", "reasons": reasons}

    def on_fail(self, ctx: Context, request: StageRequest, notes: dict[str, Any], reason: str) -> None:
        _fail(ctx, request.model, request.run_id, request.version, reason)


class ExportStage(_VersionStage):
    """Convert a trained candidate to ONNX and gate it on parity with the sklearn pipeline."""

    name = "export"
    queue = paths.EXPORT_QUEUE

    def work(self, ctx: Context, request: StageRequest, held: Held) -> dict[str, Any]:
        record = registry.get_version(ctx.storage, request.model, request.version)
        if record.status == V.TRAINED:
            record = self._export(ctx, record)
        if record.status == V.EXPORTED:
            self._hand_off(ctx, request)
        return {"outcome": str(record.status), "version": record.version}

    @staticmethod
    def _hand_off(ctx: Context, request: StageRequest) -> None:
        ctx.send(paths.VALIDATE_QUEUE, request.model_copy(update={"deferrals": 0}).to_payload())

    def on_done(self, ctx: Context, request: StageRequest, result: dict[str, Any], by_run: str | None) -> None:
        super().on_done(ctx, request, result, by_run)
        # the validate request leaves through the output binding after the function returns: a
        # redelivery sends it again while the version still waits for validation
        if registry.get_version(ctx.storage, request.model, request.version).status == V.EXPORTED:
            self._hand_off(ctx, request)

    def _export(self, ctx: Context, record: ModelVersion) -> ModelVersion:
        storage, ml, settings = ctx.storage, ctx.learner(), ctx.settings
        spec = registry.spec_at(storage, record.model, (record.lineage or {})["spec_hash"])
        pipeline = ml.load_pipeline(registry.read_artifact(storage, record, "pipeline"))
        holdout = ml.read_frame(registry.read_artifact(storage, record, "holdout"))
        onnx_bytes = ml.export(pipeline, spec, holdout)
        parity = ml.parity(pipeline, onnx_bytes, holdout, spec, settings)
        if not parity.passed:
            reasons = [f"rejected: ONNX parity gate failed: {r}" for r in parity.reasons]
            return registry.transition(storage, ctx.clock, record.model, record.version, V.REJECTED,
                                       reason="; ".join(reasons), parity=parity.to_dict(),
                                       decision={"outcome": "reject", "reasons": reasons})
        onnx = _write_artifact(ctx, record.model, record.version, "model", "onnx", onnx_bytes)
        facts = ml.onnx_facts(onnx_bytes)
        return registry.transition(
            storage, ctx.clock, record.model, record.version, V.EXPORTED, reason="ONNX parity gate passed",
            parity=parity.to_dict(), onnx={**facts, "path": onnx.path},
            artifacts={**record.artifacts, "onnx": onnx}, exported_at=ctx.clock.now())


class ValidateStage(_VersionStage):
    """Decide promote / reject / pending_approval with every reason spelled out, then apply it."""

    name = "validate"
    queue = paths.VALIDATE_QUEUE
    attempts = 5

    def work(self, ctx: Context, request: StageRequest, held: Held) -> dict[str, Any]:
        from shared.onnx_export import ParityReport

        storage, ml = ctx.storage, ctx.learner()
        record = registry.get_version(storage, request.model, request.version)
        if record.status != V.EXPORTED:
            return {"outcome": str(record.status), "version": record.version}
        spec = registry.spec_at(storage, record.model, (record.lineage or {})["spec_hash"])
        holdout = ml.read_frame(registry.read_artifact(storage, record, "holdout"))
        onnx_bytes = registry.read_artifact(storage, record, "onnx")
        challenger = ml.evaluate(onnx_bytes, holdout, spec, record.classes)
        outputs = ml.output_profile(onnx_bytes, holdout, spec, record.classes)  # prediction drift's baseline
        latency = ml.latency(onnx_bytes, holdout, spec)
        charts = _write_artifact(ctx, record.model, record.version, "holdout-charts", "json",  # the model pages'
                                 ml.holdout_charts(onnx_bytes, holdout, spec, record.classes))
        parity = ParityReport.from_dict(record.parity or {})
        signature = signature_from(spec, record.task, record.classes, prediction_range_of(outputs))
        for _ in range(self.attempts):
            aliases, _ = registry.get_aliases(storage, record.model)
            champion = aliases.champion
            if champion == record.version:  # an earlier try flipped, then died: never decide against itself
                registry.transition(storage, ctx.clock, record.model, record.version, V.PROMOTED,
                                    reason="promoted by an earlier try of this validation")
                return {"outcome": str(V.PROMOTED), "version": record.version}
            compared = self._champion_metrics(ctx, record, champion, holdout, onnx_bytes, spec)
            replayed, replay_note = _replay(ctx, record, champion, onnx_bytes)
            compared = replace(compared, changes=self._contract_changes(ctx, record.model, champion, signature),
                               replay=replayed, replay_note=replay_note)
            decision = compared.decide(spec, challenger, latency["p99_ms"], parity)
            doc = {**decision.to_dict(), "champion_version": champion, "champion_metrics": compared.champion,
                   "challenger_compared_metrics": compared.challenger, "champion_problem": compared.problem,
                   "signature_changes": [d.message for d in compared.changes],
                   "replay": compared.replay.to_json() if compared.replay else None,
                   "at": ctx.clock.now().isoformat()}
            facts = {"decision": doc, "onnx_holdout": challenger, "latency": latency, "holdout_outputs": outputs,
                     "signature": signature.to_json(), "holdout_charts": charts}
            registry.update_version(storage, record.model, record.version, partial(_with_decision, facts=facts))
            reason = "; ".join(decision.reasons)
            if decision.outcome == "promote":
                try:
                    registry.promote(storage, ctx.clock, record.model, record.version, action=AliasAction.PROMOTE,
                                     by="pipeline", reason=reason, run_id=record.run_id, expected=champion)
                except ChampionMoved:
                    log.info("validate: champion of %s moved while deciding on version %s; deciding again",
                             record.model, record.version)
                    continue
            status = OUTCOME_STATUS[decision.outcome]
            registry.transition(storage, ctx.clock, record.model, record.version, status, reason=reason)
            log.info("validate: model=%s version=%s -> %s (%s)", record.model, record.version, status, reason)
            return {"outcome": str(status), "version": record.version, "reasons": decision.reasons}
        raise ChampionMoved(f"model (name={record.model}) champion kept changing while validating "
                                     f"version {record.version}; retry")

    @staticmethod
    def _contract_changes(ctx: Context, model: str, champion: int | None,
                          signature: ModelSignature) -> tuple[Difference, ...]:
        """How the challenger's scoring contract differs from the champion's (stored, or derived from its spec)."""
        if champion is None:
            return ()
        champ = registry.get_version(ctx.storage, model, champion)
        return tuple(compare(signature_of(ctx.storage, champ), signature))

    def _champion_metrics(self, ctx: Context, record: ModelVersion, champion: int | None, holdout: Any,
                          onnx_bytes: bytes, spec: TrainingSpec) -> _Comparison:
        """The champion's metrics on the challenger's holdout rows it did not train on (its own feature set)."""
        if champion is None:
            return _Comparison()
        storage, ml = ctx.storage, ctx.learner()
        champ = registry.get_version(storage, record.model, champion)
        champ_spec = registry.spec_at(storage, record.model, (champ.lineage or {})["spec_hash"])
        frame, missing = ml.frame_for_spec(holdout, champ_spec)
        if frame is None:
            return _Comparison(problem=f"the champion (version {champion}) cannot be scored on this data: column(s) "
                                       f"{', '.join(missing)} absent from the new data")
        try:
            champ_onnx = registry.read_artifact(storage, champ, "onnx")
        except ArtifactCorrupt as exc:
            return _Comparison(problem=f"the champion (version {champion}) cannot be scored: {exc.message}")
        unseen = self._unseen(ctx, champ, champ_spec, frame)
        if unseen is None:
            return _Comparison(ml.evaluate(champ_onnx, frame, champ_spec, champ.classes))
        common, rows = int(unseen.sum()), len(frame)
        if common < MIN_COMMON_ROWS:  # the same data again: too few fresh rows; the whole holdout favours the champion
            return _Comparison(ml.evaluate(champ_onnx, frame, champ_spec, champ.classes),
                               note=f"note: the champion trained on {rows - common} of the {rows} holdout rows "
                                    "(too few others to compare on): the comparison favours the champion")
        note = (f"note: champion compared on the {common} of {rows} holdout rows it did not train on "
                f"(it trained on the other {rows - common})")
        return _Comparison(ml.evaluate(champ_onnx, frame[unseen.to_numpy()], champ_spec, champ.classes),
                           ml.evaluate(onnx_bytes, holdout[unseen.to_numpy()], spec, record.classes), note=note)

    @staticmethod
    def _unseen(ctx: Context, champ: ModelVersion, champ_spec: TrainingSpec, frame: Any) -> Any | None:
        """Mask of holdout rows the champion did not train on; None when it trained on none of them."""
        ml, storage = ctx.learner(), ctx.storage
        data_hash = (champ.lineage or {}).get("data_hash")
        try:
            data = ml.read_frame(storage.read(paths.MLOPS, paths.prepared_data(champ.model, str(data_hash))).data)
            champ_holdout = ml.read_frame(registry.read_artifact(storage, champ, "holdout"))
        except (NotFound, ArtifactCorrupt):
            return None  # nothing to tell them apart by: compare on the whole holdout, as before
        columns = [c for c in [*champ_spec.feature_names, champ_spec.target]
                   if c in data.columns and c in champ_holdout.columns]
        mask = ml.rows_not_trained_on(frame, data, champ_holdout, columns)
        return None if bool(mask.all()) else mask


@dataclass(frozen=True)
class _Comparison:
    """The champion's side of validation: its metrics, the challenger's on the same rows when those are
    fewer than the holdout, or why the two cannot be compared."""

    champion: dict[str, float] | None = None
    challenger: dict[str, float] | None = None
    problem: str | None = None
    note: str | None = None
    changes: tuple[Difference, ...] = ()  # the scoring contract's, champion -> challenger
    replay: ReplayReport | None = None  # the champion's logged requests replayed, when there were any
    replay_note: str | None = None  # why no replay report: no logged traffic, or the replay could not run

    def decide(self, spec: TrainingSpec, challenger: dict[str, float], latency_p99_ms: float,
               parity: Any) -> Decision:
        decision = decide(spec, challenger, self.champion, latency_p99_ms, parity, self.challenger)
        reasons = [*decision.reasons, *(d.message for d in self.changes), *([self.note] if self.note else []),
                   *_replay_reasons(self.replay), *([self.replay_note] if self.replay_note else [])]
        decision = Decision(decision.outcome, reasons)
        if self.problem is not None and decision.outcome != "reject":
            why = f"pending: {self.problem}; a reviewer must compare and approve (whatever the spec's approval mode)"
            decision = Decision("pending_approval", [*decision.reasons, why])
        breaking = sum(d.breaking for d in self.changes) + bool(self.replay is not None and self.replay.failed)
        if breaking and decision.outcome != "reject":
            # Clients of the champion would break: never automatic, whatever the spec's approval mode.
            why = (f"pending: {breaking} breaking change(s) to the scoring contract; a reviewer must approve "
                   "(whatever the spec's approval mode)")
            decision = Decision("pending_approval", [*decision.reasons, why])
        return decision


MIN_COMMON_ROWS = 30  # fewer unseen holdout rows than this and a comparison on them is noise
_SIGNATURE_ONLY = "the contract rests on the signature comparison alone"  # a decision's reason when nothing replayed


def _replay(ctx: Context, record: ModelVersion, champion: int | None,
            onnx_bytes: bytes) -> tuple[ReplayReport | None, str | None]:
    """The champion's recent logged requests replayed on the challenger, or the decision's reason why not
    (no reason without a champion: nothing to replay against)."""
    from shared.replay import LOOKBACK_DAYS, replay

    if champion is None:
        return None, None
    try:
        report = replay(ctx.storage, record.model, champion, onnx_bytes, challenger_version=record.version,
                        now=ctx.clock.now())
    except PipelineError as exc:  # the replay is a release test, not a reason to fail validation
        log.warning("validate: replay for %s v%s skipped: %s", record.model, record.version,
                    exc.internal or exc.message)
        return None, f"replay: not run ({exc.message}); {_SIGNATURE_ONLY}"
    if not report.rows:
        return None, (f"replay: none of the champion's (version {champion}) requests logged in the last "
                      f"{LOOKBACK_DAYS} days to replay; {_SIGNATURE_ONLY}")
    return report, None


def _replay_reasons(report: ReplayReport | None) -> list[str]:
    if report is None:
        return []
    shift = "n/a" if report.output_shift is None else f"{report.output_shift:.4g}"
    changed = "n/a" if report.changed_predictions is None else f"{report.changed_predictions:.1%}"
    reasons = [f"replay: {report.rows} logged request row(s) of the champion replayed; {changed} of the "
               f"predictions changed, output shift {shift}"]
    if report.failed:
        example = f", e.g. {report.breaking[0].prediction_id}: {report.breaking[0].error}" if report.breaking else ""
        reasons.append(f"breaking: {report.failed} of {report.rows} replayed rows the champion answered fail on "
                       f"the challenger{example}")
    return reasons


def _with_decision(record: ModelVersion, facts: dict[str, Any]) -> ModelVersion:
    """The version with its decision written BEFORE any flip, so a takeover never loses it."""
    return record.model_copy(update={"decision": facts["decision"], "latency": facts["latency"],
                                     "metrics": {**record.metrics, "onnx_holdout": facts["onnx_holdout"]},
                                     "holdout_outputs": facts["holdout_outputs"], "signature": facts["signature"],
                                     "artifacts": {**record.artifacts, "holdout_charts": facts["holdout_charts"]}})


TRAIN = TrainStage()
EXPORT = ExportStage()
VALIDATE = ValidateStage()
STAGES: dict[str, Stage[Any]] = {s.queue: s for s in (TRAIN, EXPORT, VALIDATE)}


def deliver(ctx: Context, queue: str, body: bytes, dequeue_count: int) -> dict[str, Any]:
    """Run one delivery of a stage queue's message (what the queue functions call)."""
    from shared.lifecycle.stages import run_stage

    stage = STAGES[queue]
    request = parse_message(stage.message, body)
    return run_stage(ctx, stage, request, attempt=dequeue_count)
