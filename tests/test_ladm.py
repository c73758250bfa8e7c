"""LADM: Eqs. 5-8 on hand-built inputs, a numpy transcription of both flavors, the variants."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ifdd_jax.config_lib import base_config
from ifdd_jax.models import builders

B, TT, H, W, C = 2, 2, 2, 2, 8  # N = TT·H·W = 8 tokens per group
CONFIG = base_config("synthetic")  # the defaults of every LADM field not given


def _ladm(**fields):
    """An LADM with the config's defaults and `fields` replacing them."""
    return builders.ladm(CONFIG, **fields)


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
    """A Linear; bias-free where the layer has none (the paper's W_Q, W_K, W_V)."""
    y = x @ np.asarray(p["kernel"])
    return y + np.asarray(p["bias"]) if "bias" in p else y


def _attention(q, k, v, heads):
    """Per-head softmax(q kᵀ / sqrt(d)) v for one sample, q/k/v `[N, C]`."""
    n, c = q.shape
    d = c // heads
    out = np.zeros_like(q)
    for h in range(heads):
        s = slice(h * d, (h + 1) * d)
        out[:, s] = _softmax(q[:, s] @ k[:, s].T / math.sqrt(d)) @ v[:, s]
    return out


def _operator(p, queries, context, heads, flavor, mlp):
    """U(context | queries) or P(context | queries): Eqs. 6 and 8, with `mlp` after the attention:
    Linear-GELU-Linear ("mlp"), one Linear ("linear") or GELU(Linear) ("linear_gelu")."""
    c = queries.shape[-1]
    q = _dense(queries, p["q"])
    kv = _dense(context, p["kv"])
    k, v = kv[:, :c], kv[:, c:]
    a = _attention(q, k, v, heads)
    if flavor == "reference":
        a = a + v
    a = _dense(a, p["project"])
    if mlp == "mlp":
        return _dense(_gelu(a), p["project_out"])
    return a if mlp == "linear" else _gelu(a)


def _numpy_ladm(params, xs, xd, variant, flavor, heads, mlp=None):
    """The module's computation transcribed in numpy, one sample at a time (eval mode). `mlp`
    None: the flavor's (Linear-GELU-Linear paper, one Linear reference); the input LayerNorms
    are applied where the module has them."""
    mlp = mlp or ("mlp" if flavor == "paper" else "linear")
    feats, ys_all, yd_all = [], [], []
    for b in range(xs.shape[0]):
        s = np.asarray(xs[b]).reshape(-1, C)
        d = np.asarray(xd[b]).reshape(-1, C)
        if "static_norm" in params:
            s = _layer_norm(s, params["static_norm"])
            d = _layer_norm(d, params["dynamic_norm"])
        U = lambda q, ctx: _operator(params["updater"], q, ctx, heads, flavor, mlp)  # noqa: E731
        P = lambda q, ctx: _operator(params["predictor"], q, ctx, heads, flavor, mlp)  # noqa: E731
        if variant == "lifting":  # Y_S = X_S + U(X_D|X_S); Y_D = X_D - P(Y_S|X_D)
            ys = s + U(s, d)
            yd = d - P(d, ys)
        elif variant == "predictor_first":
            yd = d - P(d, s)
            ys = s + U(s, yd)
        elif variant == "no_mutual":  # paper: P(X_S|X_S); released: P(Y_S|Y_S)
            ys = s + U(d, d)
            ctx = ys if flavor == "reference" else s
            yd = d - P(ctx, ctx)
        else:  # none
            ys, yd = s, d
        if flavor == "reference":
            r = params["refiner"]
            h = _layer_norm(yd, r["norm1"])
            qkv = _dense(h, r["qkv"])
            yd = yd + _dense(
                _attention(qkv[:, :C], qkv[:, C : 2 * C], qkv[:, 2 * C :], heads), r["proj"]
            )
            h = _layer_norm(yd, r["norm2"])
            yd = _dense(_gelu(_dense(h, r["mlp_fc1"])), r["mlp_fc2"])  # no residual
        feats.append(yd.T @ np.asarray(params["project_compress"])[:, 0])
        ys_all.append(ys)
        yd_all.append(yd)
    return np.stack(ys_all), np.stack(yd_all), np.stack(feats)


