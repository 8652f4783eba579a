"""shared.onnx_rewrite: the rewritten graph computes what the original does, on graphs of every matching shape."""
from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from shared import onnx_rewrite
from shared.scoring import PACKED_INPUT

OPS = ("Sub", "Add", "Mul", "Div")


def _graph(features: int, classes: int, imputer: bool, chain: list[tuple[str, np.ndarray]], seed: int,
           extra_output: bool = False) -> onnx.ModelProto:
    """What skl2onnx makes of [imputer] -> [scaler-like chain] -> linear model, on `features` [N, 1] inputs."""
    rng = np.random.default_rng(seed)
    names = [f"f{i}" for i in range(features)]
    nodes = [helper.make_node("Concat", names, ["x"], axis=1)]
    inits = []
    x = "x"
    if imputer:
        inits.append(numpy_helper.from_array(rng.normal(size=(1, features)), "fill"))
        nodes += [helper.make_node("IsNaN", [x], ["nan"]), helper.make_node("Where", ["nan", "fill", x], ["filled"])]
        x = "filled"
    for i, (op, k) in enumerate(chain):
        inits.append(numpy_helper.from_array(k, f"k{i}"))
        nodes.append(helper.make_node(op, [x, f"k{i}"], [f"a{i}"]))
        x = f"a{i}"
    inits += [numpy_helper.from_array(rng.normal(size=(features, classes)), "W"),
              numpy_helper.from_array(rng.normal(size=(1, classes)), "b")]
    nodes += [helper.make_node("MatMul", [x, "W"], ["mm"]), helper.make_node("Add", ["mm", "b"], ["scores"]),
              helper.make_node("Sigmoid", ["scores"], ["probabilities"])]
    outputs = [helper.make_tensor_value_info("probabilities", TensorProto.DOUBLE, [None, classes])]
    if extra_output:  # the scaled matrix is also an output: nothing before the MatMul may change
        outputs.append(helper.make_tensor_value_info(x, TensorProto.DOUBLE, [None, features]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.DOUBLE, [None, 1])
                                          for n in names], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    return model


def _run(model: onnx.ModelProto, x: np.ndarray) -> list[Any]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {f"f{i}": np.ascontiguousarray(x[:, [i]]) for i in range(x.shape[1])}
    return session.run(None, feeds)


def _rewritten(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    applied = onnx_rewrite.rewrite(copy)
    onnx.checker.check_model(copy)
    return copy, applied


# data (for the chain), features, classes, imputer, seed, rows: the graphs and inputs the property tests draw
GRAPHS = (st.data(), st.integers(1, 12), st.integers(1, 3), st.booleans(), st.integers(0, 2**16), st.integers(0, 40))


@st.composite
def _chains(draw: st.DrawFn, features: int) -> list[tuple[str, np.ndarray]]:
    chain = []
    for _ in range(draw(st.integers(0, 3))):
        shape = draw(st.sampled_from([(features,), (1, features), ()]))
        k = np.array(draw(st.lists(st.floats(0.25, 4.0) | st.floats(-4.0, -0.25), min_size=features,
                                   max_size=features)))[: (features if shape else 1)].reshape(shape)
        chain.append((draw(st.sampled_from(OPS)), k))
    return chain


@settings(max_examples=40, deadline=None)
@given(*GRAPHS)
def test_the_rewritten_graph_gives_the_originals_outputs(
    data: st.DataObject, features: int, classes: int, imputer: bool, seed: int, rows: int,
) -> None:
    model = _graph(features, classes, imputer, data.draw(_chains(features)), seed)
    rewritten, applied = _rewritten(model)
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 3, (rows, features))
    if imputer:
        x[rng.random(x.shape) < 0.2] = np.nan
    before, after = _run(model, x), _run(rewritten, x)
    np.testing.assert_allclose(after[0], before[0], rtol=1e-9, atol=1e-12)
    assert "feature_major" in applied  # every graph here matches it
    ops = [n.op_type for n in rewritten.graph.node]
    assert not any(op in OPS for op in ops[: ops.index("MatMul")])  # the chain folded away
    assert len(rewritten.graph.node) <= len(model.graph.node) + 2  # Reshape and Transpose, at most


