"""Exact rewrites of the graphs skl2onnx makes for linear models, which onnxruntime's optimiser leaves alone.

A numeric pipeline like breast-cancer's (imputer, scaler, logistic regression) converts to
Concat(30 [N, 1] inputs) -> Where(IsNaN(x), fill, x) -> Sub(mean) -> Div(scale) -> MatMul(coef) -> Add(intercept).
For 10,000 rows onnxruntime spent ~380 µs in the Concat (30 strided column copies), ~500 µs in the Where
(broadcasting a [1, 30] fill over 30-wide rows) and ~380 µs in the scaler, of ~2.3 ms. The rewrites:

- fold_affine: per-feature Sub/Add/Mul/Div by constants just before a MatMul by a constant matrix is an affine map
  x * a + c; it folds into the matrix and the bias after it: MatMul(x, diag(a) W), Add(c W + b).
- feature_major: Concat the [N, 1] inputs along axis 0 (contiguous copies, [F * N, 1]) and read that as x^T [F, N],
  run IsNaN/Where there with the fill as a [F, 1] column (long contiguous spans), MatMul(W^T, x^T) gives [K, N], and
  one Transpose of that small result restores [N, K] under the old name.
- label_index: a classifier's class index (ArgMax before the label lookup) as a third output, so scoring can
  take labels from the signature's classes instead of onnxruntime's per-row Python strings.
- binary_logistic: a binary logistic regression's two mirrored scores (-s, s), Sigmoid and L1 Normalizer over
  both and ArgMax, computed from s alone: Sigmoid(s), 1 - that, and s > 0 (sklearn's predict_proba and
  predict); for 10,000 rows of breast-cancer ~0.65 -> ~0.22 ms in onnxruntime.

And one companion graph (packed), which export_onnx embeds in the model's metadata for scoring: the
feature_major graph taking every input at once as one feature-major [F, N] matrix, for rows with no missing
value, and with the label index but not the labels looked up from it. A one-row call with 30 [N, 1] inputs
spends most of its ~32 µs in onnxruntime on the inputs themselves (~10 µs with one input); 10,000 rows without
the Concat, the fill and the string lookup run in ~0.22 ms instead of ~1.2 (0.66 with it, before binary_logistic).

Each computes what the graph computed up to rounding (~1e-15 relative in float64, the precision export_onnx gives
numeric inputs; float32 graphs are left alone); export_onnx checks the rewritten graph against the original and
against sklearn (and the classes at the label index against the labels), and keeps the original on any doubt.
A graph that does not match a pattern exactly (a categorical input, a tree model, a constant used twice) is left
as it is. Only onnx (build-time) is needed; scoring just loads the result.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import onnx
from onnx import helper, numpy_helper

from shared.scoring import LABEL_INDEX, PACKED_INPUT

_AFFINE_OPS = ("Sub", "Add", "Mul", "Div")


class _Graph:
    """The graph's nodes, constants and consumers, kept in step while a rewrite edits them."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.consts = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
        self.outputs = {o.name for o in graph.output}
        self._taken = {*self.consts, *(i.name for i in graph.input), *(x for n in graph.node for x in n.output),
                       *(n.name for n in graph.node)}

    def producer(self, name: str) -> onnx.NodeProto | None:
        return next((n for n in self.graph.node if name in n.output), None)

    def consumers(self, name: str) -> list[onnx.NodeProto]:
        return [n for n in self.graph.node if name in n.input]

    def only_consumer(self, name: str) -> onnx.NodeProto | None:
        """The one node that reads `name`, if nothing else (no other node, no graph output) does."""
        users = self.consumers(name)
        return users[0] if len(users) == 1 and name not in self.outputs else None

    def const(self, name: str) -> np.ndarray | None:
        """An initializer used by one node only (so a rewrite may change it)."""
        return self.consts.get(name) if len(self.consumers(name)) == 1 else None

    def set_const(self, name: str, value: np.ndarray) -> None:
        for init in self.graph.initializer:
            if init.name == name:
                init.CopyFrom(numpy_helper.from_array(value, name))
        self.consts[name] = value

    def add_const(self, name: str, value: np.ndarray) -> str:
        self.graph.initializer.append(numpy_helper.from_array(value, name))
        self.consts[name] = value
        return name

    def unique(self, base: str) -> str:
        """A name no tensor, constant or node of the graph has, nor any name this returned before."""
        name, i = base, 0
        while name in self._taken:
            i += 1
            name = f"{base}{i}"
        self._taken.add(name)
        return name

    def drop_unused_consts(self) -> None:
        used = {i for n in self.graph.node for i in n.input}
        keep = [init for init in self.graph.initializer if init.name in used]
        del self.graph.initializer[:]
        self.graph.initializer.extend(keep)
        self.consts = {k: v for k, v in self.consts.items() if k in used}


