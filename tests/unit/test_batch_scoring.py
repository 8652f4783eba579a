"""Batch scoring of files (shared.batch_scoring) on the in-memory storage: results, log, rejections, once per ETag."""
from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from shared import batch_scoring, paths, prediction_log, prediction_segments
from shared.errors import NotFound, Unavailable
from shared.memory_storage import MemoryStorage
from shared.monitoring.window import iter_log_chunks
from shared.replay import recent_rows
from shared.scoring import LoadedModel, ModelCache, predict, read_request
from tests.unit import onnx_fixtures as fx

MODELS = {("churn", 1): fx.classifier(), ("churn", 2): fx.classifier(seed=1), ("wear", 1): fx.regressor()}
CHUNK = 2048  # bytes of CSV / JSON Lines per chunk: several chunks per test file


def _resolve(model: str, alias: str) -> tuple[int, str]:
    if model == "nochamp":
        raise Unavailable(f"model (name={model}) has no champion yet")
    if not any(m == model for m, _ in MODELS):
        raise NotFound(f"model (name={model}) not found")
    return 1, "etag"


def _fetch(model: str, version: int) -> tuple[bytes, str]:
    if (model, version) not in MODELS:
        raise NotFound(f"model version (name={model}, version={version}) not found")
    data = MODELS[(model, version)]
    return data, fx.sha256(data)


@pytest.fixture
def storage() -> MemoryStorage:
    return MemoryStorage()


@pytest.fixture
def cache() -> ModelCache:
    return ModelCache(_resolve, _fetch, 60.0)


def frame(rows: int = 300, seed: int = 0) -> pd.DataFrame:
    out = fx.training_frame(rows, seed)[list(fx.FEATURES)].copy()
    out.loc[::11, "torque"] = np.nan  # missing values, imputed
    return out


def csv_bytes(df: pd.DataFrame) -> bytes:
    return df.to_csv(index=False).encode()


def parquet_bytes(df: pd.DataFrame) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), sink)
    return sink.getvalue()


def jsonl_bytes(df: pd.DataFrame) -> bytes:
    return df.to_json(orient="records", lines=True).encode()


def drop(storage: MemoryStorage, path: str, data: bytes) -> str:
    return storage.write(paths.SCORING_REQUESTS, path, data)


def score(storage: MemoryStorage, cache: ModelCache, path: str, **kwargs: Any) -> dict[str, Any]:
    return batch_scoring.score_file(storage, cache, path, chunk_bytes=CHUNK, **kwargs)


def results(storage: MemoryStorage, path: str) -> pd.DataFrame:
    data = storage.read(paths.SCORING_RESULTS, path).data
    if path.endswith(".parquet"):
        return pq.read_table(io.BytesIO(data)).to_pandas()
    return pa_csv.read_csv(io.BytesIO(data), convert_options=pa_csv.ConvertOptions(
        column_types={"prediction": pa.string(), "prediction_id": pa.string()})).to_pandas()


def http_answer(model: LoadedModel, df: pd.DataFrame) -> dict[str, Any]:
    """What POST /score answers for the same rows (JSON records, nulls for NaN)."""
    records = [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
               for r in df.to_dict(orient="records")]
    request = read_request(json.dumps({"dataframe_records": records}).encode(), None, model.signature, 10**9)
    return predict(model, request.inputs)


def http_request_inputs(model: LoadedModel, df: pd.DataFrame) -> list[dict[str, Any]]:
    """Each row's inputs as the HTTP path's JSON line logs them (the model's values; null for a missing one)."""
    records = [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
               for r in df.to_dict(orient="records")]
    request = read_request(json.dumps({"dataframe_records": records}).encode(), None, model.signature, 10**9)
    lines = prediction_log.columnar_lines("churn", 1, "r", 0.0, ["x"] * len(df), request.inputs,
                                          {"predictions": np.zeros(len(df))})
    return [json.loads(line)["inputs"] for line in lines.splitlines()]


