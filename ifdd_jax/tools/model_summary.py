"""Parameter count and cost of a configured model, per top-level module and in total.

    python -m ifdd_jax.tools.model_summary --config=configs/dfew.py:model=ifdd_2dcnn

prints a table and the two lines `params: <N> M` and `GFLOPs: <G>` for one clip of the config's
input size (B = 1).

`GFLOPs` follows the paper's convention: multiply-accumulates of the layers that apply parameters
(convolutions, linear layers, and elementwise products with a parameter, e.g. depthwise taps and
normalisation scales), counted on the traced program. With that count the released IFDD-3DViT and
the MViT baseline come to the paper's 36.01 / 32.83 G within 0.5 %. Attention products between
activations (Q·Kᵀ, A·V), softmax, pooling and other elementwise work are not counted there; XLA's
cost analysis of the whole program (its flops halved, 2 flops per MAC) is printed as a second
figure, `all-op GFLOPs`. Parameters are the trainable `params` collection (BatchNorm running
statistics are not parameters, as in PyTorch's count). Nothing is executed: shapes come from
`jax.eval_shape` and costs from tracing and lowering, so full-size models are summarised in
seconds on a CPU.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.extend
import jax.numpy as jnp
import ml_collections
from absl import app, flags
from ml_collections import config_flags

from ifdd_jax.models import build_model

# Params (M) and GFLOPs (= GMACs) as the paper reports them (Table 12 and the appendix).
PAPER_COSTS = {
    "ifdd_2dcnn": ("IFDD-2DCNN", 1.18, 3.86),
    "baseline_mobilenet_v2": ("MobileNetV2 + MLP baseline", 1.55, 3.73),
    "ifdd_3dvit": ("IFDD-3DViT", 37.44, 36.01),
    "baseline_mvit": ("MViT baseline", 23.41, 32.83),
}


@dataclasses.dataclass
class ModuleCost:
    name: str
    params: int
    macs: float  # layer MACs (the paper's convention)
    all_op_macs: float  # XLA's count of the whole submodule, / 2
    output: str


@dataclasses.dataclass
class Summary:
    model_name: str
    flavor: str
    input_shape: tuple
    params: int
    macs: float
    all_op_macs: float
    modules: list[ModuleCost]
    outputs: dict


def count_params(tree: Any) -> int:
    return int(sum(x.size for x in jax.tree.leaves(tree)))


_PARAM, _CONST, _DATA = 2, 1, 0


def _sub_jaxpr(eqn) -> Any:
    """The closed sub-program of a call-like equation (pjit, custom_jvp/vjp, remat), if any."""
    for value in eqn.params.values():
        jaxpr = getattr(value, "jaxpr", None)
        closed = value if jaxpr is not None and hasattr(value, "consts") else None
        if closed is not None and len(closed.jaxpr.invars) == len(eqn.invars):
            return closed
    return None


def _layer_macs_of(closed, kinds: list[int]) -> float:
    """Walks a closed jaxpr whose inputs are tagged parameter / constant / data."""
    jaxpr = closed.jaxpr
    kind = {v: k for v, k in zip(jaxpr.invars, kinds)}
    kind.update({v: _CONST for v in jaxpr.constvars})

    def of(atom) -> int:
        if isinstance(atom, jax.extend.core.Literal):
            return _CONST
        return kind.get(atom, _CONST)

    total = 0.0
    for eqn in jaxpr.eqns:
        ins = [of(a) for a in eqn.invars]
        name = eqn.primitive.name
        sub = _sub_jaxpr(eqn)
        if sub is not None:
            total += _layer_macs_of(sub, ins)
        elif name in ("dot_general", "mul") and sorted(ins[:2]) == [_DATA, _PARAM]:
            out = eqn.outvars[0].aval
            contracted = 1
            if name == "dot_general":
                (lhs_contract, _), _ = eqn.params["dimension_numbers"]
                contracted = math.prod(eqn.invars[0].aval.shape[d] for d in lhs_contract)
            total += math.prod(out.shape) * contracted
        elif name == "conv_general_dilated" and ins[:2] == [_DATA, _PARAM]:
            out = eqn.outvars[0].aval
            rhs_spec = eqn.params["dimension_numbers"].rhs_spec  # (out, in, *spatial)
            kernel = eqn.invars[1].aval.shape
            total += math.prod(out.shape) * math.prod(kernel[d] for d in rhs_spec[1:])
        result = _DATA if _DATA in ins else (_PARAM if _PARAM in ins else _CONST)
        for v in eqn.outvars:
            kind[v] = result
    return total


def layer_macs(fn, variables: Any, *args) -> float:
    """MACs of the parameterised layers of `fn(variables, *args)` (see the module docstring)."""
    closed = jax.make_jaxpr(fn)(variables, *args)
    n_var = len(jax.tree.leaves(variables))
    n_all = len(closed.jaxpr.invars)
    return _layer_macs_of(closed, [_PARAM] * n_var + [_DATA] * (n_all - n_var))


def _macs(fn, *args) -> float:
    """MACs of `fn` at the abstract `args`, from XLA's cost analysis of the lowered program."""
    cost = jax.jit(fn).lower(*args).cost_analysis()
    if isinstance(cost, (list, tuple)):  # older JAX returned one dict per computation
        cost = cost[0]
    return float(cost.get("flops", 0.0)) / 2.0  # a module without arithmetic reports none


def _shape_text(tree: Any) -> str:
    leaves = jax.tree.leaves(tree)
    if isinstance(tree, dict):
        return ", ".join(f"{k} {list(v.shape)}" for k, v in tree.items() if hasattr(v, "shape"))
    return "; ".join(str(list(x.shape)) for x in leaves)


