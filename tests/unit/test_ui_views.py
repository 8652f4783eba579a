"""View models of the model pages: pure functions over typed records, read from the in-memory storage fake."""
from __future__ import annotations

import pytest

from shared import paths, registry
from shared.contract import InputField, ModelSignature, OutputSpec, PredictionRange
from shared.errors import NotFound
from shared.lifecycle.records import Aliases, ModelVersion, RunRecord, RunStatus, StatusChange, VersionStatus
from shared.memory_storage import MemoryStorage
from shared.settings import Settings
from shared.ui import index, monitoring, reads, views
from shared.ui.contract_view import InputRow, input_row, output_facts
from shared.ui.gates import checklist, gate_of, state_of
from tests.unit.ui_records import T0, seed_model, spec_dict

LINKS = views.Links("/api", "the-key")
GITHUB = reads.repository_links(Settings.from_env({}))


@pytest.fixture
def storage() -> MemoryStorage:
    return MemoryStorage()


def test_the_models_list_shows_champion_key_metric_promotion_latest_run_pending_and_drift(
        storage: MemoryStorage) -> None:
    seed_model(storage, "quiet", 3)
    seed_model(storage, "watched", 10, monitored=True)
    page = views.load_models_page(storage, LINKS)
    quiet, watched = page.models
    assert (quiet.name, quiet.champion, quiet.pending, quiet.versions) == ("quiet", 2, 1, 3)
    assert quiet.key_metric == "rmse" and quiet.key_value == pytest.approx(60.0 - 5.0 * 2 / 4)
    assert quiet.promoted is not None and quiet.promoted.to_version == 2 and quiet.promoted.by == "pipeline"
    assert quiet.latest_run is not None and quiet.latest_run.run_id.startswith("run-")
    assert quiet.drift.label == "no monitoring yet" and quiet.drift.tone == "none"
    assert watched.drift.label == "dataset drift (1/2 features)" and watched.drift.drifted == ("bmi",)
    assert quiet.href == "/api/ui/models/quiet?code=the-key"


def test_a_model_page_selects_the_champion_by_default_and_a_version_on_request(storage: MemoryStorage) -> None:
    seed_model(storage, "m", 6)
    page = views.load_model_page(storage, "m", None, LINKS, GITHUB)
    assert page.selected is not None and page.selected.version == 5 == page.champion.version  # type: ignore[union-attr]
    assert [v.version for v in page.versions] == [6, 5, 4, 3, 2, 1] and page.versions[1].aliases == ("champion",)
    assert page.versions[2].aliases == ("previous",) and page.versions[1].selected
    pending = views.load_model_page(storage, "m", 6, LINKS, GITHUB)
    assert pending.selected is not None and pending.selected.status == VersionStatus.PENDING_APPROVAL
    assert pending.actions.approve == 6 and pending.actions.rollback_to == 4
    assert [g.state for g in pending.gates] == ["passed", "passed", "passed", "passed", "passed", "attention"]


def test_unknown_models_and_versions_are_not_found_naming_them(storage: MemoryStorage) -> None:
    seed_model(storage, "m", 2)
    with pytest.raises(NotFound, match=r"model \(name=nope\) not found"):
        views.load_model_page(storage, "nope", None, LINKS, GITHUB)
    with pytest.raises(NotFound, match=r"model version \(name=m, version=9\) not found"):
        views.load_model_page(storage, "m", 9, LINKS, GITHUB)


def test_a_model_with_a_spec_and_no_version_yet_has_a_page(storage: MemoryStorage) -> None:
    import yaml

    registry.upload_spec(storage, yaml.safe_dump(spec_dict("fresh")).encode())
    page = views.load_model_page(storage, "fresh", None, LINKS, GITHUB)
    assert page.selected is None and page.champion is None and page.versions == [] and page.gates == []
    assert views.load_models_page(storage, LINKS).models[0].champion is None