def log_blobs(storage: MemoryStorage) -> list[str]:
    """The prediction log's blobs (a scored file's manifest among them), not the copies a manifest names."""
    return [name for name in storage.blob_names(paths.PREDICTIONS)
            if name.split("/")[1] != batch_scoring.FILES_FOLDER]


def log_lines(storage: MemoryStorage) -> list[dict[str, Any]]:
    """Every logged row, in blob name order, as its JSON line reads (scored files' and JSON Lines alike)."""
    return [row for name in log_blobs(storage)
            for row in prediction_segments.blob_rows(name, storage.read(paths.PREDICTIONS, name).data, storage)]


def test_a_csv_file_is_scored_chunk_by_chunk_with_the_http_endpoint_s_predictions(
    storage: MemoryStorage, cache: ModelCache,
) -> None:
    df = frame(400)
    etag = drop(storage, "churn/march.csv", csv_bytes(df))
    outcome = score(storage, cache, "churn/march.csv")
    rid = batch_scoring.request_id("churn/march.csv", etag)
    assert outcome == {"outcome": "scored", "path": "churn/march.csv", "rows": 400, "model": "churn", "version": 1,
                       "request_id": rid, "results": "scoring-results/churn/march.csv.predictions.csv"}
    got = results(storage, "churn/march.csv.predictions.csv")
    expected = http_answer(cache.get("churn"), df)
    assert list(got.columns) == ["prediction_id", "prediction", "probability_fail", "probability_ok", "model_version"]
    assert got.prediction_id.tolist() == [f"{rid}-{i}" for i in range(400)]
    assert got.prediction.tolist() == expected["predictions"]
    assert got.probability_ok.tolist() == [p["ok"] for p in expected["probabilities"]]
    assert set(got.model_version) == {1}
    lines = log_lines(storage)
    [manifest] = log_blobs(storage)  # the rows are server-side copies of the file and its results
    assert manifest.endswith(f"-{rid}.file.json")
    assert storage.read(paths.PREDICTIONS, f"churn/files/{rid}/input.csv").data == csv_bytes(df)
    assert storage.read(paths.PREDICTIONS, f"churn/files/{rid}/results.csv").data == storage.read(
        paths.SCORING_RESULTS, "churn/march.csv.predictions.csv").data
    assert [line["prediction_id"] for line in lines] == got.prediction_id.tolist()
    assert [line["outputs"]["predictions"] for line in lines] == expected["predictions"]
    assert [line["outputs"]["probabilities"] for line in lines] == expected["probabilities"]
    model = cache.get("churn")
    seen = http_request_inputs(model, df)  # the inputs as the model saw them, as the HTTP path logs them
    assert [line["inputs"] for line in lines] == seen
    assert lines[0]["inputs"]["torque"] is None and lines[0]["request_id"] == rid  # NaN logged as null
    assert {line["version"] for line in lines} == {1} and {line["model"] for line in lines} == {"churn"}


@pytest.mark.parametrize("name, encode, result", [
    ("april.parquet", parquet_bytes, "april.parquet.predictions.parquet"),
    ("april.jsonl", jsonl_bytes, "april.jsonl.predictions.csv"),
])
def test_parquet_and_json_lines_files_give_the_same_predictions_as_csv(
    storage: MemoryStorage, cache: ModelCache, name: str, encode: Any, result: str,
) -> None:
    df = frame(250, seed=4)
    drop(storage, "churn/ref.csv", csv_bytes(df))
    drop(storage, f"churn/{name}", encode(df))
    assert score(storage, cache, "churn/ref.csv")["outcome"] == "scored"
    assert score(storage, cache, f"churn/{name}")["rows"] == 250
    ours, ref = results(storage, f"churn/{result}"), results(storage, "churn/ref.csv.predictions.csv")
    assert ours.prediction.tolist() == ref.prediction.tolist()
    assert np.array_equal(ours.probability_fail.to_numpy(), ref.probability_fail.to_numpy())


