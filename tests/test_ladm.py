"""LADM: Eqs. 5-8 on hand-built inputs, a numpy transcription of both flavors, the variants."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ifdd_jax.models.ladm import LADM

B, TT, H, W, C = 2, 2, 2, 2, 8  # N = TT·H·W = 8 tokens per group


def _groups(seed=0, b=B):
    ks, kd = jax.random.split(jax.random.key(seed))
    shape = (b, TT, H, W, C)
    return jax.random.normal(ks, shape), jax.random.normal(kd, shape)


def _gelu(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _layer_norm(x, p, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * np.asarray(p["scale"]) + np.asarray(p["bias"])


def _dense(x, p):
    return x @ np.asarray(p["kernel"]) + np.asarray(p["bias"])


def _attention(q, k, v, heads):
    """Per-head softmax(q kᵀ / sqrt(d)) v for one sample, q/k/v `[N, C]`."""
    n, c = q.shape
    d = c // heads
    out = np.zeros_like(q)
    for h in range(heads):
        s = slice(h * d, (h + 1) * d)
        out[:, s] = _softmax(q[:, s] @ k[:, s].T / math.sqrt(d)) @ v[:, s]
    return out


def _operator(p, queries, context, heads, flavor):
    """U(context | queries) or P(context | queries): Eqs. 6 and 8."""
    c = queries.shape[-1]
    q = _dense(queries, p["q"])
    kv = _dense(context, p["kv"])
    k, v = kv[:, :c], kv[:, c:]
    a = _attention(q, k, v, heads)
    if flavor == "reference":
        return _dense(a + v, p["project"])
    return _gelu(_dense(a, p["project"]))


def _numpy_ladm(params, xs, xd, variant, flavor, heads):
    """The module's computation transcribed in numpy, one sample at a time (eval mode)."""
    feats, ys_all, yd_all = [], [], []
    for b in range(xs.shape[0]):
        s = np.asarray(xs[b]).reshape(-1, C)
        d = np.asarray(xd[b]).reshape(-1, C)
        if flavor == "reference":
            s = _layer_norm(s, params["static_norm"])
            d = _layer_norm(d, params["dynamic_norm"])
        U = lambda q, ctx: _operator(params["updater"], q, ctx, heads, flavor)  # noqa: E731
        P = lambda q, ctx: _operator(params["predictor"], q, ctx, heads, flavor)  # noqa: E731
        if variant == "lifting":  # Y_S = X_S + U(X_D|X_S); Y_D = X_D - P(Y_S|X_D)
            ys = s + U(s, d)
            yd = d - P(d, ys)
        elif variant == "predictor_first":
            yd = d - P(d, s)
            ys = s + U(s, yd)
        elif variant == "no_mutual":
            ys = s + U(d, d)
            yd = d - P(ys, ys)
        else:  # none
            ys, yd = s, d
        if flavor == "reference":
            r = params["refiner"]
            h = _layer_norm(yd, r["norm1"])
            qkv = _dense(h, r["qkv"])
            yd = yd + _dense(_attention(qkv[:, :C], qkv[:, C : 2 * C], qkv[:, 2 * C :], heads), r["proj"])
            h = _layer_norm(yd, r["norm2"])
            yd = _dense(_gelu(_dense(h, r["mlp_fc1"])), r["mlp_fc2"])  # no residual
        feats.append(yd.T @ np.asarray(params["project_compress"])[:, 0])
        ys_all.append(ys)
        yd_all.append(yd)
    return np.stack(ys_all), np.stack(yd_all), np.stack(feats)


