"""LADM, the Lifting-based Aggregation-Disentanglement Module (paper Eqs. 5-8).

LADM takes the static and dynamic groups X_S, X_D `[B, T/2, H, W, C]` from ISSM and applies one
lifting step whose operators are cross attentions:

  updater   U(X_D | X_S) = MLP(softmax(Q(X_S) K(X_D)ᵀ / sqrt(d)) V(X_D))   Y_S = X_S + U (Eqs. 5-6)
  predictor P(Y_S | X_D) = MLP(softmax(Q(X_D) K(Y_S)ᵀ / sqrt(d)) V(Y_S))   Y_D = X_D - P (Eqs. 7-8)

Y_S aggregates the emotion-irrelevant (static) context, Y_D keeps the disentangled dynamics;
Y_D is then compressed to the classification vector `[B, C]` by a learned linear weighting of its
T/2·H·W tokens (`project_compress`).

`variant` selects the ablations of the paper's Tables 10-11:
  * "lifting": updater first, then predictor (default; Table 10's better order);
  * "predictor_first": Y_D = X_D - P(X_S | X_D), then Y_S = X_S + U(Y_D | X_S);
  * "no_mutual": transformer lifting without the mutual relation: each operator attends within
    one group, Y_S = X_S + U(X_D | X_D), Y_D = X_D - P(X_S | X_S) (the appendix's form; the
    reference flavor differs, see below);
  * "cnn": CNN lifting, U and P are each two (3D conv 3×3×3 + BN + ReLU) layers on one group,
    Y_S = X_S + U(X_D), Y_D = X_D - P(Y_S), with no query/key relation between the groups;
  * "none": no lifting, Y_S = X_S and Y_D = X_D (the "ISSM only" row).

Paper vs released code (`flavor`), written here once:
* The operator after the attention (`mlp`, config.model.ladm_mlp). Eq. 7 reads "MLP denotes
  stacked fully connected layer and GELU activation". The paper flavor takes the usual reading of
  "stacked": "mlp", Linear(C -> C) -> GELU -> Linear(C -> C) (the paper gives no hidden width; C
  keeps the operator's cost at two C×C layers). The released code applies one Linear after the
  attention, its GELU commented out ("linear", the reference default). "linear_gelu",
  GELU(Linear(·)), was this project's earlier paper reading: a GELU last makes every correction
  nearly one-signed (>= -0.17 per element), a restriction a lifting predictor/updater should not
  have, so it is kept only as an option.
* The paper uses one head scaled by 1/sqrt(C); the released code uses 8 heads (scale
  1/sqrt(C/8)) and adds the value tensor to the attention output (A = softmax(QKᵀ)V + V).
* Eq. 6 writes Q = X W_Q, K = X W_K, V = X W_V: projections without bias. The released q/kv
  Linears have biases.
* The LayerNorms on the inputs (`norm`, config.model.ladm_norm): the released code
  layer-normalises X_S and X_D first ("WaveNorm", two LayerNorms, eps 1e-5), so Y_S = LN(X_S) + U.
  The paper's equations have no norm, but its appendix twice computes Grad-CAM "after the
  LayerNorm layer of LADM": its LADM has one. The only placement on record is the released one,
  so both flavors default to "input" (LN(X_S), LN(X_D)); "none" is the equations read literally.
* Initialisation: the released `WaveSF_trans_CLS` re-initialises none of its Linears (only
  AdaptSplit's Linears and the head get an init of their own), so every LADM Linear (q, kv,
  project, the refiner's qkv / proj / MLP, project_compress) keeps PyTorch's default: weight and
  bias both U(±1/sqrt(fan_in)), fan_in = input features. The reference flavor draws from exactly
  that; the paper, silent on initialisation, gets the same default.
* "no_mutual": the appendix replaces the predictor's mutual attention by self-attention of X_S,
  Y_D = X_D - P(X_S | X_S). The released code's version of this ablation (`WaveSF_trans_CLS_Self`,
  defined but never built by its FPN) runs the predictor on the *updated* static group,
  Y_D = X_D - P(Y_S | Y_S); the reference flavor reproduces that. Both use Y_S = X_S + U(X_D | X_D).
* The paper only says Y_D is "flattened and projected by MLP". The released code first runs
  Y_D <- Y_D + SD(proj(MHSA(LN1(Y_D)))) and then Y_D <- SD(MLP(LN2(Y_D))) with **no residual around
  the MLP**, SD being whole-sample stochastic depth (p = 0.2; in training about 20 % of samples
  reach the head with a zero feature), before `project_compress` (Linear over the tokens, no
  bias). The paper flavor goes straight to `project_compress`, the released compression (the
  paper names no other).
* The released module also holds positional embeddings (spatial [H·W, C], temporal [T, C], class
  [C], zeros) that are never added (`pos=False`); the reference flavor creates them, unused, so
  parameter counts and converted checkpoints line up.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ifdd_jax.models.layers import (
    StochasticDepth,
    attend,
    check_flavor,
    gelu,
    torch_default_init,
    torch_dense,
)

VARIANTS = ("lifting", "predictor_first", "no_mutual", "cnn", "none")
MLPS = ("mlp", "linear", "linear_gelu")  # the operator after a lifting attention
NORMS = ("input", "none")  # LayerNorms on X_S and X_D before lifting, or none

# Each flavor's `mlp` and `norm` (the module docstring gives the reasons).
FLAVOR_DEFAULTS = dict(
    paper=dict(mlp="mlp", norm="input"),
    reference=dict(mlp="linear", norm="input"),
)


def resolve_options(flavor: str, mlp: str | None, norm: str | None) -> tuple[str, str]:
    """(mlp, norm) with None replaced by the flavor's default; unknown values are an error."""
    check_flavor(flavor)
    mlp = mlp or FLAVOR_DEFAULTS[flavor]["mlp"]
    norm = norm or FLAVOR_DEFAULTS[flavor]["norm"]
    if mlp not in MLPS:
        raise ValueError(f"LADM mlp must be one of {MLPS}, got {mlp!r}")
    if norm not in NORMS:
        raise ValueError(f"LADM norm must be one of {NORMS}, got {norm!r}")
    return mlp, norm