def _per_feature(value: np.ndarray | None, features: int) -> np.ndarray | None:
    """A constant as a [features] vector if it broadcasts per feature over [N, features] (a scalar, [F], [1, F])."""
    if value is None or value.dtype.kind != "f" or value.size not in (1, features):
        return None
    if value.ndim > 2 or (value.ndim == 2 and value.shape[0] != 1):
        return None
    return np.broadcast_to(value.reshape(-1), (features,)).astype(np.float64)


def fold_affine(model: onnx.ModelProto) -> bool:
    """Fold per-feature constant Sub/Add/Mul/Div chains into the MatMul(x, W) + b after them; True if any."""
    g = _Graph(model.graph)
    changed = False
    for matmul in [n for n in g.graph.node if n.op_type == "MatMul"]:
        changed = _fold_into(g, matmul) or changed
    if changed:
        g.drop_unused_consts()
    return changed


def _fold_into(g: _Graph, matmul: onnx.NodeProto) -> bool:
    found = _weights_and_bias(g, matmul)
    if found is None:
        return False
    w, add, b = found
    chain, source = _affine_chain(g, matmul.input[0], w.shape[0])
    if not chain:
        return False
    scale, shift = _composed(chain, w.shape[0])
    g.set_const(matmul.input[1], (w * scale[:, None]).astype(w.dtype))
    g.set_const(add.input[1], (b + (shift @ w).reshape(b.shape)).astype(b.dtype))
    matmul.input[0] = source
    for node, _ in chain:
        g.graph.node.remove(node)
    return True


def _weights_and_bias(g: _Graph, matmul: onnx.NodeProto) -> tuple[np.ndarray, onnx.NodeProto, np.ndarray] | None:
    """(W, the Add node, b) of MatMul(x, W) -> Add(., b) with float64 constants only these nodes read."""
    w = g.const(matmul.input[1])
    add = g.only_consumer(matmul.output[0])
    if w is None or w.dtype != np.float64 or w.ndim != 2:
        return None
    if add is None or add.op_type != "Add" or add.input[0] != matmul.output[0]:
        return None
    b = g.const(add.input[1])
    if b is None or b.size != w.shape[1] or b.dtype != w.dtype:
        return None
    return w, add, b


def _composed(chain: list[tuple[onnx.NodeProto, np.ndarray]], features: int) -> tuple[np.ndarray, np.ndarray]:
    """(scale, shift) with chain(x) = x * scale + shift per feature; chain is listed from the MatMul backwards."""
    scale, shift = np.ones(features), np.zeros(features)
    for node, k in reversed(chain):
        if node.op_type in ("Sub", "Add"):
            shift = shift - k if node.op_type == "Sub" else shift + k
        else:
            k = k if node.op_type == "Mul" else 1.0 / k
            scale, shift = scale * k, shift * k
    return scale, shift


def _affine_chain(g: _Graph, source: str, features: int) -> tuple[list[tuple[onnx.NodeProto, np.ndarray]], str]:
    """The per-feature constant Sub/Add/Mul/Div nodes that produce `source`, walking back, each read only by the
    next; with the tensor the chain starts from."""
    chain = []
    while (node := g.producer(source)) is not None and node.op_type in _AFFINE_OPS \
            and g.only_consumer(source) is not None \
            and (k := _per_feature(g.consts.get(node.input[1]), features)) is not None:
        chain.append((node, k))
        source = node.input[0]
    return chain, source


