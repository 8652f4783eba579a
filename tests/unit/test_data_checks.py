"""Data checks report every problem with counts; preparation and hashing are canonical; profiles."""
from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pandas as pd
import pytest

from shared.data_checks import check_dataset, load_dataset, prepare
from shared.errors import DataRejected
from shared.profile import profile_dataset
from shared.spec import TrainingSpec, parse_spec


def make_spec(**changes: Any) -> TrainingSpec:
    data: dict[str, Any] = {
        "name": "maint",
        "task": "classification",
        "target": "failure",
        "features": [
            {"name": "machine_type", "kind": "categorical", "allowed": ["L", "M", "H"]},
            {"name": "torque", "kind": "numeric", "min": 0, "max": 100},
            {"name": "speed", "kind": "numeric"},
        ],
        "estimator": {"type": "logistic_regression"},
        "data_checks": {"min_rows": 10, "max_null_fraction": 0.2},
    }
    data.update(changes)
    return parse_spec(json.dumps(data), "spec.json")


def clean_frame(rows: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "machine_type": rng.choice(["L", "M", "H"], size=rows).astype(object),
        "torque": rng.uniform(0, 100, rows),
        "speed": rng.normal(1500, 100, rows),
        "failure": np.arange(rows) % 2,
        "unused": "x",
    })
    frame.loc[3, "machine_type"] = None
    frame.loc[5, "torque"] = np.nan
    return frame


def by_check(report: Any) -> dict[tuple[str | None, str], dict[str, Any]]:
    return {(p["column"], p["check"]): p for p in report.to_dict()["problems"]}


def test_clean_data_passes() -> None:
    assert check_dataset(clean_frame(), make_spec()) is None


def test_every_problem_is_found_with_counts() -> None:
    frame = clean_frame(rows=8).astype({"torque": object, "machine_type": object})
    frame = frame.drop(columns=["speed"])
    frame.loc[0:2, "machine_type"] = ["X", "X", "Q"]
    frame.loc[3, "torque"] = "broken"
    frame.loc[4, "torque"] = 150.0
    frame.loc[6, "torque"] = -1.0
    frame.loc[7, "failure"] = None
    report = check_dataset(frame, make_spec())
    assert report is not None
    problems = by_check(report)
    assert set(problems) == {
        (None, "min_rows"), ("speed", "missing_column"), ("machine_type", "unknown_category"),
        ("torque", "non_numeric"), ("torque", "out_of_range"), ("failure", "target_nulls"),
    }
    assert problems[("machine_type", "unknown_category")]["count"] == 3
    assert problems[("machine_type", "unknown_category")]["examples"] == ["X", "Q"]
    assert problems[("torque", "non_numeric")]["count"] == 1
    assert problems[("torque", "non_numeric")]["examples"] == ["broken"]
    assert problems[("torque", "out_of_range")]["count"] == 2
    assert problems[("failure", "target_nulls")]["count"] == 1
    assert problems[(None, "min_rows")]["count"] == 8
    wire = report.to_dict()
    assert wire["status"] == "rejected" and wire["rows"] == 8
    assert "unused" in wire["columns"]
    json.dumps(wire)  # the wire shape must serialise as is


def test_null_fraction_uses_the_per_column_override() -> None:
    frame = clean_frame(rows=20)
    frame.loc[0:5, "speed"] = np.nan  # 6 of 20 = 0.3
    assert by_check(check_dataset(frame, make_spec()))[("speed", "null_fraction")]["count"] == 6
    relaxed = make_spec(data_checks={"min_rows": 10, "per_column": {"speed": 0.5}})
    assert check_dataset(frame, relaxed) is None


def test_single_class_target_is_rejected() -> None:
    frame = clean_frame()
    frame["failure"] = 0
    problem = by_check(check_dataset(frame, make_spec()))[("failure", "min_classes")]
    assert problem["count"] == 1


def test_reserved_missing_marker_in_the_data_is_rejected() -> None:
    frame = clean_frame()
    frame.loc[0, "machine_type"] = "__missing__"
    report = check_dataset(frame, make_spec(features=[
        {"name": "machine_type", "kind": "categorical"}, {"name": "torque", "kind": "numeric"}]))
    assert ("machine_type", "reserved_value") in by_check(report)


