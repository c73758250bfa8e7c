"""A jaxpr lowered to an ONNX graph, primitive by primitive (`to_onnx`).

Why our own lowering rather than a converter package: jax2onnx installs beside this project's
dependencies only at 0.13.0 (its later releases require orbax-checkpoint < 0.11.37, the project
>= 0.12.8), and 0.13.0 fails on jax 0.10.2 (its flax plugins monkeypatch `nn.avg_pool` with a
signature our models do not call it with, and with only its `jax` plugins its `jnp` patches break
flax's shape checks); the TensorFlow route (jax2tf, then tf2onnx) needs jax2tf's graph mode,
which jax 0.10.2 no longer has (its SavedModels hold one `XlaCallModule` op that tf2onnx cannot
read). The models of this project use about forty primitives, each of which has an exact ONNX
counterpart, so the lowering below is short and owes nothing to a third party: it needs only the
`onnx` package (and onnxruntime to check it, ifdd_jax/export/core.py).

Every rule is exact up to float32 rounding: no primitive is approximated. The ones with no single
ONNX operator are written out: `erfc` as 1 - Erf, `rsqrt` as 1 / Sqrt, `reduce_window_sum` (sum
pooling) as a grouped convolution with a ones kernel, and jax's `gather` in the three forms the
models produce (`_gather`: ISSM's per-clip frame reads as GatherND with batch dimensions, fixed
reads along one axis as Gather, constant slices under a symbolic batch as Slice); a gather of
another form raises. Any primitive without a rule raises `UnsupportedPrimitive` naming it, so an
export never silently changes the computation.

A symbolic batch (jax.export.symbolic_shape("batch")) gives a model with a dynamic first
dimension: shapes that depend on it (reshape, broadcast) are computed in the graph from the
input's shape.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
import onnx
from jax.extend import core as jcore
from onnx import TensorProto, helper, numpy_helper

OPSET = 18
BATCH_SYMBOL = "batch"


class UnsupportedPrimitive(NotImplementedError):
    """A primitive (or a form of one) with no ONNX rule here."""


def _onnx_dtype(dtype: Any) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def _is_static(dim: Any) -> bool:
    return isinstance(dim, (int, np.integer))


_LINEAR = re.compile(rf"^(?:(\d+)\*)?{BATCH_SYMBOL}(?:\*(\d+))?(?: \+ (\d+))?$")


def _linear_in_batch(dim: Any) -> tuple[int, int]:
    """(a, c) with dim = a·batch + c, for the dimension expressions a symbolic batch produces."""
    match = _LINEAR.match(str(dim))
    if not match:
        raise UnsupportedPrimitive(f"dimension {dim} is not linear in the batch size")
    a = int(match.group(1) or 1) * int(match.group(2) or 1)
    return a, int(match.group(3) or 0)


class _Graph:
    """The ONNX nodes and initializers built so far, with fresh names."""

    def __init__(self) -> None:
        self.nodes: list = []
        self.initializers: list = []
        self._count = 0
        self._small: dict = {}
        self.batch: str | None = None  # int64 [1]: the batch size, when symbolic

    def fresh(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}_{self._count}"

    def const(self, value: Any, dtype: Any = None, prefix: str = "const") -> str:
        array = np.asarray(value, dtype=dtype)
        # Small constants (literals, shapes, axes) recur thousands of times: one initializer each.
        key = (array.dtype.str, array.shape, array.tobytes()) if array.size <= 64 else None
        if key is not None and key in self._small:
            return self._small[key]
        name = self.fresh(prefix)
        self.initializers.append(numpy_helper.from_array(array, name))
        if key is not None:
            self._small[key] = name
        return name

    def op(self, op_type: str, inputs: Sequence[str], num_outputs: int = 1, **attrs) -> Any:
        outputs = [self.fresh(op_type.lower()) for _ in range(num_outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outputs, **attrs))
        return outputs[0] if num_outputs == 1 else outputs

    def shape(self, dims: Sequence[Any]) -> str:
        """An int64 [len(dims)] tensor of `dims`, computed from the batch where symbolic."""
        if all(_is_static(d) for d in dims):
            return self.const([int(d) for d in dims], np.int64, "shape")
        pieces = []
        for d in dims:
            if _is_static(d):
                pieces.append(self.const([int(d)], np.int64, "dim"))
                continue
            a, c = _linear_in_batch(d)
            piece = self.batch
            if a != 1:
                piece = self.op("Mul", [piece, self.const([a], np.int64)])
            if c:
                piece = self.op("Add", [piece, self.const([c], np.int64)])
            pieces.append(piece)
        return self.op("Concat", pieces, axis=0)


Rule = Callable[["_Lowering", jcore.JaxprEqn, list], list]
_RULES: dict[str, Rule] = {}


def _rule(*names: str) -> Callable[[Rule], Rule]:
    def register(fn: Rule) -> Rule:
        for name in names:
            _RULES[name] = fn
        return fn

    return register


class _Lowering:
    """Lowers one jaxpr (and the jaxprs it calls) into a _Graph."""

    def __init__(self, graph: _Graph) -> None:
        self.g = graph

    def read(self, env: dict, atom: Any) -> str:
        if isinstance(atom, jcore.Literal):
            return self.g.const(np.asarray(atom.val, dtype=atom.aval.dtype), prefix="literal")
        return env[atom]

    def jaxpr(self, jaxpr: jcore.Jaxpr, consts: Sequence[str], args: Sequence[str]) -> list:
        env: dict = dict(zip(jaxpr.constvars, consts))
        env.update(zip(jaxpr.invars, args))
        for eqn in jaxpr.eqns:
            rule = _RULES.get(eqn.primitive.name)
            if rule is None:
                raise UnsupportedPrimitive(
                    f"no ONNX rule for the JAX primitive {eqn.primitive.name!r} "
                    f"(params {sorted(eqn.params)})"
                )
            outputs = rule(self, eqn, [self.read(env, v) for v in eqn.invars])
            for var, name in zip(eqn.outvars, outputs):
                env[var] = name
        return [self.read(env, v) for v in jaxpr.outvars]

    def closed(self, closed: jcore.ClosedJaxpr, args: Sequence[str]) -> list:
        consts = [self.g.const(np.asarray(c), prefix="weight") for c in closed.consts]
        return self.jaxpr(closed.jaxpr, consts, args)


# --- calls -------------------------------------------------------------------------------------


@_rule(
    "jit",
    "pjit",
    "closed_call",
    "core_call",
    "remat",
    "checkpoint",
    "custom_jvp_call",
    "custom_vjp_call",
    "custom_vjp_call_jaxpr",
)
def _call(lower: _Lowering, eqn, args):
    inner = None
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        if key in eqn.params:
            inner = eqn.params[key]
            break
    if inner is None:
        raise UnsupportedPrimitive(f"{eqn.primitive.name}: no inner jaxpr in {sorted(eqn.params)}")
    # A custom_jvp/vjp call's primal jaxpr takes exactly the call's operands; its derivative
    # rule does not matter for inference.
    if isinstance(inner, jcore.ClosedJaxpr):
        return lower.closed(inner, args)
    return lower.jaxpr(inner, [], args)


# --- elementwise -------------------------------------------------------------------------------

_UNARY = {
    "neg": "Neg",
    "exp": "Exp",
    "tanh": "Tanh",
    "floor": "Floor",
    "ceil": "Ceil",
    "sqrt": "Sqrt",
    "log": "Log",
    "abs": "Abs",
    "sign": "Sign",
    "erf": "Erf",
    "logistic": "Sigmoid",
    "not": "Not",
    "stop_gradient": "Identity",
    "copy": "Identity",
    "copy_p": "Identity",
    "optimization_barrier": "Identity",
    "round": "Round",
    "sin": "Sin",
    "cos": "Cos",
}
_BINARY = {
    "add": "Add",
    "sub": "Sub",
    "mul": "Mul",
    "div": "Div",
    "max": "Max",
    "min": "Min",
    "pow": "Pow",
    "lt": "Less",
    "gt": "Greater",
    "le": "LessOrEqual",
    "ge": "GreaterOrEqual",
    "eq": "Equal",
    "and": "And",
    "or": "Or",
    "rem": "Mod",
}


@_rule(*_UNARY)
def _unary(lower: _Lowering, eqn, args):
    return [lower.g.op(_UNARY[eqn.primitive.name], args)]


@_rule(*_BINARY)
def _binary(lower: _Lowering, eqn, args):
    name = eqn.primitive.name
    if name == "rem":
        # lax.rem takes the sign of the dividend, as C's fmod: ONNX Mod with fmod=1.
        return [lower.g.op("Mod", args, fmod=1)]
    if name == "div" and not np.issubdtype(eqn.outvars[0].aval.dtype, np.floating):
        # lax.div rounds integers towards zero, as ONNX Div does on integers.
        return [lower.g.op("Div", args)]
    return [lower.g.op(_BINARY[name], args)]


@_rule("ne")
def _not_equal(lower: _Lowering, eqn, args):
    return [lower.g.op("Not", [lower.g.op("Equal", args)])]


@_rule("add_any")
def _add_any(lower: _Lowering, eqn, args):
    return [lower.g.op("Add", args)]


@_rule("square")
def _square(lower: _Lowering, eqn, args):
    return [lower.g.op("Mul", [args[0], args[0]])]


@_rule("integer_pow")
def _integer_pow(lower: _Lowering, eqn, args):
    y = int(eqn.params["y"])
    if y < 1:
        raise UnsupportedPrimitive(f"integer_pow with exponent {y}")
    out = args[0]
    for _ in range(y - 1):  # repeated products, as XLA expands small integer powers
        out = lower.g.op("Mul", [out, args[0]])
    return [out]


@_rule("rsqrt")
def _rsqrt(lower: _Lowering, eqn, args):
    return [lower.g.op("Reciprocal", [lower.g.op("Sqrt", args)])]


@_rule("erfc")
def _erfc(lower: _Lowering, eqn, args):
    one = lower.g.const(1.0, eqn.outvars[0].aval.dtype)
    return [lower.g.op("Sub", [one, lower.g.op("Erf", args)])]


@_rule("convert_element_type")
def _convert(lower: _Lowering, eqn, args):
    return [lower.g.op("Cast", args, to=_onnx_dtype(eqn.params["new_dtype"]))]


@_rule("select_n")
def _select_n(lower: _Lowering, eqn, args):
    which, cases = args[0], args[1:]
    if len(cases) != 2:
        raise UnsupportedPrimitive(f"select_n with {len(cases)} cases")
    if eqn.invars[0].aval.dtype != np.bool_:
        which = lower.g.op("Cast", [which], to=TensorProto.BOOL)
    return [lower.g.op("Where", [which, cases[1], cases[0]])]


@_rule("clamp")
def _clamp(lower: _Lowering, eqn, args):
    low, x, high = args
    return [lower.g.op("Min", [lower.g.op("Max", [x, low]), high])]


# --- shapes ------------------------------------------------------------------------------------


@_rule("reshape")
def _reshape(lower: _Lowering, eqn, args):
    if eqn.params.get("dimensions"):
        raise UnsupportedPrimitive("reshape with a dimension permutation")
    return [lower.g.op("Reshape", [args[0], lower.g.shape(eqn.params["new_sizes"])])]


@_rule("squeeze")
def _squeeze(lower: _Lowering, eqn, args):
    axes = lower.g.const(list(eqn.params["dimensions"]), np.int64)
    return [lower.g.op("Squeeze", [args[0], axes])]


@_rule("expand_dims")
def _expand_dims(lower: _Lowering, eqn, args):
    axes = lower.g.const(list(eqn.params["dimensions"]), np.int64)
    return [lower.g.op("Unsqueeze", [args[0], axes])]


@_rule("broadcast_in_dim")
def _broadcast_in_dim(lower: _Lowering, eqn, args):
    shape = eqn.params["shape"]
    kept = eqn.params["broadcast_dimensions"]
    operand_shape = eqn.invars[0].aval.shape
    # Place the operand's dimensions at their output positions (1 elsewhere), then expand.
    placed = [1] * len(shape)
    for source, target in enumerate(kept):
        placed[target] = operand_shape[source]
    x = args[0]
    if tuple(placed) != tuple(operand_shape):
        x = lower.g.op("Reshape", [x, lower.g.shape(placed)])
    return [lower.g.op("Expand", [x, lower.g.shape(shape)])]


@_rule("split")
def _split(lower: _Lowering, eqn, args):
    sizes = lower.g.const(list(eqn.params["sizes"]), np.int64)
    outputs = lower.g.op(
        "Split",
        [args[0], sizes],
        num_outputs=len(eqn.params["sizes"]),
        axis=int(eqn.params["axis"]),
    )
    return outputs if isinstance(outputs, list) else [outputs]


@_rule("transpose")
def _transpose(lower: _Lowering, eqn, args):
    return [lower.g.op("Transpose", args, perm=list(eqn.params["permutation"]))]


@_rule("concatenate")
def _concatenate(lower: _Lowering, eqn, args):
    return [lower.g.op("Concat", args, axis=int(eqn.params["dimension"]))]


@_rule("slice")
def _slice(lower: _Lowering, eqn, args):
    shape = eqn.invars[0].aval.shape
    starts, limits = eqn.params["start_indices"], eqn.params["limit_indices"]
    strides = eqn.params["strides"] or (1,) * len(shape)
    axes, begin, end, step = [], [], [], []
    for axis, (s, e, k, n) in enumerate(zip(starts, limits, strides, shape)):
        if _is_static(e) and _is_static(n) and (s, e, k) == (0, n, 1):
            continue
        if not _is_static(e):
            if str(e) != str(n):
                raise UnsupportedPrimitive(f"slice ending at a batch-dependent {e}")
            e = np.iinfo(np.int64).max  # to the end of a dynamic dimension
        axes.append(axis)
        begin.append(int(s))
        end.append(int(e))
        step.append(int(k))
    if not axes:
        return [lower.g.op("Identity", args)]
    inputs = [args[0]] + [lower.g.const(v, np.int64) for v in (begin, end, axes, step)]
    return [lower.g.op("Slice", inputs)]


@_rule("pad")
def _pad(lower: _Lowering, eqn, args):
    config = eqn.params["padding_config"]
    if any(interior for _, _, interior in config):
        raise UnsupportedPrimitive("pad with interior padding")
    if any(lo < 0 or hi < 0 for lo, hi, _ in config):
        raise UnsupportedPrimitive("pad with negative padding")
    pads = lower.g.const([lo for lo, _, _ in config] + [hi for _, hi, _ in config], np.int64)
    return [lower.g.op("Pad", [args[0], pads, args[1]], mode="constant")]


@_rule("iota")
def _iota(lower: _Lowering, eqn, args):
    shape, dim = eqn.params["shape"], eqn.params["dimension"]
    if not all(_is_static(d) for d in shape):
        raise UnsupportedPrimitive("iota of a batch-dependent shape")
    values = np.arange(shape[dim], dtype=eqn.params["dtype"])
    values = values.reshape([-1 if i == dim else 1 for i in range(len(shape))])
    return [lower.g.const(np.broadcast_to(values, shape))]


# --- reductions --------------------------------------------------------------------------------

_REDUCE = {
    "reduce_sum": "ReduceSum",
    "reduce_max": "ReduceMax",
    "reduce_min": "ReduceMin",
    "reduce_prod": "ReduceProd",
}


@_rule(*_REDUCE)
def _reduce(lower: _Lowering, eqn, args):
    axes = list(eqn.params["axes"])
    if not axes:
        return [lower.g.op("Identity", args)]
    return [
        lower.g.op(
            _REDUCE[eqn.primitive.name], [args[0], lower.g.const(axes, np.int64)], keepdims=0
        )
    ]


@_rule("argmax", "argmin")
def _argmax(lower: _Lowering, eqn, args):
    (axis,) = eqn.params["axes"]
    op = "ArgMax" if eqn.primitive.name == "argmax" else "ArgMin"
    out = lower.g.op(op, args, axis=int(axis), keepdims=0, select_last_index=0)
    return [lower.g.op("Cast", [out], to=_onnx_dtype(eqn.params["index_dtype"]))]


# --- convolutions, pooling, products -----------------------------------------------------------


def _to_channels_first(lower: _Lowering, x: str, spec: Sequence[int]) -> str:
    """Transposes x so that its dimensions come in `spec` order (N, C, spatial...)."""
    spec = [int(s) for s in spec]
    return x if spec == sorted(spec) else lower.g.op("Transpose", [x], perm=spec)


def _from_channels_first(lower: _Lowering, x: str, spec: Sequence[int]) -> str:
    """The inverse of _to_channels_first for an output laid out as `spec` says."""
    spec = [int(s) for s in spec]
    inverse = list(np.argsort(spec))
    return x if inverse == sorted(inverse) else lower.g.op("Transpose", [x], perm=inverse)


@_rule("conv_general_dilated")
def _conv(lower: _Lowering, eqn, args):
    p = eqn.params
    if any(d != 1 for d in p["lhs_dilation"]) or p["batch_group_count"] != 1:
        raise UnsupportedPrimitive("transposed or batch-grouped convolution")
    numbers = p["dimension_numbers"]
    x = _to_channels_first(lower, args[0], numbers.lhs_spec)
    w = _to_channels_first(lower, args[1], numbers.rhs_spec)
    padding = p["padding"]
    if any(lo < 0 or hi < 0 for lo, hi in padding):
        raise UnsupportedPrimitive("convolution with negative padding")
    out = lower.g.op(
        "Conv",
        [x, w],
        strides=list(p["window_strides"]),
        dilations=list(p["rhs_dilation"]),
        group=int(p["feature_group_count"]),
        pads=[lo for lo, _ in padding] + [hi for _, hi in padding],
    )
    return [_from_channels_first(lower, out, numbers.out_spec)]


def _pool_layout(eqn) -> list:
    """The permutation putting the pooled dimensions last; the others must be untouched."""
    p = eqn.params
    if any(d != 1 for d in tuple(p["base_dilation"]) + tuple(p["window_dilation"])):
        raise UnsupportedPrimitive(f"{eqn.primitive.name} with dilation")
    rank = len(p["window_dimensions"])
    pooled = [
        i
        for i in range(rank)
        if p["window_dimensions"][i] != 1
        or p["window_strides"][i] != 1
        or tuple(p["padding"][i]) != (0, 0)
    ]
    if rank < 3 or pooled and (pooled[0] < 1 or pooled[-1] > rank - 2):
        raise UnsupportedPrimitive(f"{eqn.primitive.name} over the first or last dimension")
    return [0, rank - 1] + list(range(1, rank - 1))


def _pool_attrs(eqn) -> dict:
    p = eqn.params
    middle = range(1, len(p["window_dimensions"]) - 1)
    return dict(
        kernel_shape=[int(p["window_dimensions"][i]) for i in middle],
        strides=[int(p["window_strides"][i]) for i in middle],
        pads=[int(p["padding"][i][0]) for i in middle] + [int(p["padding"][i][1]) for i in middle],
    )


@_rule("reduce_window_max")
def _max_pool(lower: _Lowering, eqn, args):
    perm = _pool_layout(eqn)
    x = lower.g.op("Transpose", args, perm=perm)
    out = lower.g.op("MaxPool", [x], **_pool_attrs(eqn))
    return [lower.g.op("Transpose", [out], perm=list(np.argsort(perm)))]


@_rule("reduce_window_sum")
def _sum_pool(lower: _Lowering, eqn, args):
    # A window sum is a grouped convolution with a ones kernel: exact, unlike average pooling
    # followed by a product with the window size.
    perm = _pool_layout(eqn)
    channels = eqn.invars[0].aval.shape[-1]
    attrs = _pool_attrs(eqn)
    ones = lower.g.const(np.ones([channels, 1] + attrs["kernel_shape"], eqn.invars[0].aval.dtype))
    x = lower.g.op("Transpose", args, perm=perm)
    out = lower.g.op("Conv", [x, ones], group=int(channels), **attrs)
    return [lower.g.op("Transpose", [out], perm=list(np.argsort(perm)))]


@_rule("dot_general")
def _dot_general(lower: _Lowering, eqn, args):
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    lhs_rank, rhs_rank = (len(v.aval.shape) for v in eqn.invars)
    # A dense layer (features · kernel [C, K]) is a MatMul.
    if not lb and rhs_rank == 2 and tuple(lc) == (lhs_rank - 1,) and tuple(rc) == (0,):
        return [lower.g.op("MatMul", args)]
    letters = iter("abcdefghijklmnopqrstuvwxyz")
    lhs = [next(letters) for _ in range(lhs_rank)]
    rhs = [None] * rhs_rank
    for i, j in zip(lb, rb):
        rhs[j] = lhs[i]
    for i, j in zip(lc, rc):
        rhs[j] = lhs[i]
    rhs = [r or next(letters) for r in rhs]
    out = (
        [lhs[i] for i in lb]
        + [lhs[i] for i in range(lhs_rank) if i not in lb + lc]
        + [rhs[j] for j in range(rhs_rank) if j not in rb + rc]
    )
    equation = f"{''.join(lhs)},{''.join(rhs)}->{''.join(out)}"
    return [lower.g.op("Einsum", args, equation=equation)]


# --- gathers -----------------------------------------------------------------------------------


def _gather_indices(lower: _Lowering, eqn, indices: str, limits: Sequence[int]) -> tuple:
    """Start indices [..., n] as int64 under the gather's mode, and where FILL_OR_DROP needs it a
    bool mask [...] of the in-range starts (`limits`: the largest valid start per component)."""
    indices = lower.g.op("Cast", [indices], to=TensorProto.INT64)
    limit = lower.g.const(list(limits), np.int64)
    zero = lower.g.const(0, np.int64)
    mode = str(eqn.params["mode"])
    if "CLIP" in mode:
        return lower.g.op("Min", [lower.g.op("Max", [indices, zero]), limit]), None
    if "FILL_OR_DROP" not in mode:  # PROMISE_IN_BOUNDS: the caller guarantees the range
        return indices, None
    inside = lower.g.op(
        "And",
        [
            lower.g.op("GreaterOrEqual", [indices, zero]),
            lower.g.op("LessOrEqual", [indices, limit]),
        ],
    )
    valid = lower.g.op(
        "ReduceMin",
        [lower.g.op("Cast", [inside], to=TensorProto.INT64), lower.g.const([-1], np.int64)],
        keepdims=0,
    )
    safe = lower.g.op("Where", [inside, indices, zero])
    return safe, lower.g.op("Cast", [valid], to=TensorProto.BOOL)


def _fill_outside(
    lower: _Lowering, eqn, gathered: str, valid: str | None, index_positions: Sequence[int]
) -> list:
    """Zeroes the slices whose start was out of range (FILL_OR_DROP); `index_positions`: where the
    indices' batch dimensions are in the output."""
    if valid is None:
        return [gathered]
    out_rank = len(eqn.outvars[0].aval.shape)
    others = [i for i in range(out_rank) if i not in index_positions]
    if others and index_positions:
        valid = lower.g.op("Unsqueeze", [valid, lower.g.const(others, np.int64)])
    fill = lower.g.const(0, eqn.outvars[0].aval.dtype)
    return [lower.g.op("Where", [valid, gathered, fill])]