def test_a_version_folder_pins_the_version_and_a_regressor_has_no_probabilities(
    storage: MemoryStorage, cache: ModelCache,
) -> None:
    df = frame(50)
    drop(storage, "churn/v2/x.csv", csv_bytes(df))
    assert score(storage, cache, "churn/v2/x.csv")["version"] == 2
    got = results(storage, "churn/v2/x.csv.predictions.csv")
    assert got.prediction.tolist() == http_answer(cache.get("churn", version=2), df)["predictions"]
    drop(storage, "wear/y.csv", csv_bytes(df))
    assert score(storage, cache, "wear/y.csv")["outcome"] == "scored"
    assert list(results(storage, "wear/y.csv.predictions.csv").columns) == ["prediction_id", "prediction",
                                                                             "model_version"]


def test_the_same_version_is_scored_once_and_a_redrop_again(storage: MemoryStorage, cache: ModelCache) -> None:
    drop(storage, "churn/a.csv", csv_bytes(frame(100)))
    assert score(storage, cache, "churn/a.csv")["outcome"] == "scored"
    logged = storage.blob_names(paths.PREDICTIONS)
    assert score(storage, cache, "churn/a.csv")["outcome"] == "duplicate"
    assert storage.blob_names(paths.PREDICTIONS) == logged  # nothing logged twice
    drop(storage, "churn/a.csv", csv_bytes(frame(120, seed=2)))  # a new ETag
    assert score(storage, cache, "churn/a.csv")["rows"] == 120
    assert len(log_lines(storage)) == 220


def test_a_crash_mid_way_reruns_under_the_same_names_so_nothing_is_logged_twice(
    storage: MemoryStorage, cache: ModelCache,
) -> None:
    drop(storage, "churn/a.csv", csv_bytes(frame(300)))

    def crash_on_the_manifest(op: str, container: str, path: str) -> None:
        if op == "write" and container == paths.PREDICTIONS:
            raise RuntimeError("worker killed")

    storage.fault = crash_on_the_manifest
    with pytest.raises(RuntimeError):
        score(storage, cache, "churn/a.csv")
    copies = storage.blob_names(paths.PREDICTIONS)
    assert len(copies) == 2 and not log_lines(storage)  # the file and its results copied, no manifest: no rows
    storage.fault = None
    assert score(storage, cache, "churn/a.csv")["outcome"] == "scored"
    lines = log_lines(storage)
    assert len(lines) == len({line["prediction_id"] for line in lines}) == 300
    assert set(copies) < set(storage.blob_names(paths.PREDICTIONS))  # the same names again, and the manifest


@pytest.mark.parametrize("path, data, check, message", [
    ("churn/x.csv", b"torque,type\n1,L\n", "columns",
     "missing columns ['speed']; the model expects ['torque', 'speed', 'type']"),
    ("churn/x.txt", b"torque,speed,type\n1,2,L\n", "format", "file 'x.txt' has no known extension"),
    ("churn/x.csv", b"torque,speed,type\n", "rows", "the file has no rows to score"),
    ("churn/x.parquet", b"not parquet", "format", "the file cannot be read as Parquet"),
    ("churn/v9/x.csv", b"torque,speed,type\n1,2,L\n", "model",
     "model version (name=churn, version=9) not found"),
    ("nochamp/x.csv", b"torque,speed,type\n1,2,L\n", "model", "model (name=nochamp) has no champion yet; drop"),
    ("churn/x.csv", b"torque,torque,speed,type\n1,1,2,L\n", "columns", "duplicate columns ['torque']"),
])
def test_a_file_that_cannot_be_scored_gets_a_rejection_report_and_no_results(
    storage: MemoryStorage, cache: ModelCache, path: str, data: bytes, check: str, message: str,
) -> None:
    etag = drop(storage, path, data)
    outcome = score(storage, cache, path)
    assert outcome["outcome"] == "rejected"
    report, _ = storage.read_json(paths.SCORING_RESULTS, paths.batch_rejection(path))
    assert report["status"] == "rejected" and report["etag"] == etag
    assert report["source_blob"] == f"{paths.SCORING_REQUESTS}/{path}"
    [problem] = report["problems"]
    assert problem["check"] == check and problem["message"].startswith(message), problem
    assert not [n for n in storage.blob_names(paths.SCORING_RESULTS) if ".predictions." in n]
    assert score(storage, cache, path)["outcome"] == "duplicate"  # the rejected version is not retried


