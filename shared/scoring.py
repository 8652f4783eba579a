"""Pure scoring core: parse a request, run the champion's ONNX session, cache and hot-swap sessions.

Imports only numpy, onnxruntime and the stdlib: this module is on the cold-start path of every
scoring instance, so sklearn, pandas, onnx and skl2onnx stay out (tests/unit/test_scoring.py checks);
pyarrow loads (shared.arrow_bodies) with the first Arrow/Parquet body, CSV body of ARROW_CSV_MIN_BYTES or
more, or CSV/Arrow answer; simdjson (shared.json_rows) with the first numeric JSON body of BIG_JSON_MIN_BYTES.

Request formats (JSON unless noted), one input key per body (other top-level keys are ignored, as MLflow does):
- MLflow scoring protocol: dataframe_split, dataframe_records, instances, inputs (of params, only ids is read);
- Azure ML: {"input_data": {"columns", "index", "data"}};
- plain {"data": [[...]]} in the signature's feature order, or a list of records;
- text/csv with a header row; application/vnd.apache.arrow.stream (Arrow IPC) and application/x-parquet.
Rows of plain numbers for a model whose inputs are all floats go straight into one float matrix
(_numeric_rows); every other body goes column by column through the general path, which also answers
whatever the fast paths decline, so values and messages are the same either way.
A 200 answer is JSON, or a table (CSV or Arrow IPC) when the Accept header asks for one (response_kind).
Content types follow MLflow's scoring server: charset may only be utf-8, no other parameter.
Rows in error messages are counted from 0, the first data row. Nulls (or empty CSV cells) become NaN
in numeric inputs, which the model imputes, and the signature's categorical_missing in string inputs;
NaN, Infinity and numbers too big for the input's dtype are refused alike in JSON and CSV.
The route's model name, alias and version go through shared.names before anything reads storage.

Every 200 answer carries one prediction id per row ("prediction_ids", in row order), the key delayed
ground-truth labels are joined on: the client's own, from the x-prediction-ids header (comma-separated)
or, in a JSON body, params.ids (a list of strings), else "<request id>-<row>" with rows from 0. The
request id is the x-request-id header or a fresh uuid4. Ids fit shared.names.PREDICTION_ID,
one per row and unique within the request; a request id fits the same characters in at most 100, so
its default ids fit too. Anything else is a 400 naming the problem, before the model runs.
"""
from __future__ import annotations

import base64
import csv
import hashlib
import io
import itertools
import json
import logging
import math
import os
import re
import reprlib
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from operator import itemgetter
from typing import Any, NamedTuple

import numpy as np
import onnxruntime as ort

from shared import names as name_rules
from shared.errors import (
    BadRequest,
    InvalidParameter,
    NotFound,
    PayloadTooLarge,
    PipelineError,
    Unavailable,
    UnsupportedMediaType,
)
from shared.id_text import default_id_text
from shared.prediction_log import DefaultIds

_fast_loads: Callable[[bytes], Any] | None
_Fragment: Callable[[bytes], Any] | None
_dumps: Callable[..., bytes] | None
try:  # optional: parses large bodies about 5x faster than the stdlib; same errors (ValueError subclasses)
    from orjson import OPT_SERIALIZE_NUMPY as _NUMPY_OPTION
    from orjson import Fragment as _Fragment
    from orjson import dumps as _dumps
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - depends on the deployment's requirements
    _fast_loads = _Fragment = _dumps = None
    _NUMPY_OPTION = 0

log = logging.getLogger(__name__)

SIGNATURE_KEY = "mlops.signature"
# A classifier's third output (shared.onnx_rewrite.label_index): each row's label as its position in classes.
LABEL_INDEX = "label_index"
# The packed companion graph (shared.onnx_rewrite.packed) export_onnx embeds, base64, under this metadata key:
# the same outputs from one feature-major [F, N] float64 input, for rows with no missing value.
PACKED_KEY = "mlops.packed"
PACKED_INPUT = "mlops_features"
INPUT_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs", "input_data", "data")
_INPUT_KEY_SET = frozenset(INPUT_KEYS)
_MEDIA_TYPES = {
    "application/json": "json", "text/csv": "csv", "application/csv": "csv",
    "application/vnd.apache.arrow.stream": "arrow", "application/x-parquet": "parquet",
    "application/vnd.apache.parquet": "parquet",
}
_ACCEPT_TYPES = {"text/csv": "csv", "application/csv": "csv", "application/vnd.apache.arrow.stream": "arrow",
                 "application/json": "json", "*/*": "json", "application/*": "json"}
# CSV bodies at least this big go through pyarrow's reader (imported then); smaller ones through the stdlib's,
# which answers a few rows faster than pyarrow's set-up. Both give the same arrays
# (tests/unit/test_scoring_columnar.py).
ARROW_CSV_MIN_BYTES = 16 * 1024
# Numeric dataframe_split JSON bodies at least this big go through simdjson (shared.json_rows): from ~30 rows
# of 30 numbers (7 KB) on it beats orjson and numpy (51 against 59 µs; 180 against 503 µs at 300 rows).
BIG_JSON_MIN_BYTES = 8 * 1024
_NUMPY_DTYPES: dict[str, np.dtype[Any]] = {
    "tensor(double)": np.dtype(np.float64),
    "tensor(float)": np.dtype(np.float32),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(string)": np.dtype(object),
}
_NUMBER_TYPES = frozenset({int, float})
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_CSV_MISSING = ""
# JSON's number grammar (plus '.5', '5.', a '+' and surrounding blanks, as pandas reads CSV), ASCII only.
# No part can match the same characters as another, so a long non-number fails in linear time.
_CSV_NUMBER = re.compile(r"\s*[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\s*", re.ASCII)
_CSV_INTEGER = re.compile(r"\s*[+-]?[0-9]+\s*", re.ASCII)
_NON_FINITE_WORDS = frozenset({"nan", "inf", "infinity"})
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = 40
# A request id is a names.PREDICTION_ID of at most 100 characters: it prefixes its default prediction ids
# ('<request id>-<row>'), which then fit the rule's 128 too.
_MAX_REQUEST_ID = 100
_REQUEST_ID_RULE = "1-100 characters: letters, digits, '.', '_', ':' and '-'"
IDS_HEADER = "x-prediction-ids"


class ModelArtifactError(PipelineError):
    """A stored model artifact cannot be served (broken ONNX or signature); the operator must fix it."""

    status = 500
    code = "INVALID_MODEL_ARTIFACT"


class IntegrityError(ModelArtifactError):
    """A fetched model artifact does not match the sha256 recorded in the registry."""

    code = "MODEL_INTEGRITY_ERROR"


# ---------------------------------------------------------------------------------------------
# Signature and loading


@dataclass(frozen=True)
class Feature:
    """One model input: name, spec kind (numeric|categorical), the ONNX input's numpy dtype, and whether
    a request may leave its column out (optional: every value is then missing and imputed)."""

    name: str
    kind: str
    dtype: np.dtype
    optional: bool = False


@dataclass(frozen=True)
class Signature:
    """What the model expects and returns, read from ONNX metadata and the session's inputs."""

    name: str
    task: str
    target: str
    features: tuple[Feature, ...]
    classes: tuple[Any, ...]
    categorical_missing: str
    outputs: tuple[str, ...]
    label_index: bool = False  # the graph has LABEL_INDEX and the classes are all strings or all integers
    feature_names: tuple[str, ...] = field(init=False, repr=False, compare=False)
    class_keys: tuple[str, ...] = field(init=False, repr=False, compare=False)
    has_float32: bool = field(init=False, repr=False, compare=False)
    all_float: bool = field(init=False, repr=False, compare=False)  # every input is float32/float64
    in_order: tuple[int, ...] = field(init=False, repr=False, compare=False)  # 0..len(features)-1
    feature_list: list[str] = field(init=False, repr=False, compare=False)  # feature_names, to compare JSON lists
    _index: Mapping[str, int] = field(init=False, repr=False, compare=False)
    _getter: Callable[[Any], Any] = field(init=False, repr=False, compare=False)
    run_outputs: tuple[str, ...] = field(init=False, repr=False, compare=False)  # what run_model asks for
    label_values: np.ndarray | None = field(init=False, repr=False, compare=False)  # classes, as labels come

    def __post_init__(self) -> None:
        names = tuple(f.name for f in self.features)
        # Frozen dataclass: derived lookups are computed once here, not per request.
        object.__setattr__(self, "feature_names", names)
        object.__setattr__(self, "class_keys", tuple(str(c) for c in self.classes))
        object.__setattr__(self, "has_float32", any(f.dtype == np.float32 for f in self.features))
        object.__setattr__(self, "all_float", all(f.dtype.kind == "f" for f in self.features))
        object.__setattr__(self, "in_order", tuple(range(len(names))))
        object.__setattr__(self, "feature_list", list(names))
        object.__setattr__(self, "_index", {n: i for i, n in enumerate(names)})
        object.__setattr__(self, "_getter", itemgetter(*names))
        # Labels as onnxruntime gives them: str objects for string classes, int64 for integer ones.
        values = None
        if self.label_index:
            values = np.array(self.classes, dtype=object if isinstance(self.classes[0], str) else np.int64)
        object.__setattr__(self, "label_values", values)
        object.__setattr__(self, "run_outputs", (LABEL_INDEX, *self.outputs[1:]) if self.label_index else self.outputs)

    @classmethod
    def from_session(cls, session: ort.InferenceSession) -> Signature:
        """Build from a session's metadata and inputs.

        Raises ModelArtifactError when the metadata is missing or disagrees with the graph.
        """
        meta = session.get_modelmeta().custom_metadata_map
        inputs = {i.name: i.type for i in session.get_inputs()}
        outputs = tuple(o.name for o in session.get_outputs())
        return parse_signature(meta.get(SIGNATURE_KEY), inputs, outputs)