def input_shape(config: ml_collections.ConfigDict, batch: int = 1) -> tuple:
    size = config.input.image_size
    return (batch, config.input.num_frames, size, size, 3)


def abstract_model(config: ml_collections.ConfigDict, batch: int = 1) -> tuple:
    """(model, abstract variables, abstract clips [batch, T, S, S, 3]) of the configured model;
    nothing is allocated or computed."""
    model = build_model(config)
    clips = jax.ShapeDtypeStruct(input_shape(config, batch), jnp.float32)
    rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    variables = jax.eval_shape(lambda x: model.init(rngs, x, train=False), clips)
    return model, variables, clips


def model_cost(config: ml_collections.ConfigDict) -> tuple:
    """(params, MACs) of one clip in the paper's convention, from the traced program alone (no
    XLA lowering: cheap enough to tabulate every model and ablation)."""
    model, variables, clips = abstract_model(config)
    macs = layer_macs(lambda v, x: model.apply(v, x, train=False)["logits"], variables, clips)
    return count_params(variables["params"]), macs


def summarize(config: ml_collections.ConfigDict, batch: int = 1) -> Summary:
    """Builds the configured model and measures it at [batch, T, S, S, 3] (eval mode)."""
    model, variables, clips = abstract_model(config, batch)

    # Record each top-level submodule's call (its unbound clone and abstract arguments).
    calls: list = []

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        module = context.module
        if context.method_name == "__call__" and len(module.path) == 1:
            abstract = jax.tree.map(
                lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype) if hasattr(a, "shape") else a,
                (args, kwargs),
            )
            calls.append((module.path[0], module.clone(parent=None), abstract, out))
        return out

    def forward(v, x):
        with nn.intercept_methods(record):
            return model.apply(v, x, train=False)

    outputs = jax.eval_shape(forward, variables, clips)
    logits_fn = lambda v, x: model.apply(v, x, train=False)["logits"]  # noqa: E731
    total_macs = layer_macs(logits_fn, variables, clips)
    all_op_macs = _macs(logits_fn, variables, clips)

    modules = []
    for name, module, (args, kwargs), out in calls:
        sub_vars = {col: tree[name] for col, tree in variables.items() if name in tree}

        # Array arguments are traced; the rest (e.g. train=False) stay static.
        leaves, treedef = jax.tree.flatten((args, kwargs))
        is_array = [isinstance(x, jax.ShapeDtypeStruct) for x in leaves]

        def sub_forward(
            v, arrays, module=module, leaves=leaves, treedef=treedef, is_array=is_array
        ):
            it = iter(arrays)
            filled = [next(it) if flag else x for x, flag in zip(leaves, is_array)]
            a, kw = jax.tree.unflatten(treedef, filled)
            return module.apply(v, *a, **kw)

        arrays = [x for x, flag in zip(leaves, is_array) if flag]
        modules.append(
            ModuleCost(
                name,
                count_params(sub_vars.get("params", {})),
                layer_macs(sub_forward, sub_vars, arrays),
                _macs(sub_forward, sub_vars, arrays),
                _shape_text(out),
            )
        )
    return Summary(
        model_name=config.model_name,
        flavor=config.flavor,
        input_shape=clips.shape,
        params=count_params(variables["params"]),
        macs=total_macs,
        all_op_macs=all_op_macs,
        modules=modules,
        outputs={k: tuple(v.shape) for k, v in outputs.items()},
    )


def format_summary(summary: Summary) -> str:
    lines = [
        f"model: {summary.model_name}   flavor: {summary.flavor}   "
        f"input: {list(summary.input_shape)} (B, T, H, W, C)",
        "",
        f"{'module':<10} {'params (M)':>11} {'GMACs':>8} {'all-op':>8}   output",
    ]
    for m in summary.modules:
        lines.append(
            f"{m.name:<10} {m.params / 1e6:11.4f} {m.macs / 1e9:8.3f} "
            f"{m.all_op_macs / 1e9:8.3f}   {m.output}"
        )
    lines.append(
        f"{'total':<10} {summary.params / 1e6:11.4f} {summary.macs / 1e9:8.3f} "
        f"{summary.all_op_macs / 1e9:8.3f}"
    )
    lines.append("")
    lines.append(f"params: {summary.params / 1e6:.4f} M")
    lines.append(f"GFLOPs: {summary.macs / 1e9:.3f}")
    lines.append(
        f"all-op GFLOPs (XLA cost analysis / 2, attention and elementwise work included): "
        f"{summary.all_op_macs / 1e9:.3f}"
    )
    if summary.model_name in PAPER_COSTS:
        label, p, g = PAPER_COSTS[summary.model_name]
        dp = 100.0 * (summary.params / 1e6 - p) / p
        dg = 100.0 * (summary.macs / 1e9 - g) / g
        lines.append(
            f"paper ({label}): {p:.2f} M params, {g:.2f} GFLOPs   "
            f"(ours {dp:+.1f} % params, {dg:+.1f} % GFLOPs)"
        )
    return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
    del argv
    summary = summarize(flags.FLAGS.config, batch=flags.FLAGS.batch)
    print(format_summary(summary))


if __name__ == "__main__":
    config_flags.DEFINE_config_file("config", None, "Config file (file.py:args).", lock_config=True)
    flags.DEFINE_integer("batch", 1, "Batch size of the measured clip batch.")
    flags.mark_flags_as_required(["config"])
    app.run(main)