def test_a_bad_value_deep_in_the_file_is_reported_with_its_row_in_the_file_and_its_logged_rows_are_deleted(
    storage: MemoryStorage, cache: ModelCache,
) -> None:
    text = "torque,speed,type\n" + "40.5,1500,L\n" * 1500 + "40.5,inf,L\n"
    drop(storage, "churn/bad.csv", text.encode())
    copied: list[str] = []
    storage.fault = lambda op, container, path: copied.append(path) if (op, container) == (
        "copy", paths.PREDICTIONS) else None
    outcome = score(storage, cache, "churn/bad.csv")
    assert outcome["problems"] == [{"check": "values", "message": (
        "column 'speed' row 1500: expected a finite number that fits float32, got inf; NaN and infinity are "
        "refused, send null (JSON) or an empty cell (CSV) for a missing value")}]
    assert copied  # the file was copied into the log before it was read ...
    assert not storage.blob_names(paths.PREDICTIONS)  # ... and deleted with the rejection


@pytest.mark.parametrize("first, second, check", [
    ("40.5,1500\n", "40.5,inf,L\n", "format"),  # a ragged row before a bad value: the ragged row is reported
    ("40.5,inf,L\n", "40.5,1500\n", "values"),
])
def test_the_file_s_first_problem_is_reported_whichever_chunk_is_scored_first(
    storage: MemoryStorage, cache: ModelCache, first: str, second: str, check: str,
) -> None:
    text = "torque,speed,type\n" + "40.5,1500,L\n" * 300 + first + "40.5,1500,L\n" * 200 + second
    drop(storage, "churn/two.csv", text.encode())
    [problem] = score(storage, cache, "churn/two.csv")["problems"]
    assert problem["check"] == check, problem
    assert check == "format" or problem["message"].startswith("column 'speed' row 300:")


def test_a_folder_that_is_no_model_name_gets_its_report_under_a_safe_name(
    storage: MemoryStorage, cache: ModelCache,
) -> None:
    drop(storage, "Bad.Model/x.csv", b"a\n1\n")
    outcome = score(storage, cache, "Bad.Model/x.csv")
    assert outcome["outcome"] == "rejected" and outcome["path"].startswith("invalid-bad-model-")
    assert "is not a model name" in outcome["problems"][0]["message"]


def test_a_results_file_of_an_older_version_goes_when_the_new_one_is_rejected(
    storage: MemoryStorage, cache: ModelCache,
) -> None:
    drop(storage, "churn/a.csv", csv_bytes(frame(20)))
    score(storage, cache, "churn/a.csv")
    drop(storage, "churn/a.csv", b"torque\n1\n")
    assert score(storage, cache, "churn/a.csv")["outcome"] == "rejected"
    assert not storage.exists(paths.SCORING_RESULTS, "churn/a.csv.predictions.csv")
    drop(storage, "churn/a.csv", csv_bytes(frame(20)))
    score(storage, cache, "churn/a.csv")
    assert not storage.exists(paths.SCORING_RESULTS, "churn/a.csv.rejection.json")