def feature_major(model: onnx.ModelProto) -> bool:
    """Concat of [N, 1] inputs -> (IsNaN/Where fill) -> MatMul(W) computed on the transposed matrix; True if done."""
    g = _Graph(model.graph)
    inputs = {i.name: i for i in g.graph.input}
    for concat in [n for n in g.graph.node if n.op_type == "Concat"]:
        axis = _attribute(concat, "axis", None)
        if axis not in (1, -1) or not all(_column_input(inputs.get(name)) for name in concat.input):
            continue
        found = _imputed_matmul(g, concat.output[0], len(concat.input))
        if found is not None:
            _transpose(g, concat, *found)
            g.drop_unused_consts()
            return True
    return False


def _imputed_matmul(
    g: _Graph, x: str, features: int
) -> tuple[onnx.NodeProto | None, onnx.NodeProto | None, onnx.NodeProto, np.ndarray] | None:
    """(IsNaN, Where, MatMul, W) when x is read only by MatMul(x, W) or by Where(IsNaN(x), fill, x) -> MatMul(., W),
    with constant per-feature fill and W."""
    users = g.consumers(x)
    if x in g.outputs or not users:
        return None
    isnan = next((n for n in users if n.op_type == "IsNaN"), None)
    where = None
    if isnan is None:
        matmul = users[0] if len(users) == 1 else None
    else:
        where = g.only_consumer(isnan.output[0])
        if (len(users) != 2 or where is None or where.op_type != "Where"
                or list(where.input) != [isnan.output[0], where.input[1], x]
                or _per_feature(g.const(where.input[1]), features) is None):
            return None
        matmul = g.only_consumer(where.output[0])
    if matmul is None or matmul.op_type != "MatMul" or matmul.input[0] != (x if where is None else where.output[0]):
        return None
    w = g.const(matmul.input[1])
    if w is None or w.ndim != 2 or w.shape[0] != features:
        return None
    return isnan, where, matmul, w


def _column_input(value: onnx.ValueInfoProto | None) -> bool:
    """A graph input of shape [N, 1] holding doubles (in float32 the MatMul's new rounding order would show)."""
    if value is None or not value.type.HasField("tensor_type"):
        return False
    tensor = value.type.tensor_type
    dims = tensor.shape.dim
    return (tensor.elem_type == onnx.TensorProto.DOUBLE and len(dims) == 2
            and dims[1].HasField("dim_value") and dims[1].dim_value == 1)


def _transpose(g: _Graph, concat: onnx.NodeProto, isnan: onnx.NodeProto | None, where: onnx.NodeProto | None,
               matmul: onnx.NodeProto, w: np.ndarray) -> None:
    # [N, 1] pieces stacked along axis 0 are plain copies one after another: [F * N, 1], read as [F, N]
    stacked = g.unique("fm_stacked")
    shape = g.add_const(g.unique("fm_shape"), np.array([len(concat.input), -1], dtype=np.int64))
    xt = g.unique("fm_x")
    nodes = [helper.make_node("Concat", list(concat.input), [stacked], axis=0, name=g.unique("fm_concat")),
             helper.make_node("Reshape", [stacked, shape], [xt], name=g.unique("fm_reshape"))]
    if isnan is not None and where is not None:
        fill = g.consts[where.input[1]]
        fill_t = g.add_const(g.unique("fm_fill"), fill.reshape(-1, 1).astype(fill.dtype))
        nan_t, filled_t = g.unique("fm_isnan"), g.unique("fm_filled")
        nodes.append(helper.make_node("IsNaN", [xt], [nan_t], name=g.unique("fm_isnan_node")))
        nodes.append(helper.make_node("Where", [nan_t, fill_t, xt], [filled_t], name=g.unique("fm_where")))
        xt = filled_t
    w_t = g.add_const(g.unique("fm_weights"), np.ascontiguousarray(w.T))
    product = g.unique("fm_product")
    nodes.append(helper.make_node("MatMul", [w_t, xt], [product], name=g.unique("fm_matmul")))
    nodes.append(helper.make_node("Transpose", [product], [matmul.output[0]], perm=[1, 0],
                                  name=g.unique("fm_transpose")))
    old = [n for n in (concat, isnan, where, matmul) if n is not None]
    at = min(list(g.graph.node).index(n) for n in old)
    for node in old:
        g.graph.node.remove(node)
    for offset, node in enumerate(nodes):
        g.graph.node.insert(at + offset, node)