def test_a_chain_whose_result_is_also_read_elsewhere_is_left_alone() -> None:
    chain = [("Sub", np.arange(4.0)), ("Div", np.arange(1.0, 5.0))]
    model = _graph(4, 2, True, chain, seed=1, extra_output=True)
    rewritten, applied = _rewritten(model)
    assert applied == []
    assert rewritten.SerializeToString() == model.SerializeToString()


def test_a_string_input_keeps_the_graph_row_major() -> None:
    """A categorical input (one-hot encoded) is not an [N, 1] number: the Concat is not rewritten."""
    model = _graph(3, 2, False, [], seed=2)
    model.graph.input[1].type.tensor_type.elem_type = TensorProto.STRING
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    assert onnx_rewrite.feature_major(copy) is False
    assert copy.SerializeToString() == model.SerializeToString()


@pytest.mark.parametrize("op", OPS)
def test_each_affine_op_folds_into_the_weights_and_bias(op: str) -> None:
    k = np.array([0.5, 2.0, -3.0])
    model = _graph(3, 2, False, [(op, k)], seed=3)
    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    assert onnx_rewrite.fold_affine(folded) is True
    assert [n.op_type for n in folded.graph.node] == ["Concat", "MatMul", "Add", "Sigmoid"]
    x = np.random.default_rng(3).normal(size=(7, 3))
    np.testing.assert_allclose(_run(folded, x)[0], _run(model, x)[0], rtol=1e-12)


def test_a_float32_graph_is_left_alone() -> None:
    """In float32 the new rounding order would show beyond the export's tolerance: no rewrite applies."""
    model = _graph(3, 2, True, [("Sub", np.arange(3.0)), ("Div", np.arange(1.0, 4.0))], seed=4)
    for init in model.graph.initializer:
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float32), init.name))
    for value in [*model.graph.input, *model.graph.output]:
        value.type.tensor_type.elem_type = TensorProto.FLOAT
    rewritten, applied = _rewritten(model)
    assert applied == []
    assert rewritten.SerializeToString() == model.SerializeToString()