@_rule("gather")
def _gather(lower: _Lowering, eqn, args):
    """jax's gather in the three forms these models produce, each with its ONNX operator:
    * `x[b, i[b, ...]]`, whole slices elsewhere (ISSM's per-clip frame reads, MViT's
      relative-position tables): GatherND with the gather's batch dimensions as `batch_dims`;
    * `x[..., i[...], ...]` along one axis, no batch dimensions (the fixed even/odd reads under a
      symbolic batch): Gather on that axis;
    * a slice of fixed size at computed starts (`x[..., a:b]`, `x[:, :3, 0]` under a symbolic
      batch): Slice, and Squeeze for the dimensions it drops.
    Out-of-range starts follow the gather's mode: clamped (CLIP), zero-filled (FILL_OR_DROP) or
    promised in range."""
    p = eqn.params
    numbers = p["dimension_numbers"]
    shape = eqn.invars[0].aval.shape
    index_shape = eqn.invars[1].aval.shape
    sizes = p["slice_sizes"]
    batch = tuple(int(d) for d in numbers.operand_batching_dims)
    indexed = tuple(int(d) for d in numbers.start_index_map)
    collapsed = tuple(int(d) for d in numbers.collapsed_slice_dims)
    offsets = tuple(int(d) for d in numbers.offset_dims)
    out_rank = len(eqn.outvars[0].aval.shape)
    limits = [shape[i] - sizes[i] for i in indexed]
    if any(not _is_static(v) for v in limits) or index_shape[-1] != len(indexed):
        raise UnsupportedPrimitive(f"gather of the form {numbers}, slice sizes {sizes}")
    whole = [i for i in range(len(shape)) if i not in batch + indexed]
    full = all(str(sizes[i]) == str(shape[i]) for i in whole)
    nb, n_batch = len(batch), len(index_shape) - 1
    if (
        full
        and batch == tuple(range(nb)) == tuple(numbers.start_indices_batching_dims)
        and indexed == collapsed == tuple(range(nb, nb + len(indexed)))
        and offsets == tuple(range(out_rank - len(whole), out_rank))
    ):
        indices, valid = _gather_indices(lower, eqn, args[1], limits)
        gathered = lower.g.op("GatherND", [args[0], indices], batch_dims=nb)
        return _fill_outside(lower, eqn, gathered, valid, list(range(n_batch)))
    if full and not batch and len(indexed) == 1 and collapsed == indexed:
        (axis,) = indexed
        positions = list(range(axis, axis + n_batch))
        if offsets == tuple(i for i in range(out_rank) if i not in positions):
            indices, valid = _gather_indices(lower, eqn, args[1], limits)
            indices = lower.g.op("Squeeze", [indices, lower.g.const([-1], np.int64)])
            gathered = lower.g.op("Gather", [args[0], indices], axis=axis)
            return _fill_outside(lower, eqn, gathered, valid, positions)
    if not batch and len(index_shape) == 1 and offsets == tuple(range(out_rank)) and full:
        starts, valid = _gather_indices(lower, eqn, args[1], limits)
        ends = lower.g.op("Add", [starts, lower.g.const([sizes[i] for i in indexed], np.int64)])
        axes = lower.g.const(list(indexed), np.int64)
        gathered = lower.g.op("Slice", [args[0], starts, ends, axes])
        if collapsed:  # dimensions sliced to one element and dropped
            gathered = lower.g.op("Squeeze", [gathered, lower.g.const(list(collapsed), np.int64)])
        return _fill_outside(lower, eqn, gathered, valid, [])
    raise UnsupportedPrimitive(f"gather of the form {numbers}, slice sizes {sizes}")