class LiftingAttention(nn.Module):
    """One lifting operator (updater or predictor) as cross attention.

    `queries` `[B, N, C]` attend over `context` `[B, M, C]`; returns the correction `[B, N, C]`.
    """

    num_heads: int
    flavor: str
    mlp: str  # MLPS

    @nn.compact
    def __call__(self, queries: jax.Array, context: jax.Array) -> jax.Array:
        c = queries.shape[-1]
        # Eq. 6's W_Q, W_K, W_V have no bias; the released q/kv Linears do.
        qkv_bias = self.flavor == "reference"
        q = torch_dense(c, c, "q", use_bias=qkv_bias)(queries)
        kv = torch_dense(2 * c, context.shape[-1], "kv", use_bias=qkv_bias)(context)
        # The released code splits kv as [2, heads, head_dim]: first half keys, second half values.
        k, v = kv[..., :c], kv[..., c:]
        a = attend(q, k, v, self.num_heads)
        if self.flavor == "reference":
            a = a + v  # the released value residual
        a = torch_dense(c, c, "project")(a)
        if self.mlp == "linear":
            return a
        if self.mlp == "linear_gelu":
            return gelu(a)
        return torch_dense(c, c, "project_out")(gelu(a))


class ConvLifting(nn.Module):
    """A CNN lifting operator: two (Conv3d 3×3×3 + BN + ReLU) layers, `[B, t, H, W, C]` in/out."""

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        c = x.shape[-1]
        for i in range(2):
            x = nn.Conv(
                c,
                (3, 3, 3),
                padding=((1, 1),) * 3,
                use_bias=False,
                name=f"conv{i}",
                kernel_init=torch_default_init,
            )(x)
            x = nn.BatchNorm(
                use_running_average=not train, momentum=0.9, epsilon=1e-5, name=f"bn{i}"
            )(x)
            x = jax.nn.relu(x)
        return x


class ReferenceDynamicRefiner(nn.Module):
    """The released post-processing of Y_D (reference flavor only), tokens `[B, N, C]` in and out:
    Y_D + SD(proj(MHSA(LN1(Y_D)))), then SD(MLP(LN2(·))) with no residual around the MLP."""

    num_heads: int
    drop_path: float

    @nn.compact
    def __call__(self, y: jax.Array, *, train: bool) -> jax.Array:
        c = y.shape[-1]
        drop = StochasticDepth(self.drop_path)
        h = nn.LayerNorm(epsilon=1e-5, name="norm1")(y)
        qkv = torch_dense(3 * c, c, "qkv")(h)
        # PyTorch reshapes qkv to [N, 3, heads, head_dim]: q, k, v are consecutive C-wide chunks.
        h = attend(qkv[..., :c], qkv[..., c : 2 * c], qkv[..., 2 * c :], self.num_heads)
        y = y + drop(torch_dense(c, c, "proj")(h), deterministic=not train)
        h = nn.LayerNorm(epsilon=1e-5, name="norm2")(y)
        h = torch_dense(c, 4 * c, "mlp_fc2")(gelu(torch_dense(4 * c, c, "mlp_fc1")(h)))
        return drop(h, deterministic=not train)