def test_prepare_orders_columns_and_normalises_dtypes() -> None:
    frame = clean_frame()[["failure", "speed", "torque", "machine_type", "unused"]]
    prepared = prepare(frame, make_spec())
    assert list(prepared.frame.columns) == ["machine_type", "torque", "speed", "failure"]
    assert prepared.frame["torque"].dtype == np.float64
    assert prepared.frame["machine_type"].dtype == object
    assert prepared.frame["machine_type"][3] is None
    assert prepared.frame["failure"].dtype == np.int64
    assert prepared.rows == 40


def test_prepare_refuses_data_that_fails_the_checks() -> None:
    with pytest.raises(DataRejected) as caught:
        prepare(clean_frame(rows=5), make_spec())
    assert caught.value.status == 422
    assert isinstance(caught.value.details, dict)
    assert caught.value.details["problems"][0]["check"] == "min_rows"


def encodings(frame: pd.DataFrame) -> dict[str, bytes]:
    parquet = io.BytesIO()
    frame.to_parquet(parquet, index=False)
    # json.dumps, not DataFrame.to_json: pandas writes at most 15 significant digits.
    jsonl = "\n".join(
        json.dumps({k: (None if isinstance(v, float) and np.isnan(v) else v)
                    for k, v in row.items()})
        for row in frame.astype(object).to_dict(orient="records")).encode()
    return {"data.csv": frame.to_csv(index=False).encode(), "data.parquet": parquet.getvalue(),
            "data.jsonl": jsonl, "other-name.ndjson": jsonl}


def test_same_rows_hash_the_same_in_every_format() -> None:
    frame = clean_frame()
    frame["torque"] = frame["torque"] * (1 + 1e-13)  # full-precision floats
    spec = make_spec()
    prepared = {name: prepare(load_dataset(data, name), spec)
                for name, data in encodings(frame).items()}
    assert len({p.data_hash for p in prepared.values()}) == 1
    assert len({p.parquet_bytes for p in prepared.values()}) == 1


def test_changing_one_value_changes_the_hash() -> None:
    frame = clean_frame()
    spec = make_spec()
    before = prepare(frame, spec).data_hash
    speed = frame["speed"].to_numpy(copy=True)
    speed[7] = np.nextafter(speed[7], np.inf)
    frame["speed"] = speed
    assert prepare(frame, spec).data_hash != before


def test_prepared_parquet_round_trips() -> None:
    spec = make_spec()
    prepared = prepare(clean_frame(), spec)
    again = prepare(load_dataset(prepared.parquet_bytes, "x.parquet"), spec)
    assert again.data_hash == prepared.data_hash


@pytest.mark.parametrize(("name", "data"), [
    ("data.xlsx", b"PK..."),
    ("data.parquet", b"definitely not parquet"),
    ("data.jsonl", b'{"a": 1}\n[1, 2]\n'),
    ("data.csv", b"\xff\xfe\x00bad"),
])
def test_unreadable_files_are_rejected_with_a_report(name: str, data: bytes) -> None:
    with pytest.raises(DataRejected) as caught:
        load_dataset(data, name)
    report = caught.value.details
    assert isinstance(report, dict)
    assert report["status"] == "rejected" and report["problems"][0]["check"] == "parse"
    assert name in caught.value.message


def test_profile_has_explicit_bins_and_counts_every_row() -> None:
    spec = make_spec()
    frame = prepare(clean_frame(rows=200), spec).frame
    profile = profile_dataset(frame, spec)
    json.dumps(profile, allow_nan=False)
    torque = profile["features"]["torque"]
    assert torque["nulls"] == 1 and torque["count"] == 199
    assert torque["bin_edges"] == sorted(torque["bin_edges"]) and len(torque["bin_edges"]) == 9
    assert len(torque["bin_counts"]) == 10 and sum(torque["bin_counts"]) == 199
    assert torque["min"] <= torque["quantiles"]["0.5"] <= torque["max"]
    machine = profile["features"]["machine_type"]
    assert machine["nulls"] == 1 and sum(machine["counts"].values()) == 199
    assert profile["target"]["counts"] == {"0": 100, "1": 100}


def test_profile_folds_rare_categories_into_other() -> None:
    spec = make_spec(features=[{"name": "machine_type", "kind": "categorical"},
                               {"name": "torque", "kind": "numeric"}])
    frame = clean_frame(rows=60)
    frame["machine_type"] = [f"m{i % 30}" for i in range(60)]
    machine = profile_dataset(frame, spec)["features"]["machine_type"]
    assert len(machine["counts"]) == 21 and machine["counts"]["__other__"] == 20
    assert machine["distinct"] == 30