def parse_signature(raw: str | None, input_types: Mapping[str, str], outputs: Sequence[str]) -> Signature:
    """Validate the mlops.signature JSON against the graph's inputs (name -> 'tensor(...)') and outputs."""
    if not raw:
        raise ModelArtifactError(f"model has no {SIGNATURE_KEY} metadata; re-export it with the export stage")
    try:
        meta = json.loads(raw)
        features = [(f["name"], f["kind"], f.get("optional") is True) for f in meta["features"]]
        task = meta["task"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelArtifactError(f"model {SIGNATURE_KEY} metadata is malformed: {exc}") from exc
    names = [n for n, _, _ in features]
    if not names or sorted(names) != sorted(input_types):
        raise ModelArtifactError(
            f"model signature features {names} do not match graph inputs {sorted(input_types)}"
        )
    bad = {n: t for n, t in input_types.items() if t not in _NUMPY_DTYPES}
    if bad:
        raise ModelArtifactError(f"unsupported graph input types {bad}; expected one of {sorted(_NUMPY_DTYPES)}")
    expected_outputs = {"classification": 2, "regression": 1}.get(task)
    if expected_outputs is None or len(outputs) < expected_outputs:
        raise ModelArtifactError(f"model (task={task}) has outputs {list(outputs)}; see the export contract")
    classes = tuple(meta.get("classes") or ())
    if task == "classification" and not classes:
        raise ModelArtifactError("classification model signature lists no classes")
    kinds = set(map(type, classes))
    return Signature(
        name=str(meta.get("name", "")),
        task=task,
        target=str(meta.get("target", "")),
        features=tuple(Feature(n, k, _NUMPY_DTYPES[input_types[n]], o) for n, k, o in features),
        classes=classes,
        categorical_missing=str(meta.get("categorical_missing", "missing")),
        outputs=tuple(outputs[:expected_outputs]),
        label_index=task == "classification" and LABEL_INDEX in outputs[expected_outputs:] and kinds in ({str}, {int}),
    )


Runner = Callable[[Sequence[str], dict[str, np.ndarray]], list[Any]]


@dataclass(frozen=True)
class LoadedModel:
    """A verified, ready-to-run model version; run(outputs, feeds) runs its session, run_packed(outputs,
    {PACKED_INPUT: matrix}) its packed companion (None when the artifact has none)."""

    name: str
    version: int
    sha256: str
    session: ort.InferenceSession = field(repr=False)
    signature: Signature
    packed: ort.InferenceSession | None = field(default=None, repr=False)
    run: Runner = field(init=False, repr=False, compare=False)
    run_packed: Runner | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "run", session_runner(self.session))
        object.__setattr__(self, "run_packed", None if self.packed is None else session_runner(self.packed))


def session_runner(session: ort.InferenceSession) -> Runner:
    """session.run without its Python-side re-checks of the feed, for feeds that read_request built.

    InferenceSession.run first checks in Python that every graph input is in the feed (a scan of the
    inputs per input: ~9 µs of a ~33 µs one-row call for 30 inputs) and then calls the native session.
    read_request always feeds exactly the signature's inputs, which Signature checked against the graph
    when the model loaded, so the check cannot fire; the native call still refuses a wrong name, type or
    shape. Falls back to the public run when this onnxruntime build has no native session attribute.
    """
    native = getattr(session, "_sess", None)
    if native is None or not callable(getattr(native, "run", None)):
        return session.run
    native_run = native.run
    return lambda outputs, feeds: native_run(outputs, feeds, None)