def test_paper_lifting_hand_built():
    """One sample, 2 tokens, 2 channels; zero query weights make the attention uniform, so each
    operator returns GELU of the mean context token."""
    xs = jnp.array([[1.0, 0.0], [0.0, 1.0]]).reshape(1, 1, 1, 2, 2)
    xd = jnp.array([[2.0, 0.0], [0.0, 4.0]]).reshape(1, 1, 1, 2, 2)
    module = LADM(flavor="paper")
    params = module.init(jax.random.key(0), xs, xd)["params"]
    eye = jnp.eye(2)
    op = dict(
        q=dict(kernel=jnp.zeros((2, 2)), bias=jnp.zeros(2)),
        kv=dict(kernel=jnp.concatenate([eye, eye], axis=1), bias=jnp.zeros(4)),
        project=dict(kernel=eye, bias=jnp.zeros(2)),
    )
    params = dict(updater=op, predictor=op, project_compress=jnp.array([[1.0], [0.5]]))
    out = module.apply({"params": params}, xs, xd)

    g = lambda v: 0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0)))  # noqa: E731
    u = np.array([g(1.0), g(2.0)])  # GELU(mean of X_D tokens) = GELU([1, 2])
    ys = np.array([[1.0, 0.0], [0.0, 1.0]]) + u
    mean_ys = ys.mean(0)  # [0.5 + gelu(1), 0.5 + gelu(2)]
    p = np.array([g(mean_ys[0]), g(mean_ys[1])])
    yd = np.array([[2.0, 0.0], [0.0, 4.0]]) - p
    np.testing.assert_allclose(out["static"].reshape(2, 2), ys, rtol=1e-5)
    np.testing.assert_allclose(out["dynamic"].reshape(2, 2), yd, rtol=1e-5)
    np.testing.assert_allclose(out["feature"][0], yd[0] + 0.5 * yd[1], rtol=1e-5)
    # Concrete values, computed by hand: gelu(1) = 0.841345, gelu(2) = 1.954500.
    np.testing.assert_allclose(ys[0], [1.841345, 1.954500], atol=1e-5)


@pytest.mark.parametrize("flavor", ["paper", "reference"])
@pytest.mark.parametrize("variant", ["lifting", "predictor_first", "no_mutual", "none"])
def test_matches_numpy_transcription(flavor, variant):
    xs, xd = _groups(seed=1)
    module = LADM(variant=variant, flavor=flavor, num_heads=2 if flavor == "reference" else None)
    params = module.init(jax.random.key(2), xs, xd)["params"]
    out = module.apply({"params": params}, xs, xd, train=False)
    heads = 2 if flavor == "reference" else 1
    ys, yd, feature = _numpy_ladm(params, xs, xd, variant, flavor, heads)
    np.testing.assert_allclose(out["static"].reshape(ys.shape), ys, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(out["dynamic"].reshape(yd.shape), yd, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(out["feature"], feature, rtol=2e-4, atol=2e-5)


def test_paper_flavor_has_no_norms_and_reference_has_the_released_layers():
    xs, xd = _groups()
    paper = LADM(flavor="paper").init(jax.random.key(0), xs, xd)["params"]
    assert set(paper) == {"updater", "predictor", "project_compress"}
    ref = LADM(flavor="reference").init(jax.random.key(0), xs, xd)["params"]
    assert set(ref) == {
        "positions", "static_norm", "dynamic_norm", "updater", "predictor", "refiner",
        "project_compress",
    }
    assert ref["positions"]["temporal_pos"].shape == (2 * TT, C)
    assert ref["project_compress"].shape == (TT * H * W, 1)


def test_cnn_lifting_runs_with_batch_norm():
    xs, xd = _groups()
    module = LADM(variant="cnn", flavor="paper")
    variables = module.init(jax.random.key(0), xs, xd)
    assert set(variables["params"]["updater"]) == {"conv0", "bn0", "conv1", "bn1"}
    out, updates = module.apply(variables, xs, xd, train=True, mutable=["batch_stats"])
    assert out["feature"].shape == (B, C)
    assert "updater" in updates["batch_stats"]
    # Y_S = X_S + U(X_D) with U ending in ReLU, so Y_S >= X_S everywhere.
    assert np.all(np.asarray(out["static"]) >= np.asarray(xs) - 1e-6)


def test_reference_stochastic_depth_drops_whole_samples_in_training_only():
    xs, xd = _groups(seed=3, b=32)
    module = LADM(flavor="reference", num_heads=2, drop_path=0.5)
    variables = module.init(jax.random.key(0), xs, xd)
    out = module.apply(variables, xs, xd, train=True, rngs={"dropout": jax.random.key(9)})
    zero = np.all(np.asarray(out["feature"]) == 0.0, axis=-1)
    assert 0 < zero.sum() < 32  # some samples reach the head with a zero feature, not all
    out = module.apply(variables, xs, xd, train=False)
    assert not np.any(np.all(np.asarray(out["feature"]) == 0.0, axis=-1))


def test_bad_inputs_raise_clear_errors():
    xs, xd = _groups()
    with pytest.raises(ValueError, match="variant must be one of"):
        LADM(variant="wavelet").init(jax.random.key(0), xs, xd)
    with pytest.raises(ValueError, match="of one shape"):
        LADM().init(jax.random.key(0), xs, xd[:, :1])
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        LADM(num_heads=3).init(jax.random.key(0), xs, xd)