def test_the_metric_series_has_one_value_per_version_and_the_quality_bar_of_the_current_spec(
        storage: MemoryStorage) -> None:
    seed_model(storage, "m", 4)
    data = views.load_model_page(storage, "m", None, LINKS, GITHUB).data
    assert data["metrics"]["versions"] == [1, 2, 3, 4]
    assert list(data["metrics"]["series"]) == ["rmse", "r2"]
    assert data["metrics"]["bars"]["rmse"] == {"max": 60.0, "min": None}
    assert data["api"] == "/api/registry/models/m" and "code" not in data["api"]
    assert data["scatter"]["sampled"] == 442 and data["residuals"]["counts"]


def test_the_selected_version_without_stored_charts_says_why(storage: MemoryStorage) -> None:
    seed_model(storage, "m", 4)
    page = views.load_model_page(storage, "m", 1, LINKS, GITHUB)
    assert page.charts_note is not None and "stored at validation" in page.charts_note
    assert page.data["scatter"] is None and page.data["roc"] == []


def test_a_tampered_charts_artifact_is_refused_with_its_reason(storage: MemoryStorage) -> None:
    seed_model(storage, "m", 3)
    record = registry.get_version(storage, "m", 2)
    storage.write(paths.MLOPS, record.artifacts["holdout_charts"].path, b"{}")
    page = views.load_model_page(storage, "m", 2, LINKS, GITHUB)
    assert page.charts_note is not None and "fails its sha256 check" in page.charts_note


@pytest.mark.parametrize(("reason", "gate"), [
    ("passed: parity max probability diff 3.33e-16 <= 1e-05 (rows=114)", "parity"),
    ("rejected: parity label agreement 0.9 < 1", "parity"),
    ("passed: accuracy 0.964912 >= bar 0.9", "bar"),
    ("rejected: rmse was not computed on the holdout (needed by the quality bar)", "bar"),
    ("passed: no quality bar in the spec", "bar"),
    ("no champion: only the quality bar applies", "champion"),
    ("passed: rmse 53.7 vs champion 54.1 (allowed regression 0.5)", "champion"),
    ("note: champion compared on the 80 of 89 holdout rows it did not train on (it trained on the other 9)",
     "champion"),
    ("pending: the champion (version 2) cannot be scored on this data: column(s) s5 absent from the new data",
     "champion"),
    ("passed: latency p99 0.137 ms <= budget 50 ms", "latency"),
    ("breaking: input s5 removed", "contract"),
    ("compatible: optional input s8 added", "contract"),
    ("replay: 20 logged request row(s) of the champion replayed; 5.0% of the predictions changed, output shift 0.1",
     "contract"),
    ("pending: 1 breaking change(s) to the scoring contract; a reviewer must approve", "contract"),
    ("pending: approval=manual; every check passed, waiting for a reviewer", "approval"),
])
def test_each_reason_of_a_decision_belongs_to_its_gate(reason: str, gate: str) -> None:
    assert gate_of(reason) == gate


def test_a_gate_fails_on_any_rejection_and_needs_attention_on_a_pending_or_breaking_reason() -> None:
    assert state_of(["passed: a", "rejected: b"]) == "failed"
    assert state_of(["compatible: a", "breaking: b"]) == "attention"
    assert state_of(["note: x", "passed: y"]) == "passed"
    assert state_of(["no champion: only the quality bar applies"]) == "n/a"


def test_a_version_not_validated_yet_shows_its_parity_and_nothing_else_run() -> None:
    gates = checklist(None, {"reasons": ["passed: parity max probability diff 1e-16 <= 1e-05 (rows=10)"]})
    assert [(g.key, g.state) for g in gates][:2] == [("parity", "passed"), ("bar", "not run")]


def test_an_approved_version_shows_who_approved_it_and_a_rejected_one_who_rejected_it() -> None:
    at = T0
    approved = ModelVersion.model_validate({"model": "m", "version": 2, "status": "promoted", "created": at,
                                            "approval": {"by": "alice", "at": at.isoformat()}})
    rejected = ModelVersion(model="m", version=3, status=VersionStatus.REJECTED, created=at, history=[
        StatusChange(status="rejected", at=at, by="bob", reason="rejected by bob: too slow",
                     from_status="pending_approval")])
    decision = {"outcome": "pending_approval", "reasons": ["pending: approval=manual; waiting for a reviewer"]}
    gate = checklist(decision, None, views.review_of(approved))[-1]
    assert gate.state == "passed" and "approved by alice" in gate.reasons[-1]
    gate = checklist(decision, None, views.review_of(rejected))[-1]
    assert gate.state == "failed" and gate.reasons[-1] == "rejected by bob: too slow"