def label_index(model: onnx.ModelProto) -> bool:
    """A classifier's label looked up by ArrayFeatureExtractor(classes, index) also gives out that index, as a
    third output LABEL_INDEX (int64): scoring then asks onnxruntime for it instead of the labels and takes
    them from the signature's classes, which spares a Python string per row (~0.5 ms for 10,000 rows
    between onnxruntime's string output and an Arrow label column). The index tensor is renamed rather than
    copied by an Identity node, which would cost every call ~1 µs. True if done."""
    g = _Graph(model.graph)
    if len(model.graph.output) != 2 or LABEL_INDEX in g._taken:
        return False
    lookup = g.producer(model.graph.output[0].name)
    if lookup is not None and lookup.op_type == "Reshape":
        lookup = g.producer(lookup.input[0])
    if lookup is None or lookup.op_type != "ArrayFeatureExtractor" or lookup.input[0] not in g.consts:
        return False
    index = lookup.input[1]
    if g.producer(index) is None or index in g.outputs:
        return False
    _rename(g.graph, index, LABEL_INDEX)
    g.graph.output.append(helper.make_tensor_value_info(LABEL_INDEX, onnx.TensorProto.INT64, [None, 1]))
    return True


def binary_logistic(model: onnx.ModelProto) -> bool:
    """A binary logistic regression's mirrored scores, as skl2onnx writes them after feature_major: MatMul of
    weights [[-w], [w]] (transposed) and intercept [-b, b], then ArgMax for the label and Sigmoid with an L1
    Normalizer over both columns for the probabilities, computed from the one score s = x w + b: p = Sigmoid(s)
    and 1 - p (what sklearn's predict_proba computes) and the label index s > 0 (ArgMax's tie rule: the first
    class). Half the arithmetic over [N, 2] and three fewer nodes: ~0.65 -> ~0.22 ms for 10,000 rows here.
    The probabilities change by rounding only (the Normalizer's sum of the two is 1 up to it). True if done."""
    g = _Graph(model.graph)
    for matmul in [n for n in g.graph.node if n.op_type == "MatMul"]:
        found = _mirrored_scores(g, matmul)
        if found is not None:
            _one_score(g, found)
            g.drop_unused_consts()
            return True
    return False


def _attribute(node: onnx.NodeProto, name: str, default: Any) -> Any:
    """The node's attribute `name` as a Python value, or default when the node does not set it."""
    found = next((a for a in node.attribute if a.name == name), None)
    return default if found is None else helper.get_attribute_value(found)


class _Mirrored(NamedTuple):
    """The nodes binary_logistic replaces, and the score's weights [F] and intercept."""

    nodes: tuple[onnx.NodeProto, ...]
    argmax: onnx.NodeProto
    div: onnx.NodeProto
    w: np.ndarray
    b: float


def _mirrored_scores(g: _Graph, matmul: onnx.NodeProto) -> _Mirrored | None:
    """MatMul(W^T [2, F], x) -> Transpose -> Add(., b) with W^T[0] = -W^T[1] and b[0] = -b[1], read by exactly an
    ArgMax (axis 1, first index) and a Sigmoid whose output is L1-normalised per row (_l1_normalised)."""
    w = g.const(matmul.input[0])
    if w is None or w.dtype != np.float64 or w.shape[:1] != (2,) or w.ndim != 2 or not np.array_equal(w[0], -w[1]):
        return None
    transpose = g.only_consumer(matmul.output[0])
    if transpose is None or transpose.op_type != "Transpose" or list(_attribute(transpose, "perm", [])) != [1, 0]:
        return None
    add = g.only_consumer(transpose.output[0])
    b = None if add is None or add.op_type != "Add" or add.input[0] != transpose.output[0] else g.const(add.input[1])
    if add is None or b is None or not _mirrored_intercept(b):
        return None
    users = g.consumers(add.output[0])
    argmax = next((n for n in users if n.op_type == "ArgMax"), None)
    sigmoid = next((n for n in users if n.op_type == "Sigmoid"), None)
    if add.output[0] in g.outputs or len(users) != 2 or argmax is None or sigmoid is None:
        return None
    if (_attribute(argmax, "axis", 0) not in (1, -1) or _attribute(argmax, "keepdims", 1) != 1
            or _attribute(argmax, "select_last_index", 0) != 0):
        return None
    normalised = _l1_normalised(g, sigmoid.output[0])
    if normalised is None:
        return None
    return _Mirrored((matmul, transpose, add, argmax, sigmoid, *normalised), argmax, normalised[-1], w[1],
                     float(b.flat[1]))