class _UnusedPositions(nn.Module):
    """The released module's positional embeddings (zeros), created but never added."""

    @nn.compact
    def __call__(self, grid: tuple) -> None:
        _, t, h, w, c = grid
        zeros = nn.initializers.zeros
        self.param("spatial_pos", zeros, (h * w, c))
        self.param("temporal_pos", zeros, (2 * t, c))  # T of X, before the split into halves
        self.param("class_pos", zeros, (c,))


class LADM(nn.Module):
    """Lifting step on (X_S, X_D) `[B, t, H, W, C]`.

    Returns a dict: `static` (Y_S) and `dynamic` (Y_D, after the reference refinement where that
    applies) as `[B, t, H, W, C]`, and `feature`, the classification vector `[B, C]`.
    """

    # config.model's fields (ifdd_jax/config_lib.py documents each).
    variant: str  # VARIANTS
    flavor: str
    num_heads: int | None  # None -> 1 (paper) or 8 (reference)
    drop_path: float  # whole-sample stochastic depth of the reference refinement
    mlp: str | None = None  # MLPS; None -> FLAVOR_DEFAULTS
    norm: str | None = None  # NORMS; None -> FLAVOR_DEFAULTS

    @nn.compact
    def __call__(self, static: jax.Array, dynamic: jax.Array, *, train: bool = False) -> dict:
        check_flavor(self.flavor)
        if self.variant not in VARIANTS:
            raise ValueError(f"LADM variant must be one of {VARIANTS}, got {self.variant!r}")
        if static.shape != dynamic.shape or static.ndim != 5:
            raise ValueError(
                f"LADM expects two groups [B, t, H, W, C] of one shape, got {static.shape} "
                f"and {dynamic.shape}"
            )
        grid = static.shape
        b, c = grid[0], grid[-1]
        heads = self.num_heads or (1 if self.flavor == "paper" else 8)
        mlp, norm = resolve_options(self.flavor, self.mlp, self.norm)
        xs = static.reshape(b, -1, c)
        xd = dynamic.reshape(b, -1, c)
        if self.flavor == "reference":
            _UnusedPositions(name="positions")(grid)
        if norm == "input":
            xs = nn.LayerNorm(epsilon=1e-5, name="static_norm")(xs)
            xd = nn.LayerNorm(epsilon=1e-5, name="dynamic_norm")(xd)

        if self.variant == "cnn":
            update, predict = ConvLifting(name="updater"), ConvLifting(name="predictor")
            ys = xs + update(xd.reshape(grid), train=train).reshape(xs.shape)
            yd = xd - predict(ys.reshape(grid), train=train).reshape(xd.shape)
        elif self.variant == "none":
            ys, yd = xs, xd
        else:
            update = LiftingAttention(heads, self.flavor, mlp, name="updater")
            predict = LiftingAttention(heads, self.flavor, mlp, name="predictor")
            if self.variant == "lifting":
                ys = xs + update(xs, xd)
                yd = xd - predict(xd, ys)
            elif self.variant == "predictor_first":
                yd = xd - predict(xd, xs)
                ys = xs + update(xs, yd)
            else:  # no_mutual: self-attention within a group (see the module docstring)
                ys = xs + update(xd, xd)
                static_context = ys if self.flavor == "reference" else xs
                yd = xd - predict(static_context, static_context)

        if self.flavor == "reference":
            yd = ReferenceDynamicRefiner(heads, self.drop_path, name="refiner")(yd, train=train)

        # project_compress: a learned weighting of the N tokens, Linear(N -> 1, no bias).
        n = yd.shape[1]
        weights = self.param("project_compress", torch_default_init, (n, 1))
        feature = jnp.einsum("bnc,no->bc", yd, weights.astype(yd.dtype))
        return dict(static=ys.reshape(grid), dynamic=yd.reshape(grid), feature=feature)