# Pinned before PreparedData.extra existed: the hash covers the canonical frame only.
CLEAN_FRAME_HASH = "6efd2ce0bcf7bac656de87b931cf260ae6be2e8778e96afcb9825f1e188ce100"


def test_extra_columns_never_change_the_data_hash() -> None:
    spec = make_spec()
    with_unused = clean_frame()
    more = with_unused.assign(batch=np.arange(40) % 3, note=[f"n{i}" for i in range(40)])
    hashes = {prepare(df, spec).data_hash for df in (with_unused, with_unused.drop(columns=["unused"]), more)}
    assert hashes == {CLEAN_FRAME_HASH}


def test_prepare_keeps_source_columns_outside_the_spec_beside_the_frame() -> None:
    source = clean_frame().assign(batch=np.arange(40) % 3)
    source.index = source.index + 100  # row-aligned by position, not by the source's index
    prepared = prepare(source, make_spec())
    assert list(prepared.extra.columns) == ["unused", "batch"]
    assert len(prepared.extra) == prepared.rows == 40
    assert prepared.extra.index.equals(prepared.frame.index)
    assert prepared.extra["batch"].tolist() == (np.arange(40) % 3).tolist()
    assert prepared.extra["batch"].dtype == np.int64 and prepared.extra["unused"].tolist() == ["x"] * 40
    assert prepared.extra_parquet_bytes is not None
    stored = pd.read_parquet(io.BytesIO(prepared.extra_parquet_bytes))
    assert stored["batch"].tolist() == prepared.extra["batch"].tolist()
    assert stored["unused"].tolist() == prepared.extra["unused"].tolist()
    assert prepare(source, make_spec()).extra_parquet_bytes == prepared.extra_parquet_bytes


def test_without_extra_columns_extra_is_empty_with_the_row_count() -> None:
    prepared = prepare(clean_frame().drop(columns=["unused"]), make_spec())
    assert prepared.extra.columns.empty and len(prepared.extra) == 40
    assert prepared.extra_parquet_bytes is None


def test_an_extra_column_arrow_cannot_type_is_stored_as_text() -> None:
    lines = [json.dumps({"machine_type": "L", "torque": float(i), "speed": 1.0, "failure": i % 2,
                         "mixed": i if i % 2 else f"v{i}"}) for i in range(12)]
    prepared = prepare(load_dataset("\n".join(lines).encode(), "data.jsonl"), make_spec())
    assert prepared.extra["mixed"].tolist()[:3] == ["v0", 1, "v2"]  # as loaded
    assert prepared.extra_parquet_bytes is not None
    stored = pd.read_parquet(io.BytesIO(prepared.extra_parquet_bytes))
    assert stored["mixed"].tolist()[:3] == ["v0", "1", "v2"]


# -- repeated column names and non-finite values ---------------------------------------------------


def small_spec(task: str = "regression") -> TrainingSpec:
    data = {"name": "small", "task": task, "target": "y", "features": [{"name": "x", "kind": "numeric"}],
            "estimator": {"type": "ridge" if task == "regression" else "logistic_regression"},
            "data_checks": {"min_rows": 1}}
    return parse_spec(json.dumps(data), "spec.json")