def _mirrored_intercept(b: np.ndarray) -> bool:
    """True for [-b, b] in float64 with a b that survives as the one score's Add of a [1, 1] constant:
    onnxruntime's optimiser drops that Add when the constant is 0 in float32."""
    if b.dtype != np.float64 or b.shape not in ((2,), (1, 2)) or b.flat[0] != -b.flat[1]:
        return False
    return bool(b.flat[1] == 0 or np.float32(b.flat[1]) != 0)


def _l1_normalised(g: _Graph, x: str) -> tuple[onnx.NodeProto, onnx.NodeProto, onnx.NodeProto] | None:
    """(Abs, ReduceSum, Div) of Div(x, ReduceSum(Abs(x), axes [1], keepdims)) when nothing else reads x or them."""
    users = g.consumers(x)
    absolute = next((n for n in users if n.op_type == "Abs"), None)
    div = next((n for n in users if n.op_type == "Div"), None)
    if x in g.outputs or len(users) != 2 or absolute is None or div is None or div.input[0] != x:
        return None
    total = g.only_consumer(absolute.output[0])
    if total is None or total.op_type != "ReduceSum" or _attribute(total, "keepdims", 1) != 1:
        return None
    axes = g.consts.get(total.input[1]) if len(total.input) > 1 else np.array(_attribute(total, "axes", []))
    if axes is None or axes.tolist() not in ([1], [-1]) or div.input[1] != total.output[0] \
            or g.only_consumer(total.output[0]) is not div:
        return None
    return absolute, total, div


def _one_score(g: _Graph, found: _Mirrored) -> None:
    x = found.nodes[0].input[1]
    w = g.add_const(g.unique("bl_weights"), found.w.reshape(1, -1).copy())
    b = g.add_const(g.unique("bl_intercept"), np.array([[found.b]]))
    one, zero = g.add_const(g.unique("bl_one"), np.ones((1, 1))), g.add_const(g.unique("bl_zero"), np.zeros((1, 1)))
    column = g.add_const(g.unique("bl_column"), np.array([-1, 1], dtype=np.int64))
    product, score, positive, negative, both, above, index = (
        g.unique(f"bl_{name}") for name in ("product", "score", "positive", "negative", "both", "above", "index"))
    nodes = [
        helper.make_node("MatMul", [w, x], [product], name=g.unique("bl_matmul")),
        helper.make_node("Add", [product, b], [score], name=g.unique("bl_add")),  # [1, N]
        helper.make_node("Sigmoid", [score], [positive], name=g.unique("bl_sigmoid")),
        helper.make_node("Sub", [one, positive], [negative], name=g.unique("bl_sub")),
        helper.make_node("Concat", [negative, positive], [both], axis=0, name=g.unique("bl_concat")),
        helper.make_node("Transpose", [both], [found.div.output[0]], perm=[1, 0], name=g.unique("bl_transpose")),
        helper.make_node("Greater", [score, zero], [above], name=g.unique("bl_greater")),
        helper.make_node("Cast", [above], [index], to=onnx.TensorProto.INT64, name=g.unique("bl_cast")),
        helper.make_node("Reshape", [index, column], [found.argmax.output[0]], name=g.unique("bl_reshape")),
    ]
    at = min(list(g.graph.node).index(n) for n in found.nodes)
    for node in found.nodes:
        g.graph.node.remove(node)
    for offset, node in enumerate(nodes):
        g.graph.node.insert(at + offset, node)


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Rename a tensor made and read by nodes (not a graph input, output or initializer)."""
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for info in graph.value_info:
        if info.name == old:
            info.name = new


def packed(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """A copy of a feature_major graph for rows with no missing value, taking every input at once: one [F, N]
    float64 input PACKED_INPUT, whose row i is the graph's i-th input, in place of the Concat and Reshape that
    stack the [N, 1] inputs, and without the IsNaN/Where fill, which leaves such rows as they are. With a
    LABEL_INDEX output, the label looked up from it is left out too (scoring asks the companion for the index
    only: onnxruntime ran the string lookup whatever the fetches, ~150 µs of ~370 for 10,000 rows). The rest
    of the graph is untouched, so its outputs are the graph's, bit for bit. None unless the graph's inputs
    are exactly the ones feature_major stacked, in their order."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = _Graph(out.graph)
    stacking = _stacking(g)
    if stacking is None or PACKED_INPUT in g._taken:
        return None
    x = stacking[-1].output[0]
    fill = _fill(g, x)
    if fill is None:
        return None
    for node in [*stacking, *fill]:
        out.graph.node.remove(node)
    if fill:
        _rename(out.graph, fill[-1].output[0], x)
    _rename(out.graph, x, PACKED_INPUT)
    _drop_looked_up_label(g)
    features = len(out.graph.input)
    del out.graph.input[:]
    out.graph.input.append(helper.make_tensor_value_info(PACKED_INPUT, onnx.TensorProto.DOUBLE, [features, None]))
    g.drop_unused_consts()
    return out