def test_a_prediction_id_column_names_the_rows_and_repeated_ids_are_refused(
    storage: MemoryStorage, cache: ModelCache,
) -> None:
    df = frame(30).assign(prediction_id=[f"order-{i}" for i in range(30)], note="ignored")
    drop(storage, "churn/ids.csv", csv_bytes(df))
    assert score(storage, cache, "churn/ids.csv")["outcome"] == "scored"
    assert results(storage, "churn/ids.csv.predictions.csv").prediction_id.tolist() == list(df.prediction_id)
    drop(storage, "churn/dup.csv", csv_bytes(df.assign(prediction_id="same")))
    message = score(storage, cache, "churn/dup.csv")["problems"][0]["message"]
    assert message == "column 'prediction_id' repeats ids ['same']; every row needs its own id"


def test_a_file_overwritten_while_it_is_read_is_left_to_the_new_version_s_event(
    storage: MemoryStorage, cache: ModelCache,
) -> None:
    drop(storage, "churn/a.csv", csv_bytes(frame(2000)))
    reads, logged = [], []

    def overwrite_during_read(op: str, container: str, path: str) -> None:
        if op == "copy" and container == paths.PREDICTIONS:
            logged.append(path)
        if op == "read" and container == paths.SCORING_REQUESTS:
            reads.append(path)
            if len(reads) == 5:
                storage.write(paths.SCORING_REQUESTS, "churn/a.csv", b"torque,speed,type\n1,2,L\n")

    storage.fault = overwrite_during_read
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(batch_scoring, "READ_BUFFER", 4096)
        assert score(storage, cache, "churn/a.csv")["outcome"] == "superseded"
    storage.fault = None
    assert not storage.exists(paths.SCORING_RESULTS, "churn/a.csv.predictions.csv")
    assert logged and not storage.blob_names(paths.PREDICTIONS)  # no results: its copy is deleted
    assert score(storage, cache, "churn/a.csv")["rows"] == 1  # the new version's own event


def test_monitoring_reads_the_batch_rows_from_the_prediction_log(storage: MemoryStorage, cache: ModelCache) -> None:
    at = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
    drop(storage, "churn/m.csv", csv_bytes(frame(500)))
    score(storage, cache, "churn/m.csv", clock=lambda: at.timestamp())
    chunks = list(iter_log_chunks(storage, "churn", 1, at - timedelta(hours=1), at + timedelta(hours=1)))
    assert sum(c.rows for c in chunks) == 500
    assert np.isnan(chunks[0].features["torque"][0])



def test_replay_takes_a_scored_file_s_newest_rows_last_row_first(storage: MemoryStorage, cache: ModelCache) -> None:
    at = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
    drop(storage, "churn/r.csv", csv_bytes(frame(700)))
    outcome = score(storage, cache, "churn/r.csv", clock=lambda: at.timestamp())
    ids = [f"{outcome['request_id']}-{i}" for i in range(700)]
    newest = recent_rows(storage, "churn", 1, 50, at + timedelta(minutes=5), 7)
    assert [row.prediction_id for row in newest] == ids[::-1][:50]
    assert [row.prediction_id for row in recent_rows(storage, "churn", 1, 10_000, at + timedelta(minutes=5), 7)] == \
        ids[::-1]
    assert not recent_rows(storage, "churn", 2, 50, at + timedelta(minutes=5), 7)  # another version's rows only


def test_a_log_sample_rate_logs_that_share_of_the_rows_and_the_same_rows_on_a_retry(
    storage: MemoryStorage, cache: ModelCache,
) -> None:
    drop(storage, "churn/s.csv", csv_bytes(frame(1000)))
    marker = paths.batch_marker("churn/s.csv", storage.read(paths.SCORING_REQUESTS, "churn/s.csv").etag)
    score(storage, cache, "churn/s.csv", log_sample_rate=0.25)
    first = [line["prediction_id"] for line in log_lines(storage)]
    assert 150 < len(first) < 350
    state, _ = storage.read_json(paths.MLOPS, marker)
    storage.write_json(paths.MLOPS, marker, {"status": "scoring", "started": state["started"]})  # crashed before done
    score(storage, cache, "churn/s.csv", log_sample_rate=0.25)
    assert [line["prediction_id"] for line in log_lines(storage)] == first
    assert len(results(storage, "churn/s.csv.predictions.csv")) == 1000  # results keep every row