def test_paper_lifting_hand_built():
    """The equations read literally (no norm, GELU(Linear) after the attention). One sample,
    2 tokens, 2 channels; zero query weights make the attention uniform, so each operator returns
    GELU of the mean context token."""
    xs = jnp.array([[1.0, 0.0], [0.0, 1.0]]).reshape(1, 1, 1, 2, 2)
    xd = jnp.array([[2.0, 0.0], [0.0, 4.0]]).reshape(1, 1, 1, 2, 2)
    module = _ladm(flavor="paper", mlp="linear_gelu", norm="none")
    init_params = module.init(jax.random.key(0), xs, xd)["params"]
    eye = jnp.eye(2)
    op = dict(  # Eq. 6: W_Q, W_K, W_V without bias
        q=dict(kernel=jnp.zeros((2, 2))),
        kv=dict(kernel=jnp.concatenate([eye, eye], axis=1)),
        project=dict(kernel=eye, bias=jnp.zeros(2)),
    )
    params = dict(updater=op, predictor=op, project_compress=jnp.array([[1.0], [0.5]]))
    assert jax.tree.structure(params) == jax.tree.structure(init_params)
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


def test_paper_default_lifting_hand_built():
    """The paper flavor's defaults: LayerNorms on X_S and X_D, and Eq. 7's MLP as
    Linear-GELU-Linear. Zero query weights make the attention uniform; the layer-normalised
    tokens of each group are ±(1, -1), so their mean is 0 and the updater returns
    MLP(0) = GELU(b1) W2 + b2."""
    xs = jnp.array([[1.0, 0.0], [0.0, 1.0]]).reshape(1, 1, 1, 2, 2)
    xd = jnp.array([[2.0, 0.0], [0.0, 4.0]]).reshape(1, 1, 1, 2, 2)
    module = _ladm(flavor="paper")
    init_params = module.init(jax.random.key(0), xs, xd)["params"]
    eye = jnp.eye(2)
    norm = dict(scale=jnp.ones(2), bias=jnp.zeros(2))
    op = dict(
        q=dict(kernel=jnp.zeros((2, 2))),
        kv=dict(kernel=jnp.concatenate([eye, eye], axis=1)),
        project=dict(kernel=eye, bias=jnp.array([1.0, -2.0])),
        project_out=dict(kernel=-eye, bias=jnp.zeros(2)),
    )
    params = dict(
        static_norm=norm,
        dynamic_norm=norm,
        updater=op,
        predictor=op,
        project_compress=jnp.array([[1.0], [0.5]]),
    )
    assert jax.tree.structure(params) == jax.tree.structure(init_params)
    out = module.apply({"params": params}, xs, xd)

    g = lambda v: 0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0)))  # noqa: E731
    ln = lambda t: (t - t.mean()) / math.sqrt(t.var() + 1e-5)  # noqa: E731  (per token)
    ln_s = np.array([ln(np.array([1.0, 0.0])), ln(np.array([0.0, 1.0]))])  # ≈ ±(1, -1)
    ln_d = np.array([ln(np.array([2.0, 0.0])), ln(np.array([0.0, 4.0]))])
    mlp = lambda m: -np.array([g(m[0] + 1.0), g(m[1] - 2.0)])  # noqa: E731  GELU(m + b1)·(-I)
    u = mlp(ln_d.mean(0))  # ≈ MLP(0) = -GELU([1, -2])
    ys = ln_s + u
    yd = ln_d - mlp(ys.mean(0))
    np.testing.assert_allclose(out["static"].reshape(2, 2), ys, atol=1e-5)
    np.testing.assert_allclose(out["dynamic"].reshape(2, 2), yd, atol=1e-5)
    np.testing.assert_allclose(out["feature"][0], yd[0] + 0.5 * yd[1], atol=1e-5)
    # By hand: gelu(1) = 0.841345, so the update's first channel is -0.841345, below the
    # -0.17 floor of a GELU-last operator: corrections of either sign are possible.
    np.testing.assert_allclose(u[0], -0.841345, atol=1e-5)