def test_lineage_links_a_github_commit_only_when_repository_and_commit_are_well_formed() -> None:
    commit = "a" * 40
    good = views.git_view({"provider": "github", "repository": "contoso/ml-specs", "commit": commit}, GITHUB)
    assert good is not None and good.url == f"https://github.com/contoso/ml-specs/commit/{commit}"
    for repository, sha in (("javascript:alert(1)//x", commit), ("contoso/ml specs", commit),
                            ("contoso/ml-specs", "not-a-commit")):
        view = views.git_view({"provider": "github", "repository": repository, "commit": sha}, GITHUB)
        assert view is not None and view.url is None, repository
    local = views.git_view({"provider": "local", "repository": "x", "commit": commit}, GITHUB)
    assert local is not None and local.url is None
    ado = reads.repository_links(Settings.from_env({"MLOPS_ADO_ORG_URL": "https://dev.azure.com/contoso",
                                                    "MLOPS_ADO_PROJECT": "ML Ops"}))
    view = views.git_view({"provider": "azure-devops", "repository": "specs", "commit": commit}, ado)
    assert view is not None and view.url == f"https://dev.azure.com/contoso/ML%20Ops/_git/specs/commit/{commit}"


def test_the_spec_diff_runs_from_the_champions_spec_to_the_selected_versions() -> None:
    at = T0
    champion = ModelVersion(model="m", version=1, status=VersionStatus.PROMOTED, created=at)
    selected = ModelVersion(model="m", version=2, status=VersionStatus.PENDING_APPROVAL, created=at)
    before, after = spec_dict("m"), spec_dict("m", approval="manual", description="<script>x</script>")
    lines, note = views.spec_diff(before, after, champion, selected)
    assert note is None and lines is not None
    assert ("meta", "--- version 1 (champion)") in [(d.kind, d.text) for d in lines]
    assert ("add", "+approval: manual") in [(d.kind, d.text) for d in lines]
    assert ("del", "-approval: auto") in [(d.kind, d.text) for d in lines]
    assert views.spec_diff(before, before, champion, selected) == (None, "the same spec as the champion (version 1)")
    assert views.spec_diff(before, after, champion, champion)[1] == "the selected version is the champion"
    assert views.spec_diff(None, after, None, selected)[1] == "no champion to compare with"


def test_drift_histograms_compare_training_and_live_shares_when_the_report_has_live_counts(
        storage: MemoryStorage) -> None:
    seed_model(storage, "m", 3, monitored=True)
    page = views.load_model_page(storage, "m", None, LINKS, GITHUB)
    bmi = page.data["histograms"]["bmi"]
    assert bmi == {"labels": ["<= 20", "20 - 25", "25 - 30", "> 30"], "training": [0.1, 0.4, 0.3, 0.2],
                   "live": [0.1, 0.2, 0.3, 0.4]}
    assert page.data["histograms"]["sex"]["live"] is None
    mon = page.monitoring
    assert mon is not None and mon.live_histograms and mon.rows == 1000
    assert [(s.name, s.value, s.threshold, s.drifted) for s in mon.features[0].statistics][0] == (
        "wasserstein_normalised", 0.4, 0.1, True)
    live = [(m.metric, m.live, m.validation, m.bar) for m in mon.live_metrics]
    assert live == [("rmse", 70.0, 55.0, "max 60")]
    categorical = monitoring.histograms({"features": {"c": {"live_counts": {"x": 3, "y": 1}}}},
                                        {"features": {"c": {"kind": "categorical", "counts": {"x": 1, "y": 1}}}})
    assert categorical["c"]["live"] == [0.75, 0.25]
    pooled = monitoring.histograms({"features": {"c": {"live_counts": {"x": 1, "new": 2, "__other__": 1}}}},
                                   {"features": {"c": {"kind": "categorical", "counts": {"x": 1, "__other__": 1}}}})
    assert pooled["c"] == {"labels": ["x", "__other__"], "training": [0.5, 0.5], "live": [0.25, 0.75]}