def _classifier(lookup: bool) -> onnx.ModelProto:
    """skl2onnx's classifier tail: label = Reshape(ArrayFeatureExtractor(classes, ArgMax(scores))) [or ArgMax]."""
    inits = [numpy_helper.from_array(np.array([[1.0, -1.0, 0.5], [0.2, 0.3, -2.0]]), "W"),
             numpy_helper.from_array(np.array([-1], dtype=np.int64), "shape")]
    nodes = [helper.make_node("Concat", ["f0", "f1"], ["x"], axis=1), helper.make_node("MatMul", ["x", "W"], ["s"]),
             helper.make_node("Softmax", ["s"], ["probabilities"], axis=1),
             helper.make_node("ArgMax", ["s"], ["idx"], axis=1)]
    if lookup:
        inits.append(helper.make_tensor("classes", TensorProto.STRING, [3], [b"a", b"b", b"c"]))
        nodes += [helper.make_node("ArrayFeatureExtractor", ["classes", "idx"], ["picked"], domain="ai.onnx.ml"),
                  helper.make_node("Reshape", ["picked", "shape"], ["label"])]
    else:
        nodes.append(helper.make_node("Reshape", ["idx", "shape"], ["label"]))
    label_type = TensorProto.STRING if lookup else TensorProto.INT64
    graph = helper.make_graph(
        nodes, "c", [helper.make_tensor_value_info(n, TensorProto.DOUBLE, [None, 1]) for n in ("f0", "f1")],
        [helper.make_tensor_value_info("label", label_type, [None]),
         helper.make_tensor_value_info("probabilities", TensorProto.DOUBLE, [None, 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("ai.onnx.ml", 3)])
    onnx.checker.check_model(model)
    return model


def test_a_looked_up_label_gives_out_its_index_without_an_extra_node() -> None:
    model = _classifier(lookup=True)
    rewritten, applied = _rewritten(model)
    assert applied == ["feature_major", "label_index"]  # the Concat -> MatMul too
    assert [o.name for o in rewritten.graph.output] == ["label", "probabilities", onnx_rewrite.LABEL_INDEX]
    argmax = next(n for n in rewritten.graph.node if n.op_type == "ArgMax")
    assert list(argmax.output) == [onnx_rewrite.LABEL_INDEX]  # renamed, not copied by an extra node
    assert "Identity" not in {n.op_type for n in rewritten.graph.node}
    x = np.random.default_rng(3).normal(size=(50, 2))
    (label0, proba0), (label, proba, index) = _run(model, x), _run(rewritten, x)
    assert label.tolist() == label0.tolist() and np.array_equal(proba, proba0)
    assert np.array(["a", "b", "c"], dtype=object)[index.ravel()].tolist() == label.tolist()
    assert len(set(label.tolist())) > 1


def test_a_label_that_is_not_looked_up_gets_no_index() -> None:
    model = _classifier(lookup=False)
    assert "label_index" not in _rewritten(model)[1]


def _binary(w: np.ndarray, b: float, mirrored: bool = True) -> onnx.ModelProto:
    """skl2onnx's binary logistic regression: scores [-(x w + b), x w + b], ArgMax for the looked-up label,
    Sigmoid then an L1 Normalizer (Abs, ReduceSum, Div) for the probabilities."""
    names = [f"f{i}" for i in range(len(w))]
    other = -w if mirrored else -w * 1.5
    inits = [numpy_helper.from_array(np.stack([other, w], axis=1), "W"),
             numpy_helper.from_array(np.array([[-b, b]]), "b"),
             numpy_helper.from_array(np.array([1], dtype=np.int64), "axis"),
             numpy_helper.from_array(np.array([-1], dtype=np.int64), "shape"),
             helper.make_tensor("classes", TensorProto.STRING, [2], [b"no", b"yes"])]
    nodes = [helper.make_node("Concat", names, ["x"], axis=1), helper.make_node("MatMul", ["x", "W"], ["mm"]),
             helper.make_node("Add", ["mm", "b"], ["raw"]), helper.make_node("ArgMax", ["raw"], ["idx"], axis=1),
             helper.make_node("Sigmoid", ["raw"], ["sig"]), helper.make_node("Abs", ["sig"], ["ab"]),
             helper.make_node("ReduceSum", ["ab", "axis"], ["norm"], keepdims=1),
             helper.make_node("Div", ["sig", "norm"], ["probabilities"]),
             helper.make_node("ArrayFeatureExtractor", ["classes", "idx"], ["picked"], domain="ai.onnx.ml"),
             helper.make_node("Reshape", ["picked", "shape"], ["label"])]
    graph = helper.make_graph(
        nodes, "binary", [helper.make_tensor_value_info(n, TensorProto.DOUBLE, [None, 1]) for n in names],
        [helper.make_tensor_value_info("label", TensorProto.STRING, [None]),
         helper.make_tensor_value_info("probabilities", TensorProto.DOUBLE, [None, 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("ai.onnx.ml", 3)])
    onnx.checker.check_model(model)
    return model


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 8), st.integers(0, 2**16), st.integers(1, 60), st.floats(-3, 3).filter(
    lambda b: b == 0 or abs(b) > 1e-40))
def test_a_binary_logistic_regression_computes_one_score(features: int, seed: int, rows: int, b: float) -> None:
    rng = np.random.default_rng(seed)
    w = rng.normal(size=features)
    model = _binary(w, b)
    rewritten, applied = _rewritten(model)
    assert applied == ["feature_major", "label_index", "binary_logistic"]
    ops = [n.op_type for n in rewritten.graph.node]
    assert "ArgMax" not in ops and "Div" not in ops and ops.count("Sigmoid") == 1
    x = rng.normal(0, 3, (rows, features))
    x[0] = 0.0  # with b = 0 a score of exactly 0: both classes tie, ArgMax takes the first
    (label0, proba0), (label, proba, index) = _run(model, x), _run(rewritten, x)
    assert label.tolist() == label0.tolist()
    assert np.array(["no", "yes"], dtype=object)[index.ravel()].tolist() == label.tolist()
    np.testing.assert_allclose(proba, proba0, rtol=1e-12, atol=1e-15)
    score = x @ w + b
    expit = 1 / (1 + np.exp(-score))  # as onnxruntime approximates it
    np.testing.assert_allclose(proba[:, 1], expit, rtol=1e-9, atol=1e-15)
    assert np.array_equal(proba[:, 0], 1 - proba[:, 1])  # and its 1 - p


def test_a_tie_goes_to_the_first_class_as_argmax_gives_it() -> None:
    model = _binary(np.array([1.0, -1.0]), 0.0)
    rewritten, applied = _rewritten(model)
    assert "binary_logistic" in applied
    x = np.array([[2.0, 2.0], [1.0, 0.0], [0.0, 1.0]])  # scores 0, 1, -1
    assert _run(rewritten, x)[0].tolist() == _run(model, x)[0].tolist() == ["no", "yes", "no"]


def test_an_intercept_that_is_zero_in_float32_but_not_in_float64_keeps_the_two_scores() -> None:
    # onnxruntime would drop the one score's Add of it (its no-op elimination compares in float32)
    model = _binary(np.array([1.0]), 1e-50)
    rewritten, applied = _rewritten(model)
    assert "binary_logistic" not in applied
    assert _run(rewritten, np.zeros((1, 1)))[0].tolist() == _run(model, np.zeros((1, 1)))[0].tolist() == ["yes"]


def test_scores_that_are_not_mirrored_are_left_alone() -> None:
    applied = _rewritten(_binary(np.array([1.0, 2.0]), 0.5, mirrored=False))[1]
    assert applied == ["feature_major", "label_index"]


# ---------------------------------------------------------------------------------------------
# The packed companion: every input at once, feature-major, for rows with no missing value


def _run_packed(model: onnx.ModelProto, x: np.ndarray) -> list[Any]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {PACKED_INPUT: np.ascontiguousarray(x.T)})


@settings(max_examples=40, deadline=None)
@given(*GRAPHS)
def test_the_packed_graph_gives_the_rewritten_graph_s_outputs_bit_for_bit_on_complete_rows(
    data: st.DataObject, features: int, classes: int, imputer: bool, seed: int, rows: int,
) -> None:
    rewritten, _ = _rewritten(_graph(features, classes, imputer, data.draw(_chains(features)), seed))
    companion = onnx_rewrite.packed(rewritten)
    assert companion is not None
    onnx.checker.check_model(companion)
    assert [i.name for i in companion.graph.input] == [PACKED_INPUT]
    ops = [n.op_type for n in companion.graph.node]
    assert "Concat" not in ops and "IsNaN" not in ops and "Where" not in ops
    x = np.random.default_rng(seed).normal(0, 3, (rows, features))
    for got, expected in zip(_run_packed(companion, x), _run(rewritten, x), strict=True):
        assert np.array_equal(got, expected)


def test_only_feature_major_s_stacking_of_every_input_gets_a_packed_graph() -> None:
    model = _graph(3, 2, True, [], seed=5)
    assert onnx_rewrite.packed(model) is None  # row-major Concat (axis 1): not rewritten yet
    rewritten, _ = _rewritten(model)
    reordered = onnx.ModelProto()
    reordered.CopyFrom(rewritten)
    reordered.graph.input.insert(0, reordered.graph.input.pop())  # the stack no longer follows the inputs' order
    assert onnx_rewrite.packed(reordered) is None
    assert onnx_rewrite.packed(rewritten) is not None


def test_the_packed_companion_of_a_looked_up_label_gives_the_index_only() -> None:
    rewritten, _ = _rewritten(_binary(np.array([0.5, -1.0, 2.0]), 0.25))
    companion = onnx_rewrite.packed(rewritten)
    assert companion is not None
    onnx.checker.check_model(companion)
    assert [o.name for o in companion.graph.output] == ["probabilities", onnx_rewrite.LABEL_INDEX]
    assert "ArrayFeatureExtractor" not in {n.op_type for n in companion.graph.node}
    assert "classes" not in {i.name for i in companion.graph.initializer}
    x = np.random.default_rng(9).normal(0, 2, (40, 3))
    expected = dict(zip(["label", "probabilities", onnx_rewrite.LABEL_INDEX], _run(rewritten, x), strict=True))
    got = dict(zip(["probabilities", onnx_rewrite.LABEL_INDEX], _run_packed(companion, x), strict=True))
    for name, value in got.items():
        assert np.array_equal(value, expected[name])