def test_a_csv_with_a_bom_and_a_quoted_cell_across_lines_is_read_as_the_stdlib_reads_it(
    storage: MemoryStorage, cache: ModelCache,
) -> None:
    drop(storage, "churn/q.csv", b'\xef\xbb\xbftorque,speed,type\n40.5,1500,"L"\n22,1600,"M\nx"\n')
    assert score(storage, cache, "churn/q.csv")["rows"] == 2
    assert [line["inputs"]["type"] for line in log_lines(storage)] == ["L", "M\nx"]


def _layouts() -> dict[str, bytes]:
    """One table as CSV files laid out in the ways the fast path (blocks cut at line ends) must read exactly as a
    whole-file read does, or hand over to pyarrow's streaming reader."""
    df = frame(600, seed=3)
    lines = df.to_csv(index=False).splitlines()
    quoted_cell = df.astype({"type": object})
    quoted_cell.loc[400, "type"] = "M\nx"
    long_line = df.assign(note="")
    long_line.loc[100, "note"] = "n" * 10_000  # longer than a chunk (2 KB) and than a range (8 KB)
    return {
        "lf": "\n".join(lines).encode() + b"\n",
        "crlf": df.to_csv(index=False, lineterminator="\r\n").encode(),
        "blank lines": "\n".join(line + ("\n" if i % 50 == 0 else "") for i, line in enumerate(lines)).encode(),
        "no final line end": "\n".join(lines).encode(),
        "bom, quoted header": b'\xef\xbb\xbf"torque","speed","type"\n' + "\n".join(lines[1:]).encode() + b"\n",
        "a quoted line end mid-file": quoted_cell.to_csv(index=False).encode(),
        "a bare carriage return": ("\n".join(lines[:300]) + "\r" + "\n".join(lines[300:]) + "\n").encode(),
        "a line longer than a range": long_line.to_csv(index=False).encode(),
        "quoted categories": "\n".join(
            [lines[0]] + [f'{line.rsplit(",", 1)[0]},"{line.rsplit(",", 1)[1]}"' for line in lines[1:]]).encode(),
        "quoted categories with quotes and line ends": "\n".join([lines[0]] + [
            f'{line.rsplit(",", 1)[0]},"{line.rsplit(",", 1)[1]}{chr(34) * 2 + "q" if i % 3 else chr(10) + "x"}"'
            for i, line in enumerate(lines[1:])]).encode() + b"\n",
        "a quote inside an unquoted cell": ("\n".join(lines[:450]) + '\n40.5,1500,M"x\n' + "\n".join(lines[451:])
                                            + "\n").encode(),
    }


def _whole_file(data: bytes) -> pd.DataFrame:
    """The rows pyarrow reads from the file in one go (the reference for any way of cutting it)."""
    table = pa_csv.read_csv(io.BytesIO(data), parse_options=pa_csv.ParseOptions(newlines_in_values=True),
                            convert_options=pa_csv.ConvertOptions(
                                include_columns=["torque", "speed", "type"], null_values=[""],
                                column_types={"torque": pa.float64(), "speed": pa.float64(), "type": pa.string()},
                                strings_can_be_null=False, quoted_strings_can_be_null=False))
    return table.to_pandas()