# --- the model ---------------------------------------------------------------------------------


def _value_info(name: str, aval: Any) -> onnx.ValueInfoProto:
    dims = [d if _is_static(d) else BATCH_SYMBOL for d in aval.shape]
    return helper.make_tensor_value_info(name, _onnx_dtype(aval.dtype), dims)


def to_onnx(
    fn: Callable,
    example: jax.ShapeDtypeStruct,
    *,
    input_name: str,
    output_names: Sequence[str],
    metadata: dict | None = None,
    graph_name: str = "model",
) -> onnx.ModelProto:
    """fn(x) -> tuple of arrays, traced at `example` (a first dimension from
    jax.export.symbolic_shape(BATCH_SYMBOL) makes it dynamic), as an ONNX model with one input and
    the named outputs; `metadata` ({str: str}) goes to the model's metadata_props."""
    closed = jax.make_jaxpr(fn)(example)
    graph = _Graph()
    if not _is_static(example.shape[0]):
        graph.batch = graph.op("Shape", [input_name], start=0, end=1)
    lowered = _Lowering(graph).closed(closed, [input_name])
    outputs = []
    for name, value, var in zip(output_names, lowered, closed.jaxpr.outvars):
        graph.nodes.append(helper.make_node("Identity", [value], [name]))
        outputs.append(_value_info(name, var.aval))
    onnx_graph = helper.make_graph(
        graph.nodes,
        graph_name,
        [_value_info(input_name, example)],
        outputs,
        initializer=graph.initializers,
    )
    model = helper.make_model(
        onnx_graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="ifdd_jax.export"
    )
    model.ir_version = 9  # onnxruntime >= 1.16 reads IR 9 (opset 18)
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model