def test_drift_states_read_as_a_phrase() -> None:
    assert monitoring.drift_state(None).label == "no monitoring yet"
    assert monitoring.drift_state({"status": "insufficient_data", "window": {"rows": 12}}).label == \
        "insufficient data (12 rows)"
    calm = monitoring.drift_state({"status": "ok", "dataset_drift": False, "features": {"a": {"drifted": False}}})
    assert (calm.label, calm.tone) == ("no drift", "ok")
    some = monitoring.drift_state({"status": "ok", "dataset_drift": False,
                                   "features": {"a": {"drifted": True}, "b": {}}})
    assert (some.label, some.tone) == ("no dataset drift (1 feature(s) drifted)", "warn")
    failed = monitoring.drift_state({"status": "failed", "reason": "internal error (OSError)", "dataset_drift": None})
    assert (failed.label, failed.tone) == ("monitoring failed: internal error (OSError)", "bad")


def test_actions_follow_the_lifecycle() -> None:
    at = T0
    def version(n: int, status: VersionStatus) -> ModelVersion:
        return ModelVersion(model="m", version=n, status=status, created=at)
    aliases = Aliases(champion=3, previous=2)
    assert views.actions_for(aliases, version(4, VersionStatus.PENDING_APPROVAL)).approve == 4
    assert views.actions_for(aliases, version(1, VersionStatus.SUPERSEDED)).restore == 1
    assert views.actions_for(aliases, version(3, VersionStatus.PROMOTED)) == views.Actions(
        rollback_from=3, rollback_to=2)
    assert views.actions_for(Aliases(champion=1), version(1, VersionStatus.PROMOTED)).rollback_to is None
    assert views.actions_for(aliases, version(5, VersionStatus.REJECTED)).approve is None


def test_the_run_history_is_newest_first_and_capped(storage: MemoryStorage) -> None:
    seed_model(storage, "m", 3)
    for i in range(reads.MAX_RUNS + 5):
        run = RunRecord(run_id=f"extra-{i:03d}", model="m", created=T0.replace(year=2027), status=RunStatus.FAILED,
                        error=f"boom {i}")
        storage.write_json(paths.MLOPS, paths.run_record("m", run.run_id), run.to_json())
    page = views.load_model_page(storage, "m", None, LINKS, GITHUB)
    assert len(page.runs) == reads.MAX_RUNS and page.runs_total == reads.MAX_RUNS + 8
    assert page.runs[0].error is not None and page.runs[0].href is None
    assert page.runs[-1].created >= T0


def test_links_carry_the_function_key_on_pages_only() -> None:
    assert LINKS.model("m", 3) == "/api/ui/models/m?version=3&code=the-key"
    assert views.Links("/api").models() == "/api/ui"
    assert views.Links("", "a&b=c").models() == "/ui?code=a%26b%3Dc"
    assert LINKS.static("ui.js", "abc") == "/api/ui/static/ui.js?v=abc"
    assert LINKS.api("m") == "/api/registry/models/m"


def test_a_second_view_reads_only_the_records_written_since_the_first(storage: MemoryStorage) -> None:
    seed_model(storage, "m", 30)
    reads: list[str] = []
    storage.fault = lambda op, where, what: reads.append(what) if op == "read" else None
    views.load_model_page(storage, "m", None, LINKS, GITHUB)
    first = [r for r in reads if r.startswith(("models/m/versions/", "runs/"))]
    assert len(first) == 61  # 30 versions and their 30 runs for the page index, the champion in full
    registry.update_version(storage, "m", 7, lambda r: r.model_copy(update={"note": "changed"}))
    reads.clear()
    page = views.load_model_page(storage, "m", None, LINKS, GITHUB)
    again = [r for r in reads if r.startswith(("models/m/versions/", "runs/"))]
    assert again == [paths.version_record("m", 7)]
    assert next(v for v in page.versions if v.version == 7).status == "rejected"