def session_options(intra_op_threads: int = 1) -> ort.SessionOptions:
    """Options tuned for many small concurrent requests rather than one big one."""
    opts = ort.SessionOptions()
    # The host runs several requests at once on few cores; one thread per run avoids oversubscription,
    # and for tabular models the thread-pool hand-off costs more than the maths it would parallelise.
    opts.intra_op_num_threads = intra_op_threads
    opts.inter_op_num_threads = 1
    # Sequential: these graphs are chains of tiny ops with no branches worth running in parallel.
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning workers burn the CPU that concurrent requests need; a single thread never waits anyway.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def load_model(
    onnx_bytes: bytes, expected_sha256: str, name: str, version: int, *, intra_op_threads: int = 1
) -> LoadedModel:
    """Verify the artifact's sha256 and open an inference session for it.

    Raises IntegrityError on a hash mismatch, ModelArtifactError if the ONNX or signature is unusable.
    """
    actual = hashlib.sha256(onnx_bytes).hexdigest()
    if actual != expected_sha256.strip().lower():
        raise IntegrityError(
            f"model artifact (name={name}, version={version}) has sha256={actual}, registry says "
            f"{expected_sha256}; refusing to load it, re-register the model"
        )
    try:
        session = ort.InferenceSession(
            onnx_bytes, sess_options=session_options(intra_op_threads), providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises several unrelated types for a bad graph
        # Its words can hold build paths: they go to the log, the answer says what to do.
        raise ModelArtifactError(
            f"model (name={name}, version={version}) cannot be loaded by onnxruntime; re-export it",
            internal=f"model (name={name}, version={version}) cannot be loaded: {exc}",
        ) from exc
    signature = Signature.from_session(session)
    packed = packed_session(session, signature, intra_op_threads, f"name={name}, version={version}")
    return LoadedModel(name, version, actual, session, signature, packed)


def packed_session(session: ort.InferenceSession, signature: Signature, intra_op_threads: int,
                   what: str) -> ort.InferenceSession | None:
    """The session of the packed graph embedded in the model's metadata, when every input is a float64 and
    the graph is usable: one [F, N] double input PACKED_INPUT and every output scoring asks for. Else None
    (logged): the model itself answers every request, only slower."""
    raw = session.get_modelmeta().custom_metadata_map.get(PACKED_KEY)
    if not raw or any(f.dtype != np.float64 for f in signature.features):
        return None
    try:
        packed = ort.InferenceSession(base64.b64decode(raw, validate=True),
                                      sess_options=session_options(intra_op_threads),
                                      providers=["CPUExecutionProvider"])
    except Exception as exc:  # bad base64 (binascii.Error) or any of onnxruntime's unrelated error types
        log.warning("model (%s): its %s graph does not load, scoring without it: %s", what, PACKED_KEY, exc)
        return None
    inputs = [(i.name, i.type, i.shape[0]) for i in packed.get_inputs()]
    outputs = {o.name for o in packed.get_outputs()}
    # run_model asks a packed graph for the label index, when the model has one, and not for the labels
    asked = signature.run_outputs if signature.label_values is not None else signature.outputs
    if inputs != [(PACKED_INPUT, "tensor(double)", len(signature.features))] or not {*asked} <= outputs:
        log.warning("model (%s): its %s graph takes %s and gives %s, not the model's inputs packed and its "
                    "outputs; scoring without it", what, PACKED_KEY, inputs, sorted(outputs))
        return None
    return packed


# ---------------------------------------------------------------------------------------------
# Request parsing


class ScoringRequest(NamedTuple):
    """A parsed body: session feeds (input name -> array [rows, 1]) and params.ids exactly as sent (None if absent).

    A NamedTuple, immutable like a frozen dataclass at a third of its construction cost (one per request)."""

    inputs: dict[str, np.ndarray]
    rows: int
    ids: Any = None
    # Every input at once, feature-major [F, N] float64 in the signature's order (a view of the same values),
    # when the parse knows no value is missing: what the model's packed graph takes (run_model).
    matrix: np.ndarray | None = None


def parse_request(
    body: bytes, content_type: str | None, signature: Signature, max_bytes: int
) -> dict[str, np.ndarray]:
    """Turn a request body into session feeds: input name -> array [N, 1] of the input's dtype.

    Raises PayloadTooLarge, UnsupportedMediaType or BadRequest, each naming what is wrong.
    """
    return read_request(body, content_type, signature, max_bytes).inputs


def read_request(body: bytes, content_type: str | None, signature: Signature, max_bytes: int) -> ScoringRequest:
    """parse_request, keeping the row count and a JSON body's params.ids (checked later, by row_ids)."""
    check_size(body, max_bytes)
    kind = media_type(content_type)
    if kind in ("arrow", "parquet"):
        from shared import arrow_bodies  # pyarrow loads with the first such body, never at import

        return arrow_bodies.read_table_body(body, kind, signature)
    if kind == "csv":
        fast = _arrow_csv(body, signature)
        if fast is not None:
            return fast
        names, columns = _table_from_csv(_decode_csv(body))
        return _convert(names, columns, signature, _text_column, _CSV_MISSING, None)
    if len(body) >= BIG_JSON_MIN_BYTES and signature.all_float:
        from shared import json_rows  # simdjson loads with the first big body, never at import

        fast = json_rows.read_split(body, signature)
        if fast is not None:
            return fast
    doc = _load_json(body)
    fast = _numeric_rows(doc, signature, body)
    if fast is not None:
        return fast
    names, columns = _table_from_json(doc, signature)
    return _convert(names, columns, signature, _json_column, None, _params_ids(doc))


def _convert(
    names: Sequence[Any], columns: Sequence[Sequence[Any]], signature: Signature,
    convert: Callable[[Any, Feature, str], np.ndarray], absent: Any, ids: Any,
) -> ScoringRequest:
    """The general path: columns of Python cells, checked and converted one feature at a time."""
    ordered = _select(names, columns, signature, absent)
    missing = signature.categorical_missing
    if signature.has_float32:
        # A number beyond float32 becomes inf in numpy's cast and _finite refuses it right after, naming
        # column and row; numpy's overflow warning would only be log noise (the check costs ~1 µs).
        with np.errstate(over="ignore"):
            inputs = {f.name: convert(col, f, missing) for f, col in zip(signature.features, ordered, strict=True)}
    else:
        inputs = {f.name: convert(col, f, missing) for f, col in zip(signature.features, ordered, strict=True)}
    return ScoringRequest(inputs, len(ordered[0]), ids)


def _arrow_csv(body: bytes, signature: Signature) -> ScoringRequest | None:
    """A big CSV body through the native reader or pyarrow's; None (the stdlib reader decides) for anything they
    cannot vouch for (arrow_bodies.read_csv_body: quotes and carriage returns go to the stdlib reader)."""
    if len(body) < ARROW_CSV_MIN_BYTES:
        return None
    from shared import arrow_bodies

    return arrow_bodies.read_csv_body(body, signature)


# ---------------------------------------------------------------------------------------------
# The columnar fast path: rows of plain numbers straight into one float matrix (no per-cell Python work).
# It takes only bodies the general path accepts and gives the same arrays (tests/unit/test_scoring_columnar.py);
# anything else (strings, booleans, NaN/Infinity, missing or unknown columns, a ragged row) returns None and
# the general path answers, with its messages.

_PLAIN_CELLS = frozenset({int, float, type(None)})


def _numeric_rows(doc: Any, signature: Signature, body: bytes) -> ScoringRequest | None:
    """The request of a body whose inputs are all floats and whose rows hold only numbers and nulls."""
    if not signature.all_float or not isinstance(doc, dict) or b"true" in body or b"false" in body:
        return None  # a JSON boolean would pass numpy's conversion as 1.0 / 0.0: the general path refuses it
    found = doc.keys() & _INPUT_KEY_SET
    if len(found) != 1:
        return None
    (key,) = found
    names, rows = _plain_rows(key, doc[key], signature)
    order = None if names is None else _column_order(names, signature)
    if order is None or not rows or set(map(type, rows)) != {list} or set(map(len, rows)) != {len(order)}:
        return None
    matrix = _small_float_matrix(rows) if len(rows) <= _SMALL_ROWS else _float_matrix(rows)
    if matrix is None:
        return None
    values, complete = matrix
    return matrix_request(values, order, signature, complete, _params_ids(doc))


def _plain_rows(key: str, value: Any, signature: Signature) -> tuple[Any, Any]:
    """Column names and rows of a split body ({"columns", "data"}) or of a list of rows in feature order."""
    if key in ("dataframe_split", "input_data") and isinstance(value, dict):
        names = value.get("columns", signature.feature_names)
        rows = value.get("data")
        plain = set(value) <= {"columns", "data", "index"} and isinstance(rows, list)
        plain = plain and isinstance(names, list | tuple)
        return (names, rows) if plain else (None, [])
    if key in ("inputs", "data", "instances") and isinstance(value, list) and value and type(value[0]) is list:
        return signature.feature_names, value
    return None, []


def _column_order(names: Sequence[Any], signature: Signature) -> Sequence[int] | None:
    """Position in names of each feature, when names are exactly the features (in any order);
    signature.in_order when they come in the signature's order."""
    if names is signature.feature_names or (
            names == signature.feature_list if isinstance(names, list) else tuple(names) == signature.feature_names):
        return signature.in_order
    if not all(type(n) is str for n in names) or len(set(names)) != len(names):
        return None
    if set(names) != set(signature.feature_names):
        return None  # absent optional, unknown or repeated columns: the general path fills or refuses them
    where = {n: i for i, n in enumerate(names)}
    return [where[n] for n in signature.feature_names]


def _float_matrix(rows: list[list[Any]]) -> tuple[np.ndarray, bool] | None:
    """(rows as a Fortran-ordered float64 matrix (null -> NaN), whether no cell is null), or None unless every
    cell is an int, float or null."""
    try:
        matrix = np.array(rows)
        if matrix.dtype.kind in "fi":
            # inferred from plain ints and floats only; NaN or inf here came from NaN/Infinity/1e400 in the body
            values = np.asfortranarray(matrix, dtype=np.float64)
            return (values, True) if np.isfinite(values).all() else None
        kinds = set(map(type, itertools.chain.from_iterable(rows)))
        if matrix.dtype != object or not kinds <= _PLAIN_CELLS:
            return None
        # nulls or ints beyond int64: every cell is an int, a float or None, so a NaN below is a null, and an
        # int beyond float64 raises OverflowError
        return np.asfortranarray(np.array(rows, dtype=np.float64)), type(None) not in kinds
    except (ValueError, TypeError, OverflowError):  # an int beyond float64, nested lists
        return None


# Up to this many rows a Python check of the cells is cheaper than numpy's dtype inference and isfinite.
_SMALL_ROWS = 4


def _small_float_matrix(rows: list[list[Any]]) -> tuple[np.ndarray, bool] | None:
    """_float_matrix for a few rows (the single-row calls of online scoring): the same result, checked in Python."""
    cells = rows[0] if len(rows) == 1 else list(itertools.chain.from_iterable(rows))
    kinds = set(map(type, cells))
    complete = kinds <= _NUMBER_TYPES
    try:
        if complete:
            finite = all(map(math.isfinite, cells))
        elif kinds <= _PLAIN_CELLS:
            finite = all(math.isfinite(c) for c in cells if c is not None)  # a null is missing: NaN below
        else:
            return None
    except OverflowError:  # an int beyond float64
        return None
    return (np.array(rows, dtype=np.float64, order="F"), complete) if finite else None


def matrix_request(values: np.ndarray, order: Sequence[int], signature: Signature, complete: bool, ids: Any,
                   ) -> ScoringRequest | None:
    """The request of a Fortran-ordered float64 rows matrix (columns in `order`; complete: no NaN in it), or
    None when a value is beyond a float32 input (the general path names column and row)."""
    feeds = _matrix_feeds(values, order, signature)
    if feeds is None:
        return None
    return ScoringRequest(feeds, values.shape[0], ids, packed_matrix(values, order, signature, complete))


def _matrix_feeds(values: np.ndarray, order: Sequence[int], signature: Signature) -> dict[str, np.ndarray] | None:
    # values is column-major: its transpose is row-major [W, N], and each [N, 1] slab of it is one contiguous feed
    slabs = values.T.reshape(values.shape[1], values.shape[0], 1)
    if order is signature.in_order:
        feeds = dict(zip(signature.feature_names, slabs, strict=True))
    else:  # views in the features' order (a fancy index would copy the whole matrix)
        feeds = {name: slabs[i] for name, i in zip(signature.feature_names, order, strict=True)}
    if signature.has_float32:
        for feature in signature.features:
            if feature.dtype == np.float32:
                with np.errstate(over="ignore"):
                    feeds[feature.name] = column = feeds[feature.name].astype(np.float32)
                if np.isinf(column).any():
                    return None  # beyond float32: the general path names column and row
    return feeds


def packed_matrix(values: np.ndarray, order: Sequence[int], signature: Signature, complete: bool,
                  ) -> np.ndarray | None:
    """The feature-major [F, N] view of a Fortran-ordered float64 [N, F] rows matrix for a packed graph
    (run_model), when no value is missing and the columns come in the signature's order. (A model with a
    float32 input has no packed graph: packed_session.)"""
    if not complete or order is not signature.in_order:
        return None
    return values.T


def _params_ids(doc: dict[str, Any]) -> Any:
    """params.ids as sent, or None; a params that is not an object is ignored, as MLflow ignores unknown keys."""
    params = doc.get("params")
    return params.get("ids") if isinstance(params, dict) else None


def check_size(body: bytes, max_bytes: int) -> None:
    """Raises PayloadTooLarge when the body exceeds max_bytes."""
    if len(body) > max_bytes:
        raise PayloadTooLarge(
            f"request body is {len(body)} bytes (max_bytes={max_bytes}); send fewer rows per request"
        )


def media_type(content_type: str | None) -> str:
    """'json' or 'csv' for a Content-Type header; none at all means JSON, as most clients intend.

    MLflow's scoring server rules: the only parameter is charset and it must be utf-8 (any case).
    Raises UnsupportedMediaType.
    """
    if content_type is None or not content_type.strip():
        return "json"
    if content_type in _MEDIA_TYPES:  # the common case: exactly a media type we know, no parameters
        return _MEDIA_TYPES[content_type]
    media, *params = content_type.split(";")
    for param in params:
        _check_parameter(param, content_type)
    media = media.strip().lower()
    if media in _MEDIA_TYPES:
        return _MEDIA_TYPES[media]
    if media.endswith("+json") and "/" in media:
        return "json"
    raise UnsupportedMediaType(
        f"content type (content_type={_clip(content_type)}) is not supported; send application/json, text/csv, "
        "application/vnd.apache.arrow.stream or application/x-parquet"
    )


@dataclass(frozen=True)
class Encoded:
    """A 200 answer in the format the client's Accept asked for (CSV or an Arrow IPC stream) instead of JSON."""

    data: bytes
    media_type: str


_ENCODED_MEDIA = {"csv": "text/csv", "arrow": "application/vnd.apache.arrow.stream"}


def response_kind(accept: str | None) -> str:
    """'json', 'csv' or 'arrow': the first supported media range of an Accept header, JSON when none is.

    Lenient, as MLflow ignores Accept: an unsupported or malformed header is answered in JSON, never 406.
    """
    if not accept:
        return "json"
    for part in accept.split(","):
        kind = _ACCEPT_TYPES.get(part.split(";", 1)[0].strip().lower())
        if kind is not None:
            return kind
    return "json"


def _check_parameter(param: str, content_type: str) -> None:
    key, _, value = param.partition("=")
    key = key.strip().lower()  # RFC 9110: parameter names are case-insensitive, values may be quoted
    value = value.strip()
    if not key and not value:
        return  # an empty parameter, e.g. a trailing ';' (RFC 9110 allows it)
    if key != "charset":
        raise UnsupportedMediaType(
            f"content type parameter ({_clip(key or param.strip())}) is not supported "
            f"(content_type={_clip(content_type)}); the only parameter is charset=utf-8"
        )
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    if value.lower() != "utf-8":
        raise UnsupportedMediaType(f"charset (charset={_clip(value)}) is not supported; send UTF-8 (charset=utf-8)")


def _decode_csv(body: bytes) -> str:
    try:
        return body.decode("utf-8-sig")  # a leading BOM, as Excel writes, is dropped
    except UnicodeDecodeError as exc:
        raise BadRequest(f"request body is not valid UTF-8: {exc}") from None


class _NonFinite(float):
    """NaN, Infinity or a number beyond float64 in a JSON body, kept as the client wrote it for messages."""

    text: str

    def __new__(cls, text: str) -> _NonFinite:
        value = super().__new__(cls, text)  # float() reads 'NaN', '-Infinity' and '1e400' (as inf)
        value.text = text
        return value

    def __repr__(self) -> str:
        return self.text


_JSON_FLOAT_TYPES = frozenset({int, float, type(None), _NonFinite})  # None is a missing value


class _StdlibJson:
    """Hooks for json.loads that count what orjson refuses as non-finite: NaN, Infinity, 1e400, 10**400."""

    def __init__(self) -> None:
        self.non_finite = 0

    def constant(self, text: str) -> float:
        self.non_finite += 1
        return _NonFinite(text)

    def number(self, text: str) -> float:
        value = float(text)
        return value if math.isfinite(value) else self.constant(text)

    def integer(self, text: str) -> int:
        value = int(text)  # ValueError over 4300 digits, which _load_json_stdlib reports as invalid JSON
        if not _fits_float64(value):
            self.non_finite += 1  # kept an int: a float input refuses it, an int64 input says it does not fit
        return value


def _load_json(body: bytes) -> Any:
    failure: ValueError | None = None
    if _fast_loads is not None:
        try:
            return _fast_loads(body)
        except ValueError as exc:
            # orjson refuses NaN, Infinity and 1e400 outright; the stdlib reads them so that the value
            # check can name column and row, exactly as for the same text in a CSV body.
            if not (b"NaN" in body or b"Infinity" in body or "infinity" in str(exc).lower()):
                raise _invalid_json(body, exc) from None
            failure = exc
    return _load_json_stdlib(body, failure)


def _load_json_stdlib(body: bytes, failure: ValueError | None) -> Any:
    hooks = _StdlibJson()
    try:
        doc = json.loads(body.decode("utf-8"), parse_float=hooks.number, parse_int=hooks.integer,
                         parse_constant=hooks.constant)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise _invalid_json(body, failure or exc) from None
    if failure is not None and not hooks.non_finite:
        raise _invalid_json(body, failure)  # orjson refused something else the stdlib lets through
    try:
        # The stdlib keeps a lone surrogate escape ("\ud800") as a str no encoder (nor onnxruntime) takes.
        json.dumps(doc, ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, RecursionError):
        raise BadRequest("request body is not valid JSON: a string holds a lone surrogate escape such as "
                         "\\ud800; send UTF-8 text or escaped surrogate pairs") from None
    return doc


def _invalid_json(body: bytes, exc: Exception) -> BadRequest:
    """The decoder's own words (they carry a position, never a path); the codec's for bytes that are not UTF-8."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as bad:
        return BadRequest(f"request body is not valid UTF-8: {bad}")
    return BadRequest(f"request body is not valid JSON: {exc}")


Table = tuple[Sequence[Any], Sequence[Sequence[Any]]]  # column names, columns of cell values


def _table_from_json(doc: Any, signature: Signature) -> Table:
    if not isinstance(doc, dict):
        raise BadRequest(f"request body must be a JSON object with one of {list(INPUT_KEYS)}; got {_json_type(doc)}")
    found = doc.keys() & _INPUT_KEY_SET  # other keys ('params', anything else) are ignored, as MLflow does
    if len(found) != 1:
        if found:
            got = f"found {len(found)}: {[k for k in INPUT_KEYS if k in found]}"
        else:
            got = f"found keys {_show(list(doc))}" if doc else "found an empty object"
        raise BadRequest(f"request must contain exactly one of {list(INPUT_KEYS)}; {got}")
    (key,) = found
    return _table_for_key(key, doc[key], signature)


def _table_for_key(key: str, value: Any, signature: Signature) -> Table:
    if key == "dataframe_split" or (key == "input_data" and isinstance(value, dict)):
        if not isinstance(value, dict):
            raise BadRequest("'dataframe_split' must be an object with 'columns' and 'data'")
        return _table_from_split(value, key, signature)
    if key == "dataframe_records" and not isinstance(value, list):
        raise BadRequest("'dataframe_records' must be a list of {column: value} objects")
    if key in ("instances", "inputs") and isinstance(value, dict):
        return _table_from_columns(value, key)
    if isinstance(value, list):
        return _table_from_list(value, key, signature)
    raise BadRequest(
        f"'{key}' must be a list of rows or of {{column: value}} objects"
        f"{', or an object of columns' if key in ('instances', 'inputs') else ''}; got {_json_type(value)}"
    )


def _table_from_split(value: dict[str, Any], key: str, signature: Signature) -> Table:
    if "data" not in value or set(value) - {"columns", "data", "index"}:
        raise BadRequest(
            f"'{key}' must be an object with 'data', 'columns' and optional 'index'; got keys {_show(sorted(value))}"
        )
    names: Sequence[Any] = value.get("columns", signature.feature_names)  # MLflow: no columns = feature order
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise BadRequest(f"'{key}.columns' must be a list of column names")
    rows = value["data"]
    if not isinstance(rows, list):
        raise BadRequest(f"'{key}.data' must be a list of rows")
    return names, _transpose(rows, len(names), f"{key}.data")


def _table_from_list(rows: list[Any], key: str, signature: Signature) -> Table:
    if not rows:
        raise BadRequest(f"'{key}' has no rows to score")
    if isinstance(rows[0], dict):
        return _table_from_records(rows, key, signature)
    if isinstance(rows[0], list) and key != "dataframe_records":
        names = signature.feature_names
        return names, _transpose(rows, len(names), key)
    raise BadRequest(
        f"'{key}' must be a list of {{column: value}} objects or of rows in feature order "
        f"{list(signature.feature_names)}; got a list of {_json_type(rows[0])}"
    )


def _transpose(rows: list[Any], width: int, where: str) -> list[Sequence[Any]]:
    """Rows -> columns, after checking every row is a list of the right length (zip would truncate)."""
    if not rows:
        return [[] for _ in range(width)]
    if set(map(type, rows)) != {list} or set(map(len, rows)) != {width}:
        for i, row in enumerate(rows):
            if not isinstance(row, list):
                raise BadRequest(f"{where} row {i}: expected a list of {width} values, got {_show(row)}")
            if len(row) != width:
                raise BadRequest(f"{where} row {i} has {len(row)} values; expected {width}, one per column")
    return list(zip(*rows, strict=True))


def _table_from_records(records: list[Any], key: str, signature: Signature) -> Table:
    names = signature.feature_names
    if set(map(type, records)) != {dict}:
        i = next(i for i, r in enumerate(records) if not isinstance(r, dict))
        raise BadRequest(f"{key} row {i}: expected a {{column: value}} object, got {_show(records[i])}")
    # Fast path: every record has exactly the features, so itemgetter cannot miss and nothing is extra.
    if set(map(len, records)) == {len(names)}:
        try:
            got = list(map(signature._getter, records))
        except KeyError:
            pass
        else:
            return names, (list(zip(*got, strict=True)) if len(names) > 1 else [got])
    seen: set[Any] = set().union(*records)
    # A key absent from some records but present in others is a null there, as in pandas/MLflow;
    # unknown keys and keys absent from every record are reported by _select.
    present = [n for n in names if n in seen]
    unknown = sorted(n for n in seen if n not in signature._index)
    columns = [[r.get(n) for r in records] for n in present]
    return present + unknown, columns + [[] for _ in unknown]


def _table_from_columns(value: dict[str, Any], key: str) -> Table:
    names = list(value)
    columns = list(value.values())
    if all(not isinstance(c, (list, dict)) for c in columns):
        return names, [[c] for c in columns]  # {"a": 1, "b": "x"} is one row
    lengths = {len(c) if isinstance(c, list) else -1 for c in columns}
    if -1 in lengths or len(lengths) != 1:
        shape = {n: (len(c) if isinstance(c, list) else type(c).__name__) for n, c in value.items()}
        raise BadRequest(f"'{key}' as columns must map every column to a list of equal length; got {_show(shape)}")
    return names, columns


def _table_from_csv(text: str) -> Table:
    # Universal newlines: a file with old Mac '\r' line ends reads as pandas reads it, not as a csv.Error.
    reader = csv.reader(io.StringIO(text, newline=None))
    try:
        header = next(reader, None)
        rows = [r for r in reader if r]  # csv yields [] for blank lines, e.g. a trailing newline
    except csv.Error as exc:  # e.g. a field over csv's 128 KiB limit
        raise BadRequest(f"CSV body cannot be read at line {reader.line_num}: {exc}") from None
    if not header:
        raise BadRequest("CSV body needs a header row naming the columns")
    names = [h.strip() for h in header]
    return names, _transpose(rows, len(names), "CSV") if rows else [[] for _ in names]


def _select(
    names: Sequence[Any], columns: Sequence[Sequence[Any]], signature: Signature, absent: Any = None
) -> Sequence[Sequence[Any]]:
    """Order columns as the signature's features, refusing missing, unknown and duplicate columns.

    An optional feature's column may be left out: it becomes a column of `absent`, the format's missing
    cell (JSON null, an empty CSV cell), so it is converted and imputed exactly as sent nulls would be.
    """
    if names is signature.feature_names or tuple(names) == signature.feature_names:
        return _check_rows(columns)  # the common case: already in feature order
    index = signature._index
    if len(set(names)) != len(names):
        dupes = sorted(str(n) for n, count in Counter(names).items() if count > 1)
        raise BadRequest(f"duplicate columns {_show(dupes)}")
    given = set(names)
    missing = [f.name for f in signature.features if f.name not in given and not f.optional]
    unknown = [str(n) for n in names if n not in index]
    if missing or unknown:
        parts = [f"missing columns {missing}" if missing else "",
                 f"unknown columns {_show(unknown)}" if unknown else ""]
        raise BadRequest(f"{'; '.join(p for p in parts if p)}; the model expects {list(signature.feature_names)}")
    by_name = dict(zip(names, columns, strict=True))
    filler = [absent] * (len(columns[0]) if columns else 0)  # never mutated: converters build new lists
    return _check_rows([by_name.get(f, filler) for f in signature.feature_names])


def _check_rows(columns: Sequence[Sequence[Any]]) -> Sequence[Sequence[Any]]:
    if not columns or len(columns[0]) == 0:
        raise BadRequest("request has no rows to score")
    return columns


# ---------------------------------------------------------------------------------------------
# Column conversion: one numpy array per column, straight from the parsed lists.
# One value rule for JSON and CSV: a number must be finite and fit the input's dtype; a missing value
# is JSON null or an empty CSV cell (NaN for numbers, the signature's marker for categories); NaN,
# Infinity and overflowing numbers are refused with the column and row, whichever format sent them.


def _json_column(col: Sequence[Any], feature: Feature, missing: str) -> np.ndarray:
    if feature.dtype == object:
        return _json_strings(col, feature.name, missing)
    types = set(map(type, col))
    if feature.dtype.kind == "f" and types <= _JSON_FLOAT_TYPES:
        return _json_floats(col, feature)
    if feature.dtype.kind == "i" and types <= _NUMBER_TYPES:
        return _json_integers(col, feature.name)
    allowed = _JSON_FLOAT_TYPES if feature.dtype.kind == "f" else _NUMBER_TYPES
    what = "a number" if feature.dtype.kind == "f" else "an integer"
    i = next(i for i, v in enumerate(col) if type(v) not in allowed)
    raise BadRequest(f"column {feature.name!r} row {i}: expected {what}, got {_show(col[i])}")


def _json_floats(col: Sequence[Any], feature: Feature) -> np.ndarray:
    try:
        values = np.array(col, dtype=feature.dtype).reshape(-1, 1)  # None becomes NaN: the imputer's missing
    except OverflowError:  # an integer beyond float64
        i = _first(col, lambda v: isinstance(v, int) and not _fits_float64(v))
        raise _not_finite(feature, i, col[i]) from None
    return _finite(values, col, feature, None)


def _json_integers(col: Sequence[Any], name: str) -> np.ndarray:
    for i, v in enumerate(col):
        if isinstance(v, float) and not v.is_integer():
            raise BadRequest(f"column {name!r} row {i}: expected an integer, got {_show(v)}")
    try:
        return np.array(col, dtype=np.int64).reshape(-1, 1)
    except OverflowError:
        i = _first(col, lambda v: not _INT64_MIN <= v <= _INT64_MAX)
        raise BadRequest(f"column {name!r} row {i}: {_show(col[i])} does not fit in int64") from None


def _json_strings(col: Sequence[Any], name: str, missing: str) -> np.ndarray:
    if set(map(type, col)) != {str}:
        col = [_cell_to_str(v, name, i, missing) for i, v in enumerate(col)]
    return np.array(col, dtype=object).reshape(-1, 1)


def _cell_to_str(value: Any, name: str, row: int, missing: str) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return missing
    if isinstance(value, float) and not math.isfinite(value):
        raise BadRequest(f"column {name!r} row {row}: expected a string, got {_show(value)}; "
                         "NaN and infinity are refused, send null for a missing value")
    if isinstance(value, (int, float)):
        return str(value)  # a category sent as a number, e.g. a postcode
    raise BadRequest(f"column {name!r} row {row}: expected a string, got {_show(value)}")


def _text_column(col: Sequence[str], feature: Feature, missing: str) -> np.ndarray:
    """CSV cells are strings; an empty cell is a null."""
    if feature.dtype == object:
        if _CSV_MISSING in col:
            col = [v if v != _CSV_MISSING else missing for v in col]
        return np.array(col, dtype=object).reshape(-1, 1)
    if feature.dtype.kind == "i":
        return _csv_integers(col, feature)
    return _csv_floats(col, feature)


def _plain(col: Sequence[str]) -> bool:
    """Cells numpy reads as JSON would: ASCII without '_' (float() reads '1_0' as 10 and '٣' as 3)."""
    text = "".join(col)
    return text.isascii() and "_" not in text


def _csv_floats(col: Sequence[str], feature: Feature) -> np.ndarray:
    cells = [v or "nan" for v in col] if _CSV_MISSING in col else col
    if _plain(col):
        try:
            values = np.array(cells, dtype=feature.dtype).reshape(-1, 1)
        except ValueError:
            pass
        else:  # 'nan', 'inf' and '1e999' were read as NaN and inf: _finite refuses them
            return _finite(values, col, feature, _CSV_MISSING)
    i = _first(col, lambda v: v != _CSV_MISSING and _CSV_NUMBER.fullmatch(v) is None)
    if col[i].strip().lstrip("+-").lower() in _NON_FINITE_WORDS:
        raise _not_finite(feature, i, col[i])
    raise BadRequest(f"column {feature.name!r} row {i}: expected a number, got {_show(col[i])}")


def _csv_integers(col: Sequence[str], feature: Feature) -> np.ndarray:
    if _plain(col):
        try:
            return np.array(col, dtype=np.int64).reshape(-1, 1)
        except (ValueError, OverflowError):
            pass
    return _json_integers([_csv_integer(v, feature.name, i) for i, v in enumerate(col)], feature.name)


def _csv_integer(text: str, name: str, row: int) -> int | float:
    """A CSV cell as JSON would give it: an int, or a float that _json_integers accepts if it is whole."""
    if _CSV_INTEGER.fullmatch(text) and len(text) <= 40:  # longer cannot fit int64; int() refuses > 4300 digits
        return int(text)
    if _CSV_NUMBER.fullmatch(text) and float(text).is_integer():
        return float(text)
    raise BadRequest(f"column {name!r} row {row}: expected an integer, got {_show(text)}")


def _finite(values: np.ndarray, col: Sequence[Any], feature: Feature, missing: Any) -> np.ndarray:
    """values, unless a cell other than the missing marker became NaN or ±inf (sent so, or too big for the dtype)."""
    flat = values.reshape(-1)
    # For a few values a Python sum beats numpy's ufunc set-up; an overflowing sum only costs the exact check.
    if math.isfinite(sum(flat.tolist())) if flat.size <= 64 else bool(np.isfinite(flat).all()):
        return values
    for i in np.flatnonzero(~np.isfinite(flat)).tolist():
        if col[i] != missing:
            raise _not_finite(feature, i, col[i])
    return values


def _not_finite(feature: Feature, row: int, value: Any) -> BadRequest:
    return BadRequest(
        f"column {feature.name!r} row {row}: expected a finite number that fits {feature.dtype}, got {_show(value)}; "
        "NaN and infinity are refused, send null (JSON) or an empty cell (CSV) for a missing value"
    )


def _fits_float64(value: int) -> bool:
    try:
        float(value)
    except OverflowError:
        return False
    return True


def _first(values: Sequence[Any], predicate: Callable[[Any], bool]) -> int:
    """Index of the first value that matches (0 if none does, so a message can still be built)."""
    return next((i for i, v in enumerate(values) if predicate(v)), 0)


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _show(value: Any) -> str:
    """A client's value for a message: repr'd, cut short and never deeper than a few levels."""
    try:
        return _REPR.repr(value)
    except (ValueError, RecursionError):  # e.g. an int over Python's 4300-digit repr limit
        return f"a {type(value).__name__}"


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------
# Prediction


def predict(
    model: LoadedModel, inputs: dict[str, np.ndarray], prediction_ids: Sequence[str] | None = None
) -> dict[str, Any]:
    """Run the session and shape its outputs as JSON-native lists; prediction_ids go right after predictions."""
    labels, probabilities, _ = run_model(model, inputs)
    return _json_result(model, labels, probabilities, prediction_ids)


def _json_result(
    model: LoadedModel, labels: np.ndarray, probabilities: np.ndarray | None, prediction_ids: Sequence[str] | None
) -> dict[str, Any]:
    sig = model.signature
    result: dict[str, Any] = {"predictions": _json_list(labels)}
    if prediction_ids is not None:
        result["prediction_ids"] = prediction_ids if isinstance(prediction_ids, list) else list(prediction_ids)
    if probabilities is not None:
        result["probabilities"] = _per_class(sig.class_keys, _json_list(probabilities))
    result["model"] = {"name": model.name, "version": model.version}
    return result


# From this many rows on, an answer's ids and per-class probabilities are written as JSON text in bulk and
# handed to orjson as Fragments: 10,000 rows take 1.9 ms instead of 4.7 (10,000 dicts and id strings).
_BULK_JSON_ROWS = 256


def _bulk_json_result(
    model: LoadedModel, labels: np.ndarray, probabilities: np.ndarray | None, prediction_ids: Sequence[str],
) -> dict[str, Any]:
    """_json_result's answer, serialised the same by orjson, with its big lists as orjson Fragments."""
    assert _Fragment is not None
    result: dict[str, Any] = {"predictions": _json_list(labels), "prediction_ids": _Fragment(ids_json(prediction_ids))}
    if probabilities is not None:
        result["probabilities"] = _Fragment(_per_class_json(model.signature.class_keys, probabilities))
    result["model"] = {"name": model.name, "version": model.version}
    return result


def ids_json(ids: Sequence[str]) -> bytes:
    """Prediction ids as a JSON array; DefaultIds written from their parts, never as a Python string per row
    (request ids are plain ASCII, request_id_of: nothing to escape)."""
    assert _dumps is not None
    if isinstance(ids, DefaultIds):
        from shared import native_numbers  # loaded with the first big answer, never at import

        prefix = b'"' + ids.request_id.encode("ascii") + b"-"
        laid_out = native_numbers.lay_out([b""], [prefix, b'"'], b",", ids.rows, head=b"[", tail=b"]",
                                          counter=native_numbers.Counter(0, ids.start))
        if laid_out is not None:
            return laid_out
        _, text = default_id_text(ids.request_id, ids.start, ids.rows, before=b'"', after=b'",')
        return b"[" + text.tobytes()[:-1] + b"]"
    return _dumps(ids if isinstance(ids, list) else list(ids))


def column_json(values: np.ndarray) -> bytes:
    """A numeric column [N] as a JSON array, by one orjson call: float32 widened to float64 (the JSON answer's
    numbers), NaN as null."""
    assert _dumps is not None
    wide = np.float64 if values.dtype.kind == "f" else None
    return _dumps(np.ascontiguousarray(values, dtype=wide), option=_NUMPY_OPTION)  # orjson takes contiguous only


def _per_class_json(keys: tuple[str, ...], probabilities: np.ndarray) -> bytes:
    """[{"<key>": p, ...}, ...] as JSON text: each class column's numbers are written by one orjson call
    (column_json), then laid out per row by the native library (~0.2 ms for 10,000 rows of two classes) or,
    without it, by one row template over the columns' tokens (~1.1 ms)."""
    assert _dumps is not None
    rows, width = probabilities.shape
    if not rows:
        return b"[]"
    from shared import native_numbers  # loaded with the first big answer, never at import

    texts = [column_json(probabilities[:, k]) for k in range(width)]
    laid_out = native_numbers.per_class_json(texts, [_dumps(key) for key in keys], rows)
    if laid_out is not None:
        return laid_out
    cells: list[bytes] = [b""] * (rows * width)
    for k, text in enumerate(texts):
        cells[k::width] = text[1:-1].split(b",")
    row = b"{" + b",".join(_dumps(key).replace(b"%", b"%%") + b":%s" for key in keys) + b"},"
    return b"[" + ((row * rows) % tuple(cells))[:-1] + b"]"


class ModelOutputs(NamedTuple):
    """run_model's answer: predictions [N], a classifier's probabilities [N, classes] in class order, and the
    position of each row's label in the classes when the graph gives it (else None)."""

    labels: np.ndarray
    probabilities: np.ndarray | None
    label_index: np.ndarray | None = None


# Below this many rows the label output is as cheap as the index and the lookup (~1 µs a single-row call).
_INDEX_MIN_ROWS = 16


def run_model(model: LoadedModel, inputs: dict[str, np.ndarray], rows: int | None = None,
              matrix: np.ndarray | None = None) -> ModelOutputs:
    """Run the session, or its packed graph when the model has one and no value is missing: `matrix` is the
    inputs' values as the packed graph takes them, when the parse has them so (ScoringRequest.matrix); else
    the inputs are stacked here and checked for NaN (~0.2 ms per 10,000 rows of 30 inputs, against ~0.5 ms
    saved in onnxruntime; ~7 µs for one row, against ~20). With a LABEL_INDEX output (and `rows`, if known,
    not tiny, or the packed graph, which gives no labels) the labels are the signature's classes at each row's
    index: onnxruntime then makes no Python string per row."""
    sig = model.signature
    run, packed = model.run, False
    if model.run_packed is not None:
        if matrix is None:
            matrix = np.stack([inputs[name].reshape(-1) for name in sig.feature_names])  # float64: packed_session
            matrix = None if np.isnan(matrix).any() else matrix
        if matrix is not None:
            run, inputs, packed = model.run_packed, {PACKED_INPUT: matrix}, True
    if sig.label_values is not None and (packed or rows is None or rows >= _INDEX_MIN_ROWS):
        index, probabilities = run(sig.run_outputs, inputs)
        index = index.reshape(-1)
        return ModelOutputs(sig.label_values[index], probabilities, index)
    outputs = run(sig.outputs, inputs)
    return ModelOutputs(outputs[0].reshape(-1), outputs[1] if sig.task == "classification" else None)


def _per_class(keys: tuple[str, ...], rows: list[list[Any]]) -> list[dict[str, Any]]:
    if len(keys) == 2:  # binary models are the common case, and a dict display is 3x faster than dict(zip)
        first, second = keys
        return [{first: a, second: b} for a, b in rows]
    return [dict(zip(keys, row, strict=True)) for row in rows]


def _json_list(values: np.ndarray) -> list[Any]:
    """ndarray -> nested Python lists, NaN as None: strict JSON has no NaN and clients reject it."""
    if values.dtype.kind == "f" and _has_nan(values):
        cells = values.astype(object)
        cells[np.isnan(values)] = None
        return cells.tolist()
    return values.tolist()


def _has_nan(values: np.ndarray) -> bool:
    if values.size <= 64:  # for a few values, numpy's ufunc set-up costs more than a Python scan
        return any(v != v for v in values.ravel().tolist())
    return bool(np.isnan(values).any())


# ---------------------------------------------------------------------------------------------
# Session cache with alias hot swap

Resolve = Callable[[str, str], tuple[int, str]]
Fetch = Callable[[str, int], tuple[bytes, str]]


@dataclass(frozen=True)
class _AliasState:
    version: int
    etag: str
    checked_at: float
    model: LoadedModel


# A model last confirmed within this many recheck intervals answers while its alias is rechecked in the
# background; one confirmed longer ago (no traffic since) is rechecked before it answers.
_STALE_INTERVALS = 2


def _in_background(job: Callable[[], None]) -> None:
    threading.Thread(target=job, name="model-recheck", daemon=True).start()


class ModelCache:
    """Sessions per (model, version); aliases re-resolved at most every recheck_seconds (in the background under
    steady traffic) and swapped when the new version has loaded."""

    def __init__(
        self,
        resolve: Resolve,
        fetch: Fetch,
        recheck_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_sessions: int = 8,
        refresh: Callable[[Callable[[], None]], None] | None = None,
    ) -> None:
        """refresh(job) runs an alias recheck off the request path (default: a daemon thread per recheck)."""
        self._resolve = resolve
        self._fetch = fetch
        self._recheck = recheck_seconds
        self._clock = clock
        self._max_sessions = max_sessions
        self._aliases: dict[tuple[str, str], _AliasState] = {}
        self._sessions: OrderedDict[tuple[str, int], LoadedModel] = OrderedDict()
        self._failures: dict[tuple[str, int], tuple[float, ModelArtifactError]] = {}
        self._locks: dict[tuple[Any, ...], threading.Lock] = {}
        self._guard = threading.Lock()  # held only for dict bookkeeping, never across I/O or loads
        self._refresh = refresh or _in_background

    def get(self, model: str, alias: str | None = None, version: int | None = None) -> LoadedModel:
        """The model for an alias (default 'champion') or a pinned version.

        Raises NotFound, Unavailable, or the load error when nothing good has been loaded yet.
        """
        if version is not None:
            if alias is not None:
                raise BadRequest(f"ask for an alias or a version, not both (alias={alias}, version={version})")
            return self._version(model, version)
        return self._alias(model, alias or "champion")

    def is_warm(self, model: str, alias: str | None = None, version: int | None = None) -> bool:
        """get() would answer from memory now: no registry read, download or session set-up on the caller's thread
        (an alias due for its recheck starts it in the background and still answers at once)."""
        if version is not None:
            with self._guard:
                return (model, version) in self._sessions
        state = self._aliases.get((model, alias or "champion"))
        return state is not None and self._clock() - state.checked_at < _STALE_INTERVALS * self._recheck

    def _alias(self, model: str, alias: str) -> LoadedModel:
        key = (model, alias)
        state = self._aliases.get(key)
        if state is not None:
            age = self._clock() - state.checked_at
            if age < self._recheck:
                return state.model
            if age < _STALE_INTERVALS * self._recheck:
                self._start_recheck(model, alias)
                return state.model  # under steady traffic no request waits for the registry
        # Nothing to serve yet, or an idle alias (possibly many promotions behind): this request rechecks and waits,
        # as does any other that arrives meanwhile.
        with self._lock_for(("alias", model, alias)):
            state = self._aliases.get(key)
            now = self._clock()
            if state is not None and now - state.checked_at < self._recheck:
                return state.model
            return self._recheck_alias(model, alias, state, now)

    def _start_recheck(self, model: str, alias: str) -> None:
        """Re-resolve the alias (and load a new version) off the request path; the request that noticed the
        interval passed, and every one until the swap, is served by the last good model.

        On the request's thread a recheck cost that request a registry read, after a promotion also the new
        version's download and session set-up, and the storage SDK's timeouts when the registry did not answer."""
        lock = self._lock_for(("alias", model, alias))
        if not lock.acquire(blocking=False):
            return  # another thread is rechecking it

        def recheck() -> None:
            try:
                state = self._aliases.get((model, alias))
                now = self._clock()
                if state is not None and now - state.checked_at >= self._recheck:
                    self._recheck_alias(model, alias, state, now)
            except (NotFound, Unavailable) as err:  # the registry answered: the next request gets this error
                log.info("alias (name=%s, alias=%s) no longer resolves: %s", model, alias, err.message)
            except Exception:  # nobody joins this thread: what _recheck_alias itself does not catch is logged here
                log.exception("alias recheck failed (name=%s, alias=%s)", model, alias)
            finally:
                lock.release()

        try:
            self._refresh(recheck)
        except Exception:  # no thread to spare: the last good model answers, the next request tries again
            lock.release()
            log.exception("cannot start the alias recheck (name=%s, alias=%s)", model, alias)

    def _recheck_alias(self, model: str, alias: str, state: _AliasState | None, now: float) -> LoadedModel:
        key = (model, alias)
        try:
            version, etag = self._resolve(model, alias)
        except (NotFound, Unavailable):
            self._aliases.pop(key, None)  # the registry answered: the alias is gone, stop serving it
            self._forget_lock(("alias", model, alias))  # names come from URLs; keep nothing for bad ones
            raise
        except Exception:
            if state is None:
                raise
            log.warning(
                "alias lookup failed (name=%s, alias=%s); serving version %s", model, alias, state.version,
                exc_info=True,
            )
            self._aliases[key] = replace(state, checked_at=now)
            return state.model
        if state is not None and state.version == version:
            self._aliases[key] = replace(state, etag=etag, checked_at=now)
            return state.model
        return self._swap_alias(model, alias, state, version, etag, now)

    def _swap_alias(
        self, model: str, alias: str, state: _AliasState | None, version: int, etag: str, now: float
    ) -> LoadedModel:
        """Point the alias at a newly resolved version once it has loaded; keep the last good one if it cannot."""
        key = (model, alias)
        try:
            loaded = self._version(model, version)
        except Exception:
            if state is None:
                raise
            # Keep the last good model; the next attempt waits for the next recheck, not the next request.
            log.error(
                "cannot load model (name=%s, version=%s) for alias=%s; still serving version %s",
                model, version, alias, state.version, exc_info=True,
            )
            self._aliases[key] = replace(state, checked_at=now)
            return state.model
        # Loaded fully before the swap; requests in flight keep their reference to the old model.
        self._aliases[key] = _AliasState(version, etag, now, loaded)
        if state is not None:
            log.info("model (name=%s, alias=%s) swapped version %s -> %s", model, alias, state.version, version)
        return loaded

    def _version(self, model: str, version: int) -> LoadedModel:
        key = (model, version)
        with self._guard:
            loaded = self._sessions.get(key)
            if loaded is not None:
                self._sessions.move_to_end(key)
                return loaded
        with self._lock_for(key):  # one loader per version; other versions are not held up
            with self._guard:
                loaded = self._sessions.get(key)
            if loaded is not None:
                return loaded
            self._raise_recent_failure(key)
            try:
                data, sha256 = self._fetch(model, version)
            except NotFound:
                self._forget_lock(key)
                raise
            try:
                loaded = load_model(data, sha256, model, version)
            except ModelArtifactError as exc:
                self._failures[key] = (self._clock(), exc)
                log.error("%s", exc.internal or exc.message)
                raise
            self._store(key, loaded)
            return loaded

    def _raise_recent_failure(self, key: tuple[str, int]) -> None:
        failure = self._failures.get(key)
        if failure is None:
            return
        failed_at, exc = failure
        if self._clock() - failed_at < self._recheck:
            raise type(exc)(exc.message, details=exc.details, internal=exc.internal)
        del self._failures[key]

    def _store(self, key: tuple[str, int], loaded: LoadedModel) -> None:
        with self._guard:
            self._failures.pop(key, None)
            self._sessions[key] = loaded
            while len(self._sessions) > self._max_sessions:
                self._sessions.popitem(last=False)  # aliases and in-flight requests keep their own reference

    def _forget_lock(self, key: tuple[Any, ...]) -> None:
        """Drop a lock for a key that does not exist; a racing thread at worst repeats one lookup."""
        with self._guard:
            self._locks.pop(key, None)

    def _lock_for(self, key: tuple[Any, ...]) -> threading.Lock:
        with self._guard:
            lock = self._locks.get(key)
            if lock is None:
                lock = self._locks[key] = threading.Lock()
            return lock


# ---------------------------------------------------------------------------------------------
# Request and prediction ids


def request_id_of(raw: str | None) -> str:
    """The x-request-id header when it fits the id rule in at most 100 characters; a fresh uuid4 when absent or empty.

    Raises BadRequest: it goes into every default prediction id and into the prediction log.
    """
    if not raw:
        return fresh_request_id()
    if len(raw) > _MAX_REQUEST_ID or name_rules.PREDICTION_ID.fullmatch(raw) is None:
        raise BadRequest(f"header x-request-id ({_show(raw)}) is not valid: use {_REQUEST_ID_RULE}, "
                         "or leave it out and one is made for you")
    return raw


def fresh_request_id() -> str:
    """A random (version 4) UUID as text, as str(uuid.uuid4()) makes it at about a third of the cost: every
    request without an x-request-id pays it."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_UUID_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


# RFC 4122 variant: the top two bits of byte 8 are 10, so its first hex digit is 8, 9, a or b
_UUID_VARIANT = {d: "89ab"[int(d, 16) & 3] for d in "0123456789abcdef"}


def header_ids(raw: str | None) -> list[str] | None:
    """The x-prediction-ids header as a list (comma-separated, blanks around commas allowed), each id checked.

    Raises BadRequest for an empty header, an id that breaks names.PREDICTION_ID or a repeated id.
    """
    if raw is None:
        return None
    if not raw.strip(" \t"):
        raise BadRequest(f"header {IDS_HEADER} is empty; send one id per row, comma-separated, or leave it out")
    ids = [part.strip(" \t") for part in raw.split(",")]  # RFC 9110 list syntax: optional blanks around commas
    _check_ids(ids, f"header {IDS_HEADER}")
    return ids


def row_ids(request_id: str, rows: int, header: list[str] | None, params: Any) -> Sequence[str]:
    """One id per row: the header's (already checked by header_ids), params.ids, or '<request_id>-<row>'
    (a DefaultIds: made only where they are read).

    Raises BadRequest when both are given, params.ids is not a list of valid unique ids, or the count is not rows.
    """
    if header is not None and params is not None:
        raise BadRequest(f"per-row ids came in both header {IDS_HEADER} and params.ids; send them in one place")
    if header is None and params is None:
        return DefaultIds(request_id, rows)
    if header is not None:
        ids, where = header, f"header {IDS_HEADER}"
    else:
        ids, where = _params_id_list(params), "params.ids"
    if len(ids) != rows:
        raise BadRequest(f"{where} has {len(ids)} ids for {rows} rows; send exactly one id per row, in row order")
    return ids


def _params_id_list(params: Any) -> list[str]:
    if not isinstance(params, list):
        raise BadRequest(f"params.ids must be a list of strings, one id per row; got {_json_type(params)}")
    if set(map(type, params)) - {str}:
        i = next(i for i, v in enumerate(params) if not isinstance(v, str))
        raise BadRequest(f"params.ids item {i}: expected a string, got {_show(params[i])}")
    _check_ids(params, "params.ids")
    return params


def _check_ids(ids: list[str], where: str) -> None:
    """Every id fits names.PREDICTION_ID and none repeats. Raises BadRequest naming the first bad id."""
    rule = name_rules.PREDICTION_ID
    if not all(map(rule.fullmatch, ids)):
        i = next(i for i, v in enumerate(ids) if rule.fullmatch(v) is None)
        raise BadRequest(f"{where} item {i} ({_show(ids[i])}) is not a valid id: use {name_rules.PREDICTION_ID_RULE}")
    if len(set(ids)) != len(ids):
        repeated = sorted(v for v, count in Counter(ids).items() if count > 1)
        raise BadRequest(f"{where} repeats ids {_show(repeated)}; every row needs its own id")


# ---------------------------------------------------------------------------------------------
# One call for the HTTP handler


@dataclass(frozen=True)
class Scored:
    """One successful request, as an observer (the prediction logger) sees it; nothing here may be mutated."""

    model: LoadedModel
    request_id: str
    prediction_ids: Sequence[str]
    inputs: dict[str, np.ndarray]
    result: dict[str, Any]


Observer = Callable[[Scored], None]


def target(model: str | None, alias: str | None, version: str | int | None) -> tuple[str, str | None, int | None]:
    """The route's model name and the query's pin (?alias= or ?version=), checked by shared.names.

    Raises InvalidParameter (400) naming the rule, before anything reads storage.
    """
    name = name_rules.model_name(model)
    if alias is not None and version is not None:
        raise InvalidParameter(
            f"pass either ?alias= or ?version=, not both (alias={_show(alias)}, version={_show(version)})"
        )
    if version is not None:
        return name, None, name_rules.version(version, what="?version=")
    return name, None if alias is None else name_rules.alias(alias), None


def score(
    cache: ModelCache,
    model: str | None,
    body: bytes,
    content_type: str | None,
    *,
    alias: str | None = None,
    version: str | int | None = None,
    request_id: str | None = None,
    prediction_ids: str | None = None,
    max_bytes: int,
    observe: Observer | None = None,
    accept: str | None = None,
) -> tuple[int, dict[str, Any] | Encoded, dict[str, str]]:
    """Score one request: (status, JSON body, headers); errors come back MLflow-shaped, never raised.

    accept is the Accept header: a 200 answer is an Encoded CSV or Arrow stream when it asks for one
    (response_kind), else the JSON body; errors are always JSON.

    model, alias and version are as the caller sent them (route and query), request_id and
    prediction_ids are the x-request-id and x-prediction-ids headers (None when absent); all are
    checked here. Every answer has an x-request-id header, except the 400 for an invalid one.
    observe(Scored) runs after a success, e.g. to feed the prediction logger; its failures are
    logged and never change the response.
    """
    try:
        rid = request_id_of(request_id)
    except BadRequest as err:
        return err.status, {"error_code": err.code, "message": err.message}, {}
    status, answer, headers = _score(cache, model, body, content_type, alias, version, rid, prediction_ids,
                                     max_bytes, observe, response_kind(accept))
    return status, answer, {**headers, "x-request-id": rid}


def _score(
    cache: ModelCache, model: str | None, body: bytes, content_type: str | None, alias: str | None,
    version: str | int | None, rid: str, ids_header: str | None, max_bytes: int, observe: Observer | None,
    kind: str,
) -> tuple[int, dict[str, Any] | Encoded, dict[str, str]]:
    try:
        name, pin_alias, pin_version = target(model, alias, version)
        header = header_ids(ids_header)  # like the names, before storage is read
        check_size(body, max_bytes)  # before touching storage for a body we will refuse anyway
        loaded = cache.get(name, alias=pin_alias, version=pin_version)
        request = read_request(body, content_type, loaded.signature, max_bytes)
        ids = row_ids(rid, request.rows, header, request.ids)
        answer, result = _answer(loaded, request, ids, kind)
    except PipelineError as err:
        if err.status >= 500:  # the answer keeps to err.message; the log gets what the operator needs
            log.error("scoring failed (name=%s): %s", _show(model), err.internal or err.message)
        return err.status, {"error_code": err.code, "message": err.message}, {}
    except Exception:
        log.exception("scoring failed (name=%s, alias=%s, version=%s)", _show(model), _show(alias), _show(version))
        return 500, {"error_code": PipelineError.code, "message": "internal error while scoring"}, {}
    if observe is not None:
        try:
            observe(Scored(loaded, rid, ids, request.inputs, result))
        except Exception:
            log.exception("prediction observer failed (name=%s, version=%s)", name, loaded.version)
    return 200, answer, {"x-model-version": str(loaded.version)}


def _answer(
    loaded: LoadedModel, request: ScoringRequest, ids: Sequence[str], kind: str
) -> tuple[dict[str, Any] | Encoded, dict[str, Any]]:
    """The 200 body (JSON, or CSV/Arrow) and what an observer sees, whatever the body: the output columns as
    arrays (predictions [N], probabilities [N, classes] with probability_classes), which the prediction log
    turns into lines column by column (shared.prediction_log.columnar_lines) for a big request."""
    labels, probabilities, index = run_model(loaded, request.inputs, request.rows, request.matrix)
    sig = loaded.signature
    columns: dict[str, Any] = {"predictions": labels, "prediction_ids": ids}
    if probabilities is not None:
        columns.update(probabilities=probabilities, probability_classes=sig.class_keys)
    columns["model"] = {"name": loaded.name, "version": loaded.version}
    if kind == "json":
        if len(labels) >= _BULK_JSON_ROWS and _Fragment is not None:
            return _bulk_json_result(loaded, labels, probabilities, ids), columns
        return _json_result(loaded, labels, probabilities, ids), columns
    from shared import arrow_bodies  # pyarrow loads with the first CSV or Arrow answer

    if kind == "csv":
        text = arrow_bodies.results_csv(labels, probabilities, sig.class_keys, ids, loaded.version, index)
        return Encoded(text, _ENCODED_MEDIA[kind]), columns
    table = arrow_bodies.results_table(labels, probabilities, sig.class_keys, ids, loaded.version, index)
    return Encoded(arrow_bodies.arrow_stream(table), _ENCODED_MEDIA[kind]), columns