@pytest.mark.parametrize("layout", list(_layouts()))
def test_a_csv_file_cut_into_blocks_is_read_as_pyarrow_reads_it_whole(
    storage: MemoryStorage, cache: ModelCache, layout: str,
) -> None:
    data = _layouts()[layout]
    expected_rows = _whole_file(data)
    assert len(expected_rows) == 600
    etag = drop(storage, "churn/layout.csv", data)
    outcome = score(storage, cache, "churn/layout.csv")
    assert outcome["outcome"] == "scored", outcome
    got = results(storage, "churn/layout.csv.predictions.csv")
    expected = http_answer(cache.get("churn"), expected_rows)
    rid = batch_scoring.request_id("churn/layout.csv", etag)
    assert got.prediction_id.tolist() == [f"{rid}-{i}" for i in range(600)]
    assert got.prediction.tolist() == expected["predictions"]
    # float32 maths: onnxruntime's last bit may differ between a 600-row batch and the chunks
    assert got.probability_ok.tolist() == pytest.approx([p["ok"] for p in expected["probabilities"]], rel=1e-6)
    lines = log_lines(storage)
    assert [line["prediction_id"] for line in lines] == got.prediction_id.tolist()
    assert [line["inputs"]["type"] for line in lines] == expected_rows["type"].tolist()
    assert [line["inputs"]["torque"] for line in lines] == [
        None if np.isnan(v) else float(np.float32(v)) for v in expected_rows["torque"]]


@pytest.mark.parametrize("name, encode, result", [
    ("may.csv", csv_bytes, "may.csv.predictions.csv"),
    ("may.parquet", parquet_bytes, "may.parquet.predictions.parquet"),
])
def test_results_uploaded_in_many_blocks_while_scoring_are_the_results_written_whole(
    storage: MemoryStorage, cache: ModelCache, monkeypatch: pytest.MonkeyPatch, name: str,
    encode: Callable[[pd.DataFrame], bytes], result: str,
) -> None:
    df = frame(400)
    drop(storage, f"churn/{name}", encode(df))
    score(storage, cache, f"churn/{name}")
    whole = results(storage, f"churn/{result}")
    monkeypatch.setattr(batch_scoring, "UPLOAD_BLOCK", 512)  # a block per chunk, through a two-block queue
    written: list[int] = []
    real = storage.write_chunks

    def counting(container: str, path: str, chunks: Iterable[bytes], **kwargs: Any) -> str:
        def counted() -> Iterator[bytes]:
            for chunk in chunks:
                written.append(len(chunk))
                yield chunk
        return real(container, path, counted(), **kwargs)

    monkeypatch.setattr(storage, "write_chunks", counting)
    drop(storage, f"churn/{name}", encode(df))  # a new version: scored again
    score(storage, cache, f"churn/{name}")
    assert len(written) > 3 and max(written) < 64 * 1024  # a block: what one chunk's rows encode to
    streamed = results(storage, f"churn/{result}")  # the re-drop's ids name its new version; all else is equal
    assert streamed.prediction_id.str.rsplit("-", n=1).str[1].tolist() == [str(i) for i in range(len(df))]
    pd.testing.assert_frame_equal(streamed.drop(columns="prediction_id"), whole.drop(columns="prediction_id"))


def test_a_file_rejected_after_blocks_were_uploaded_leaves_no_results(
    storage: MemoryStorage, cache: ModelCache, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(batch_scoring, "UPLOAD_BLOCK", 512)
    uploaded: list[bytes] = []
    real = storage.write_chunks

    def watched(container: str, path: str, chunks: Iterable[bytes], **kwargs: Any) -> str:
        return real(container, path, (uploaded.append(chunk) or chunk for chunk in chunks), **kwargs)

    monkeypatch.setattr(storage, "write_chunks", watched)
    text = "torque,speed,type\n" + "40.5,1500,L\n" * 1500 + "40.5,inf,L\n"  # the last chunk's problem
    drop(storage, "churn/june.csv", text.encode())
    outcome = score(storage, cache, "churn/june.csv")
    assert outcome["outcome"] == "rejected" and "row 1500" in outcome["problems"][0]["message"]
    assert len(uploaded) > 1  # earlier chunks' results went up before the bad row was met ...
    assert not storage.exists(paths.SCORING_RESULTS, "churn/june.csv.predictions.csv")  # ... never committed