def test_full_version_records_leave_out_what_no_page_shows(storage: MemoryStorage) -> None:
    seed_model(storage, "m", 2)
    registry.update_version(storage, "m", 1, lambda r: r.model_copy(update={"holdout_outputs": {"rows": 9},
                                                                            "signature": {"inputs": []}}))
    first = reads.read_records(storage, reads.version_blobs(storage, "m"), [1, None])[1]
    assert first.holdout_outputs is None and first.decision is not None
    assert first.signature == {"inputs": []}  # the page shows the selected version's contract
    assert registry.get_version(storage, "m", 1).holdout_outputs == {"rows": 9}



def test_the_selected_versions_contract_lists_what_would_change_for_the_champions_clients(
        storage: MemoryStorage) -> None:
    seed_model(storage, "m", 4)  # version 3 is the champion, 4 waits for approval
    stored = registry.get_version(storage, "m", 3).signature
    assert stored is not None
    theirs = ModelSignature.from_json(stored)
    added = InputField(name="s8", type="number", optional=True, imputation="median")
    ours = theirs.model_copy(update={"inputs": [i for i in theirs.inputs if i.name != "s5"] + [added]})
    registry.update_version(storage, "m", 4, lambda r: r.model_copy(update={"signature": ours.to_json()}))

    contract = views.load_model_page(storage, "m", 4, LINKS, GITHUB).contract
    assert contract is not None and contract.note is None
    assert [d.message for d in contract.changes] == ["breaking: input s5 removed",
                                                     "compatible: optional input s8 added"]
    rows = {r.name: r for r in contract.inputs}
    assert rows["age"] == InputRow("age", "number", "must be sent", "imputed (median)", "-", "0 .. 120")
    assert (rows["s8"].column, rows["s1"].range, "s5" in rows) == ("may be left out", "-", False)
    assert contract.outputs == [("kind", "regression")] and "text/csv" in contract.formats

    champion = views.load_model_page(storage, "m", None, LINKS, GITHUB).contract
    assert champion is not None and (champion.changes, champion.note) == ([], "the selected version is the champion")
    registry.update_version(storage, "m", 4, lambda r: r.model_copy(update={"signature": stored}))
    same = views.load_model_page(storage, "m", 4, LINKS, GITHUB).contract
    assert same is not None and (same.changes, same.note) == ([], "the same contract as the champion (version 3)")
    registry.update_version(storage, "m", 3, lambda r: r.model_copy(update={"signature": None}))
    unknown = views.load_model_page(storage, "m", 4, LINKS, GITHUB).contract
    assert unknown is not None and unknown.note == "the champion (version 3) has no stored signature to compare with"
    assert views.load_model_page(storage, "m", 3, LINKS, GITHUB).contract is None  # never reached validation
    registry.update_version(storage, "m", 4, lambda r: r.model_copy(update={"signature": {"inputs": []}}))
    assert views.load_model_page(storage, "m", 4, LINKS, GITHUB).contract is None  # unreadable: no page error


def test_a_signatures_categories_requirements_and_outputs_read_as_phrases() -> None:
    plain = InputField(name="kind", type="string", imputation="missing category", allowed=["a", "b"])
    assert input_row(plain) == InputRow("kind", "string", "must be sent", "imputed (missing category)", "a, b", "-")
    assert input_row(plain.model_copy(update={"allowed": None})).categories == "any"
    assert input_row(InputField(name="y", type="number", max=7)).range == "<= 7"
    strict = InputField(name="x", type="number", required=True, min=0.5)
    assert (input_row(strict).nulls, input_row(strict).range) == ("refused (a value is required)", ">= 0.5")
    assert output_facts(OutputSpec(kind="classification", classes=["0", "1"], probability_columns=["0", "1"])) == [
        ("kind", "classification"), ("class labels, in order", "0, 1"), ("probability columns", "0, 1")]
    assert output_facts(OutputSpec(kind="regression", prediction_range=PredictionRange(min=-1.5, max=300))) == [
        ("kind", "regression"), ("holdout prediction range", "-1.5 .. 300")]

# -- the page index ---------------------------------------------------------------------------------------