def parquet_with_names(names: list[str]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.table([pa.array([1, 2, 3]) for _ in names], names=names), buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(("filename", "data", "column", "count", "columns"), [
    ("d.csv", b"x,x,y\n1,2,3\n", "x", 2, ["x", "x", "y"]),  # pandas would load them as x, x.1
    ("d.csv", b"x,y,x,x\n1,2,3,4\n", "x", 3, ["x", "y", "x", "x"]),
    ("d.csv", b'\n"x",x,y\n1,2,3\n', "x", 2, ["x", "x", "y"]),  # quoted, after a blank line
    ("d.parquet", parquet_with_names(["x", "y", "x"]), "x", 2, ["x", "y", "x"]),
    ("d.jsonl", b'{"x": 1, "y": 2}\n{"x": 1, "x": 5, "y": 2}\n', "x", 2, ["x", "y"]),
])
def test_repeated_column_names_are_rejected_before_pandas_renames_them(
        filename: str, data: bytes, column: str, count: int, columns: list[str]) -> None:
    with pytest.raises(DataRejected) as caught:
        load_dataset(data, filename)
    report = caught.value.details
    assert isinstance(report, dict) and caught.value.status == 422
    [problem] = report["problems"]
    assert (problem["check"], problem["column"], problem["count"]) == ("duplicate_columns", column, count)
    assert f"column={column} appears {count} times" in problem["message"] and filename in problem["message"]
    assert report["columns"] == columns and report["rows"] >= 1
    json.dumps(report, allow_nan=False)


def test_a_header_that_really_has_x_and_x_1_is_not_a_repeat() -> None:
    frame = load_dataset(b"x,x.1,y\n1,2,3\n", "d.csv")
    assert list(frame.columns) == ["x", "x.1", "y"]
    assert check_dataset(frame, small_spec()) is None


def test_a_frame_with_repeated_columns_is_rejected_by_check_dataset_too() -> None:
    frame = pd.DataFrame([[1.0, 2.0, 3.0]], columns=["x", "x", "y"])
    report = check_dataset(frame, small_spec())
    assert report is not None
    assert [(p.check, p.column, p.count) for p in report.problems] == [("duplicate_columns", "x", 2)]


BIG_INT = "1" + "0" * 400  # beyond float64: float() overflows, pandas' to_numeric raises


@pytest.mark.parametrize(("filename", "data", "task", "column", "count", "rows"), [
    ("d.csv", b"x,y\n1,1\ninf,2\n3,3\n", "regression", "x", 1, [2]),
    ("d.csv", b"x,y\n-inf,1\n2,2\n-inf,3\n", "regression", "x", 2, [1, 3]),
    ("d.csv", b"x,y\n1e999,1\n2,2\n", "regression", "x", 1, [1]),
    ("d.csv", b"x,y\nInfinity,1\n2,2\n", "regression", "x", 1, [1]),
    ("d.csv", b"x,y\n1,1\n2,inf\n3,-1e999\n", "regression", "y", 2, [2, 3]),
    ("d.jsonl", b'{"x": 1e999, "y": 1}\n{"x": 2, "y": 2}\n', "regression", "x", 1, [1]),
    ("d.jsonl", f'{{"x": 1, "y": 1}}\n{{"x": {BIG_INT}, "y": 2}}\n'.encode(), "regression", "x", 1, [2]),
    ("d.jsonl", f'{{"x": 1, "y": -{BIG_INT}}}\n{{"x": 2, "y": 2}}\n'.encode(), "regression", "y", 1, [1]),
    ("d.csv", b"x,y\n1,0\n2,1\n3,inf\n", "classification", "y", 1, [3]),
    ("d.jsonl", f'{{"x": 1, "y": 0}}\n{{"x": 2, "y": {BIG_INT}}}\n{{"x": 3, "y": 1}}\n'.encode(),
     "classification", "y", 1, [2]),
    # A whole-number label becomes an int64 class: found by the fuzzer, the cast made it another number.
    ("d.csv", b"x,y\n1,0\n2,1\n3,-9223372036854776833\n", "classification", "y", 1, [3]),
])
def test_infinite_and_overflowing_values_are_rejected_with_column_count_and_rows(
        filename: str, data: bytes, task: str, column: str, count: int, rows: list[int]) -> None:
    report = check_dataset(load_dataset(data, filename), small_spec(task))
    assert report is not None
    wire = report.to_dict()
    json.dumps(wire, allow_nan=False)  # inf and huge ints are shown as text
    non_finite = [p for p in wire["problems"] if p["check"] == "non_finite"]
    assert [(p["column"], p["count"], p["rows"]) for p in non_finite] == [(column, count, rows)]
    assert f"column={column}" in non_finite[0]["message"] and str(rows) in non_finite[0]["message"]
    with pytest.raises(DataRejected):
        prepare(load_dataset(data, filename), small_spec(task))


def test_an_inf_value_is_not_also_reported_out_of_range() -> None:
    spec = make_spec()
    frame = clean_frame()
    frame["torque"] = frame["torque"].astype(float)
    frame.loc[2, "torque"] = np.inf
    problems = by_check(check_dataset(frame, spec))
    assert set(problems) == {("torque", "non_finite")}
    assert problems[("torque", "non_finite")]["rows"] == [3] and problems[("torque", "non_finite")]["count"] == 1


def test_a_text_label_spelled_inf_is_a_class_not_an_overflow() -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": pd.Series(["cat", "inf", "dog"], dtype=object)})
    assert check_dataset(frame, small_spec("classification")) is None


def test_problems_without_rows_or_examples_keep_the_old_wire_shape() -> None:
    problem = by_check(check_dataset(clean_frame(rows=5), make_spec()))[(None, "min_rows")]
    assert set(problem) == {"column", "check", "message", "count"}