def test_gelu_last_operator_corrections_are_nearly_one_signed():
    """Why the paper flavor left GELU(Linear): with it no correction goes below GELU's minimum
    (-0.17), with Linear-GELU-Linear they do."""
    xs, xd = _groups(seed=3)
    gelu_min = -0.1700
    lows = {}
    for mlp in ("linear_gelu", "mlp"):
        module = _ladm(flavor="paper", mlp=mlp, norm="none")
        params = module.init(jax.random.key(4), xs, xd)["params"]
        out = module.apply({"params": params}, xs, xd)
        lows[mlp] = float(jnp.min(out["static"] - xs.reshape(out["static"].shape)))
    assert lows["linear_gelu"] >= gelu_min
    assert lows["mlp"] < gelu_min


@pytest.mark.parametrize(
    "flavor,fields",
    [
        ("paper", {}),
        ("paper", dict(mlp="linear_gelu", norm="none")),
        ("paper", dict(mlp="linear", norm="input")),
        ("reference", {}),
        ("reference", dict(mlp="mlp")),
    ],
)
def test_operator_and_norm_options_match_numpy_transcription(flavor, fields):
    xs, xd = _groups(seed=1)
    module = _ladm(flavor=flavor, num_heads=2, **fields)
    params = module.init(jax.random.key(2), xs, xd)["params"]
    out = module.apply({"params": params}, xs, xd, train=False)
    ys, yd, feature = _numpy_ladm(params, xs, xd, "lifting", flavor, 2, fields.get("mlp"))
    np.testing.assert_allclose(out["static"].reshape(ys.shape), ys, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(out["dynamic"].reshape(yd.shape), yd, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(out["feature"], feature, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("flavor", ["paper", "reference"])
@pytest.mark.parametrize("variant", ["lifting", "predictor_first", "no_mutual", "none"])
def test_matches_numpy_transcription(flavor, variant):
    xs, xd = _groups(seed=1)
    module = _ladm(variant=variant, flavor=flavor, num_heads=2 if flavor == "reference" else None)
    params = module.init(jax.random.key(2), xs, xd)["params"]
    out = module.apply({"params": params}, xs, xd, train=False)
    heads = 2 if flavor == "reference" else 1
    ys, yd, feature = _numpy_ladm(params, xs, xd, variant, flavor, heads)
    np.testing.assert_allclose(out["static"].reshape(ys.shape), ys, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(out["dynamic"].reshape(yd.shape), yd, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(out["feature"], feature, rtol=2e-4, atol=2e-5)


def test_flavor_layers_and_the_literal_paper_reading():
    xs, xd = _groups()
    paper = _ladm(flavor="paper").init(jax.random.key(0), xs, xd)["params"]
    assert set(paper) == {
        "static_norm",
        "dynamic_norm",
        "updater",
        "predictor",
        "project_compress",
    }
    assert set(paper["updater"]) == {"q", "kv", "project", "project_out"}
    literal = _ladm(flavor="paper", mlp="linear_gelu", norm="none")
    literal = literal.init(jax.random.key(0), xs, xd)["params"]
    assert set(literal) == {"updater", "predictor", "project_compress"}
    assert set(literal["updater"]) == {"q", "kv", "project"}
    ref = _ladm(flavor="reference").init(jax.random.key(0), xs, xd)["params"]
    assert set(ref) == {
        "positions",
        "static_norm",
        "dynamic_norm",
        "updater",
        "predictor",
        "refiner",
        "project_compress",
    }
    assert set(ref["updater"]) == {"q", "kv", "project"}  # one Linear after the attention
    assert ref["positions"]["temporal_pos"].shape == (2 * TT, C)
    assert ref["project_compress"].shape == (TT * H * W, 1)


def test_paper_qkv_projections_have_no_bias():
    """Eq. 6: Q = X W_Q, K = X W_K, V = X W_V, no bias terms; the released q/kv Linears have one."""
    xs, xd = _groups()
    paper = _ladm(flavor="paper").init(jax.random.key(0), xs, xd)["params"]
    ref = _ladm(flavor="reference").init(jax.random.key(0), xs, xd)["params"]
    for op in ("updater", "predictor"):
        assert set(paper[op]["q"]) == set(paper[op]["kv"]) == {"kernel"}
        assert set(paper[op]["project"]) == {"kernel", "bias"}  # the MLP's FC keeps its bias
        assert set(ref[op]["q"]) == set(ref[op]["kv"]) == {"kernel", "bias"}


@pytest.mark.parametrize("flavor", ["paper", "reference"])
def test_linears_use_pytorch_default_init(flavor):
    """The released WaveSF_trans_CLS never re-initialises its Linears, so each keeps PyTorch's
    nn.Linear.reset_parameters: kaiming_uniform_(weight, a=sqrt(5)), i.e. bound
    gain·sqrt(3 / fan_in) with gain = sqrt(2 / (1 + a²)) = sqrt(1/3), so U(±1/sqrt(fan_in)); and
    bias U(±1/sqrt(fan_in)). A uniform U(±b) has standard deviation b / sqrt(3)."""
    c, tt, hw = 96, 2, 4  # 8 tokens per group
    xs = jax.random.normal(jax.random.key(0), (1, tt, hw, 1, c))
    params = _ladm(flavor=flavor).init(jax.random.key(1), xs, xs)["params"]
    n = tt * hw
    linears = {  # module path -> fan_in (in_features of the PyTorch Linear)
        "updater/q": c,
        "updater/kv": c,
        "updater/project": c,
        "predictor/q": c,
        "predictor/kv": c,
        "predictor/project": c,
    }
    if flavor == "paper":  # Eq. 7's MLP: its second Linear
        linears |= {"updater/project_out": c, "predictor/project_out": c}
    if flavor == "reference":
        linears |= {
            "refiner/qkv": c,
            "refiner/proj": c,
            "refiner/mlp_fc1": c,
            "refiner/mlp_fc2": 4 * c,
        }
    checked = []
    for path, fan_in in linears.items():
        module = params
        for part in path.split("/"):
            module = module[part]
        leaves = [("kernel", module["kernel"])]
        assert module["kernel"].shape[0] == fan_in
        if "bias" in module:
            leaves.append(("bias", module["bias"]))
        for leaf, value in leaves:
            value = np.asarray(value)
            bound = 1.0 / math.sqrt(fan_in)
            assert np.abs(value).max() <= bound, (path, leaf)
            assert np.abs(value).max() > 0.9 * bound, (path, leaf)  # not a narrower law
            np.testing.assert_allclose(value.std(), bound / math.sqrt(3.0), rtol=0.15)
            checked.append(f"{path}/{leaf}")
    # Biases are drawn, not zero: q/kv only where they exist (reference), projections always.
    assert "updater/project/bias" in checked
    assert ("updater/q/bias" in checked) == (flavor == "reference")
    # project_compress: Linear(N -> 1, no bias), fan_in = N tokens.
    w = np.asarray(params["project_compress"])
    assert w.shape == (n, 1) and np.abs(w).max() <= 1.0 / math.sqrt(n)


def test_paper_no_mutual_predicts_from_x_s_not_y_s():
    """The appendix's "no mutual" row: Y_S = X_S + U(X_D|X_D), Y_D = X_D - P(X_S|X_S). Hand-built
    as in test_paper_lifting_hand_built: zero W_Q makes the attention uniform, W_K = W_V = I and an
    identity FC, so an operator returns GELU of the mean of its context tokens."""
    xs = jnp.array([[1.0, 0.0], [0.0, 1.0]]).reshape(1, 1, 1, 2, 2)
    xd = jnp.array([[2.0, 0.0], [0.0, 4.0]]).reshape(1, 1, 1, 2, 2)
    eye = jnp.eye(2)
    op = dict(
        q=dict(kernel=jnp.zeros((2, 2))),
        kv=dict(kernel=jnp.concatenate([eye, eye], axis=1)),
        project=dict(kernel=eye, bias=jnp.zeros(2)),
    )
    params = dict(updater=op, predictor=op, project_compress=jnp.array([[1.0], [0.0]]))
    module = _ladm(variant="no_mutual", flavor="paper", mlp="linear_gelu", norm="none")
    out = module.apply({"params": params}, xs, xd)

    g = lambda v: 0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0)))  # noqa: E731
    x_s = np.array([[1.0, 0.0], [0.0, 1.0]])
    x_d = np.array([[2.0, 0.0], [0.0, 4.0]])
    y_s = x_s + np.array([g(1.0), g(2.0)])  # U(X_D|X_D) = GELU(mean X_D) = GELU([1, 2])
    y_d = x_d - np.array([g(0.5), g(0.5)])  # P(X_S|X_S) = GELU(mean X_S) = GELU([0.5, 0.5])
    np.testing.assert_allclose(out["static"].reshape(2, 2), y_s, rtol=1e-5)
    np.testing.assert_allclose(out["dynamic"].reshape(2, 2), y_d, rtol=1e-5)
    # gelu(0.5) = 0.25·(1 + erf(0.5/sqrt 2)) = 0.25·1.382925 = 0.345731.
    np.testing.assert_allclose(y_d[0], [2.0 - 0.345731, -0.345731], atol=1e-5)
    # P(Y_S|Y_S) would subtract GELU(mean Y_S) = GELU([1.341345, 2.454500]): far from the above.
    wrong = x_d - np.array([g(0.5 + g(1.0)), g(0.5 + g(2.0))])
    assert np.abs(np.asarray(out["dynamic"]).reshape(2, 2) - wrong).min() > 0.5


def test_cnn_lifting_runs_with_batch_norm():
    xs, xd = _groups()
    module = _ladm(variant="cnn", flavor="paper", norm="none")
    variables = module.init(jax.random.key(0), xs, xd)
    assert set(variables["params"]["updater"]) == {"conv0", "bn0", "conv1", "bn1"}
    out, updates = module.apply(variables, xs, xd, train=True, mutable=["batch_stats"])
    assert out["feature"].shape == (B, C)
    assert "updater" in updates["batch_stats"]
    # Y_S = X_S + U(X_D) with U ending in ReLU, so Y_S >= X_S everywhere.
    assert np.all(np.asarray(out["static"]) >= np.asarray(xs) - 1e-6)


def test_reference_stochastic_depth_drops_whole_samples_in_training_only():
    xs, xd = _groups(seed=3, b=32)
    module = _ladm(flavor="reference", num_heads=2, drop_path=0.5)
    variables = module.init(jax.random.key(0), xs, xd)
    out = module.apply(variables, xs, xd, train=True, rngs={"dropout": jax.random.key(9)})
    zero = np.all(np.asarray(out["feature"]) == 0.0, axis=-1)
    assert 0 < zero.sum() < 32  # some samples reach the head with a zero feature, not all
    out = module.apply(variables, xs, xd, train=False)
    assert not np.any(np.all(np.asarray(out["feature"]) == 0.0, axis=-1))


def test_bad_inputs_raise_clear_errors():
    xs, xd = _groups()
    with pytest.raises(ValueError, match="variant must be one of"):
        _ladm(variant="wavelet").init(jax.random.key(0), xs, xd)
    with pytest.raises(ValueError, match="of one shape"):
        _ladm().init(jax.random.key(0), xs, xd[:, :1])
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        _ladm(num_heads=3).init(jax.random.key(0), xs, xd)


def test_a_saved_config_without_the_options_builds_the_modules_it_was_trained_with():
    """Runs saved before ladm_mlp / ladm_norm existed: the paper flavor then had GELU(Linear) and
    no norm, the reference flavor its present modules; their checkpoints must still load."""
    xs, xd = _groups()
    params = {}
    for flavor in ("paper", "reference"):
        old = base_config("synthetic")
        old.flavor = flavor
        del old.model["ladm_mlp"], old.model["ladm_norm"]
        params[flavor] = builders.ladm(old).init(jax.random.key(0), xs, xd)["params"]
        assert set(params[flavor]["updater"]) == {"q", "kv", "project"}
    assert set(params["paper"]) == {"updater", "predictor", "project_compress"}
    assert {"static_norm", "dynamic_norm"} <= set(params["reference"])