def record_reads(storage: MemoryStorage) -> list[str]:
    """Names of the version and run records read from now on (index blobs and the rest left out)."""
    seen: list[str] = []
    storage.fault = lambda op, where, what: seen.append(what) if op == "read" and what.startswith(
        ("models/m/versions/", "runs/m/")) else None
    return seen


def test_a_version_summary_shows_what_the_timeline_and_chart_show_of_its_record(storage: MemoryStorage) -> None:
    seed_model(storage, "m", 3)
    record = registry.get_version(storage, "m", 3).model_copy(update={"metrics": {
        "onnx_holdout": {"rmse": 50.5, "r2": float("nan"), "flag": True}, "sklearn_holdout": {"mae": 3},
        "parity": {"max_rel": 1e-9}}})
    summary = index.summary_of(record)
    assert index.VersionSummary.model_validate(summary.to_json()) == summary
    assert summary.metrics == {"onnx_holdout": {"rmse": 50.5}, "sklearn_holdout": {"mae": 3.0}}
    for metric in ("rmse", "mae", "r2", "flag", "max_rel"):
        assert views.metric_value(summary, metric) == views.metric_value(record, metric)
    assert summary.last_change == record.history[-1] and summary.data_hash == record.lineage["data_hash"]  # type: ignore[index]
    assert (summary.status, summary.created, summary.status_at, summary.task) == (
        record.status, record.created, record.status_at, record.task)


def test_a_first_view_in_a_new_process_reads_versions_and_runs_from_the_page_index(storage: MemoryStorage) -> None:
    seed_model(storage, "m", 30, monitored=True)
    warm = views.load_model_page(storage, "m", None, LINKS, GITHUB), views.load_models_page(storage, LINKS)
    assert storage.blob_names(paths.MLOPS, "page-index/") == [paths.page_index("m", "runs"),
                                                              paths.page_index("m", "versions")]
    index.CACHE.clear()  # a new process: only what storage holds
    seen = record_reads(storage)
    cold = views.load_model_page(storage, "m", None, LINKS, GITHUB), views.load_models_page(storage, LINKS)
    assert cold == warm
    # the champion, shown in full, and the models list's latest run: nothing else
    assert seen == [paths.version_record("m", 29), paths.run_record("m", "run-000030")]
    pending = views.load_model_page(storage, "m", 30, LINKS, GITHUB)
    assert pending.selected is not None and pending.selected.decision is not None
    assert seen[2:] == [paths.version_record("m", 30)]


def test_the_page_index_follows_a_version_changed_by_any_writer(storage: MemoryStorage) -> None:
    seed_model(storage, "m", 10)
    views.load_model_page(storage, "m", None, LINKS, GITHUB)
    registry.update_version(storage, "m", 3, lambda r: r.model_copy(update={
        "status": VersionStatus.ROLLED_BACK, "metrics": {"onnx_holdout": {"rmse": 1.5}}}))
    index.CACHE.clear()
    seen = record_reads(storage)
    page = views.load_model_page(storage, "m", None, LINKS, GITHUB)
    row = next(v for v in page.versions if v.version == 3)
    assert (row.status, row.key_value) == ("rolled_back", 1.5)
    assert page.data["metrics"]["series"]["rmse"][2] == 1.5
    assert seen == [paths.version_record("m", 3), paths.version_record("m", 9)]  # the changed one, the champion
    stored, _ = storage.read_json(paths.MLOPS, paths.page_index("m", "versions"))
    entry = stored["entries"][paths.version_record("m", 3)]
    assert entry["etag"] == storage.read(paths.MLOPS, paths.version_record("m", 3)).etag
    assert entry["body"]["status"] == "rolled_back"


def test_an_index_entry_is_used_only_at_the_etag_the_listing_gives(storage: MemoryStorage) -> None:
    seed_model(storage, "m", 4)
    views.load_model_page(storage, "m", None, LINKS, GITHUB)
    path = paths.page_index("m", "versions")
    stored, _ = storage.read_json(paths.MLOPS, path)
    stored["entries"][paths.version_record("m", 1)] = {"etag": '"0xstale"', "body": {**stored["entries"][
        paths.version_record("m", 1)]["body"], "status": "failed"}}
    storage.write_json(paths.MLOPS, path, stored)
    index.CACHE.clear()
    page = views.load_model_page(storage, "m", None, LINKS, GITHUB)
    assert next(v for v in page.versions if v.version == 1).status == "superseded"


