"""Batch scoring end to end: a file dropped in scoring-requests is scored by the real app in the local host.

The local Event Grid publishes the BlobCreated event, the blobs webhook queues it and batch_score runs;
the results are compared row by row with the HTTP endpoint's answer for the same rows.
"""
from __future__ import annotations

import io
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest

from devhost.azurite import Azurite
from devhost.bindingdata import blob_uri
from devhost.eventgrid import BLOBS_EXTENSION, WEBHOOK_PATH, CreatedBlob, EventGridPublisher, blob_created_event
from devhost.host import DevHost
from examples.datasets import breast_cancer
from shared import batch_scoring, paths, prediction_segments
from shared.errors import NotFound
from shared.lifecycle.records import RunStatus
from shared.settings import Settings
from shared.storage import AzureStorage
from tests.e2e.support import drop, example_spec, upload, wait_for_run
from tests.fixtures.devhost_support import wait_for


@pytest.fixture(scope="module")
def gateway(azurite: Azurite) -> AzureStorage:
    return AzureStorage.from_settings(Settings.from_env({"AzureWebJobsStorage": azurite.connection_string}))


@pytest.fixture(scope="module")
def features() -> pd.DataFrame:
    return breast_cancer().drop(columns=["diagnosis"])


@pytest.fixture(scope="module")
def model(app_host: DevHost, gateway: AzureStorage) -> str:
    """A promoted breast-cancer champion under a fresh name."""
    name = f"bcb-{uuid.uuid4().hex[:8]}"
    upload(gateway, example_spec("breast-cancer", name))
    drop(gateway, name, "data.csv", breast_cancer())
    assert wait_for_run(gateway, name, "data.csv").status == RunStatus.PROMOTED
    return name


def _results(gateway: AzureStorage, path: str) -> pd.DataFrame | None:
    try:
        data = gateway.read(paths.SCORING_RESULTS, path).data
    except NotFound:
        return None
    options = pa_csv.ConvertOptions(column_types={"prediction": pa.string(), "prediction_id": pa.string()})
    return pa_csv.read_csv(io.BytesIO(data), convert_options=options).to_pandas()


def completed(gateway: AzureStorage, marker: str) -> bool:
    try:
        return bool(gateway.read_json(paths.MLOPS, marker)[0].get("status") == "completed")
    except NotFound:
        return False


def test_a_dropped_csv_is_scored_like_the_http_endpoint_and_a_redelivery_is_not_scored_again(
    app_host: DevHost, api: Any, gateway: AzureStorage, model: str, features: pd.DataFrame,
    caplog: pytest.LogCaptureFixture,
) -> None:
    rows = features.sample(300, random_state=1).reset_index(drop=True)
    path = f"{model}/march.csv"
    etag = gateway.write(paths.SCORING_REQUESTS, path, rows.to_csv(index=False).encode())
    wait_for(lambda: gateway.exists(paths.SCORING_RESULTS, f"{path}.predictions.csv"), "the results file", timeout=60)
    got = _results(gateway, f"{path}.predictions.csv")
    assert got is not None

    answer = api("POST", f"models/{model}/score", json={"dataframe_split": {
        "columns": list(rows.columns), "data": rows.to_numpy().tolist()}})
    assert answer.status_code == 200, answer.text
    expected = answer.json()
    assert got.prediction.tolist() == [str(p) for p in expected["predictions"]]
    for cls in expected["probabilities"][0]:
        assert got[f"probability_{cls}"].tolist() == [p[cls] for p in expected["probabilities"]]
    rid = batch_scoring.request_id(path, etag)
    assert got.prediction_id.tolist() == [f"{rid}-{i}" for i in range(300)]
    assert set(got.model_version) == {expected["model"]["version"]}
    # the version is marked completed once its log manifest is written (the rows: server-side copies of the file
    # and its results, on Azurite as on Azure)
    wait_for(lambda: completed(gateway, paths.batch_marker(path, etag)), "the function to finish", timeout=60)
    [manifest] = [n.name for n in gateway.list(paths.PREDICTIONS, f"{model}/") if n.name.endswith(f"{rid}.file.json")]
    rows = list(prediction_segments.blob_rows(manifest, gateway.read(paths.PREDICTIONS, manifest).data, gateway))
    logged = [n for n in gateway.list(paths.PREDICTIONS, f"{model}/") if rid in n.name]  # the manifest, the copies
    assert [row["prediction_id"] for row in rows] == got.prediction_id.tolist()
    assert [row["outputs"]["predictions"] for row in rows] == expected["predictions"]

    # Event Grid delivers at least once: the same event again finds the version completed
    results_etag = gateway.read(paths.SCORING_RESULTS, f"{path}.predictions.csv").etag
    props = gateway.list(paths.SCORING_REQUESTS, path)[0]
    event = blob_created_event(CreatedBlob(paths.SCORING_REQUESTS, path, props.etag, "text/csv", props.size,
                                           blob_uri(gateway, paths.SCORING_REQUESTS, path)),
                               account="devstoreaccount1", now=datetime.now(UTC))
    publisher = EventGridPublisher(app_host.system_keys.get(f"{BLOBS_EXTENSION}_extension"))
    publisher.endpoint = f"{app_host.url}/{WEBHOOK_PATH}/{BLOBS_EXTENSION}"
    with caplog.at_level(logging.INFO):
        assert publisher.publish("Host.Functions.batch_score", [event]) == 202
        wait_for(lambda: any("'duplicate'" in r.getMessage() and path in r.getMessage() for r in caplog.records),
                 "the redelivered event to be answered as a duplicate", timeout=30)
    assert gateway.read(paths.SCORING_RESULTS, f"{path}.predictions.csv").etag == results_etag
    assert [n for n in gateway.list(paths.PREDICTIONS, f"{model}/") if rid in n.name] == logged


def test_a_pinned_version_and_a_parquet_file_are_scored_into_parquet(
    gateway: AzureStorage, model: str, features: pd.DataFrame,
) -> None:
    sink = io.BytesIO()
    features.head(50).to_parquet(sink, index=False)
    gateway.write(paths.SCORING_REQUESTS, f"{model}/v1/april.parquet", sink.getvalue())
    wait_for(lambda: gateway.exists(paths.SCORING_RESULTS, f"{model}/v1/april.parquet.predictions.parquet"),
             "the parquet results", timeout=60)
    table = pd.read_parquet(io.BytesIO(gateway.read(paths.SCORING_RESULTS,
                                                    f"{model}/v1/april.parquet.predictions.parquet").data))
    assert len(table) == 50 and set(table.model_version) == {1}


def test_a_bad_file_gets_a_rejection_report(gateway: AzureStorage, model: str) -> None:
    gateway.write(paths.SCORING_REQUESTS, f"{model}/bad.csv", b"mean_radius,worst_area\n1,2\n")

    def report() -> dict[str, Any] | None:
        try:
            return dict(gateway.read_json(paths.SCORING_RESULTS, f"{model}/bad.csv.rejection.json")[0])
        except NotFound:
            return None

    found = wait_for(report, "the rejection report", timeout=60)
    [problem] = found["problems"]
    assert problem["check"] == "columns" and problem["message"].startswith("missing columns ['mean_texture'")
    assert not gateway.exists(paths.SCORING_RESULTS, f"{model}/bad.csv.predictions.csv")