def _drop_looked_up_label(g: _Graph) -> None:
    """Without the first output when it is the label looked up by label_index's index (an ArrayFeatureExtractor
    of constant classes, perhaps reshaped) and nothing else reads what the lookup makes."""
    names = [o.name for o in g.graph.output]
    if LABEL_INDEX not in names[1:]:
        return
    label = names[0]
    nodes = [g.producer(label)]
    if nodes[0] is not None and nodes[0].op_type == "Reshape":
        nodes.append(g.producer(nodes[0].input[0]))
    lookup = nodes[-1]
    if lookup is None or lookup.op_type != "ArrayFeatureExtractor" or list(lookup.input[1:]) != [LABEL_INDEX] \
            or lookup.input[0] not in g.consts or (len(nodes) == 2 and g.only_consumer(lookup.output[0]) is None):
        return
    for node in nodes:
        if node is not None:
            g.graph.node.remove(node)
    g.graph.output.remove(g.graph.output[0])
    g.drop_unused_consts()


def _stacking(g: _Graph) -> tuple[onnx.NodeProto, onnx.NodeProto] | None:
    """feature_major's Concat (axis 0) of every graph input, in order, and the Reshape to [F, -1] after it."""
    names = [i.name for i in g.graph.input]
    concat = next((n for n in g.graph.node if n.op_type == "Concat" and list(n.input) == names), None)
    if concat is None or not all(_column_input(i) for i in g.graph.input) \
            or _attribute(concat, "axis", None) != 0:
        return None
    reshape = g.only_consumer(concat.output[0])
    if reshape is None or reshape.op_type != "Reshape" or reshape.input[0] != concat.output[0]:
        return None
    shape = g.consts.get(reshape.input[1])
    if shape is None or shape.tolist() != [len(names), -1] or reshape.output[0] in g.outputs:
        return None
    return concat, reshape


def _fill(g: _Graph, x: str) -> tuple[onnx.NodeProto, ...] | None:
    """(IsNaN, Where) when x is read by Where(IsNaN(x), fill, x) and nothing else, () when x is not filled."""
    users = g.consumers(x)
    isnan = next((n for n in users if n.op_type == "IsNaN"), None)
    if isnan is None:
        return ()
    where = g.only_consumer(isnan.output[0])
    if len(users) != 2 or where is None or where.op_type != "Where" \
            or list(where.input) != [isnan.output[0], where.input[1], x] or where.output[0] in g.outputs:
        return None
    return isnan, where


REWRITES: dict[str, Callable[[onnx.ModelProto], bool]] = {
    "fold_affine": fold_affine, "feature_major": feature_major, "label_index": label_index,
    "binary_logistic": binary_logistic,
}


def rewrite(model: onnx.ModelProto) -> list[str]:
    """Apply every rewrite that matches, in place, in order; the names of those applied."""
    return [name for name, apply in REWRITES.items() if apply(model)]