@pytest.mark.parametrize("damage", ["deleted", "not JSON", "another format"])
def test_a_missing_or_unreadable_page_index_is_rebuilt_by_the_next_view(storage: MemoryStorage, damage: str) -> None:
    seed_model(storage, "m", 5)
    warm = views.load_model_page(storage, "m", None, LINKS, GITHUB)
    path = paths.page_index("m", "versions")
    if damage == "deleted":
        storage.delete(paths.MLOPS, path)
    else:
        storage.write(paths.MLOPS, path, b"{oops" if damage == "not JSON" else b'{"format": 0, "entries": []}')
    index.CACHE.clear()
    seen = record_reads(storage)
    assert views.load_model_page(storage, "m", None, LINKS, GITHUB) == warm
    assert len([r for r in seen if r.startswith("models/")]) == 5 + 1
    stored, _ = storage.read_json(paths.MLOPS, path)
    assert stored["format"] == index.FORMAT and len(stored["entries"]) == 5


@pytest.mark.parametrize("part", ["versions", "runs"])
def test_a_damaged_index_entry_is_read_again_and_the_index_heals(storage: MemoryStorage, part: str) -> None:
    """An entry at the right ETag whose body the page cannot use (damaged, or a shape changed without a FORMAT
    bump) costs one read of its record, never the page."""
    seed_model(storage, "m", 5)
    warm = views.load_model_page(storage, "m", None, LINKS, GITHUB)
    path = paths.page_index("m", part)
    stored, _ = storage.read_json(paths.MLOPS, path)
    damaged = sorted(stored["entries"])[0]
    stored["entries"][damaged]["body"] = {"status": 7}
    storage.write_json(paths.MLOPS, path, stored)
    index.CACHE.clear()
    seen = record_reads(storage)
    assert views.load_model_page(storage, "m", None, LINKS, GITHUB) == warm
    assert damaged in seen
    healed, _ = storage.read_json(paths.MLOPS, path)
    assert healed["entries"][damaged]["body"] != {"status": 7}


def test_a_page_that_loses_the_race_to_write_the_index_still_shows_every_version(storage: MemoryStorage) -> None:
    seed_model(storage, "m", 5)
    path = paths.page_index("m", "versions")
    raced: list[bool] = []

    def another_page_first(op: str, where: str, what: str) -> None:
        if op == "write" and what == path and not raced:
            raced.append(True)
            storage.write_json(paths.MLOPS, path, {"format": index.FORMAT, "entries": {}})

    storage.fault = another_page_first
    page = views.load_model_page(storage, "m", None, LINKS, GITHUB)
    assert raced and [v.version for v in page.versions] == [5, 4, 3, 2, 1]
    assert storage.read_json(paths.MLOPS, path)[0]["entries"] == {}  # the winner's index stands
    index.CACHE.clear()
    assert [v.version for v in views.load_model_page(storage, "m", None, LINKS, GITHUB).versions] == [5, 4, 3, 2, 1]
    assert len(storage.read_json(paths.MLOPS, path)[0]["entries"]) == 5  # refreshed by the next view


def test_the_runs_index_keeps_only_the_runs_a_page_shows(storage: MemoryStorage) -> None:
    seed_model(storage, "m", 3)
    for i in range(reads.MAX_RUNS + 2):
        run = RunRecord(run_id=f"extra-{i:03d}", model="m", created=T0.replace(year=2027), status=RunStatus.FAILED)
        storage.write_json(paths.MLOPS, paths.run_record("m", run.run_id), run.to_json())
    views.load_model_page(storage, "m", None, LINKS, GITHUB)
    stored, _ = storage.read_json(paths.MLOPS, paths.page_index("m", "runs"))
    assert len(stored["entries"]) == reads.MAX_RUNS
