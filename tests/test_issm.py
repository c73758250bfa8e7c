"""ISSM: Eqs. 1-4, the reference sampling quirk, the variants and their failure modes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ifdd_jax.config_lib import base_config
from ifdd_jax.models import builders
from ifdd_jax.models.issm import (
    initial_indices,
    interpolate_frames,
    reference_positions,
    resolve_index_range,
)
from ifdd_jax.optim import decay_mask

T, H, W, C = 8, 3, 3, 6
CONFIG = base_config("synthetic")  # the defaults of every ISSM field not given


def _issm(**fields):
    """An ISSM with the config's defaults (IFDD-2DCNN's D_c) and `fields` replacing them."""
    return builders.issm(CONFIG, "mobilenet_v2", **fields)


def _x(seed=0, b=2, t=T):
    return jax.random.normal(jax.random.key(seed), (b, t, H, W, C))


def _init(module, x):
    return module.init({"params": jax.random.key(1)}, x)


def _zero_offsets(variables):
    """Zeroes the offset Linears (kernel and bias) so that ΔI = 0."""
    params = jax.tree_util.tree_map_with_path(
        lambda path, v: (
            jnp.zeros_like(v)
            if any(getattr(k, "key", None) in ("static_offset", "dynamic_offset") for k in path)
            else v
        ),
        variables["params"],
    )
    return {**variables, "params": params}


def test_initial_indices():
    s, d = initial_indices(8, "even_odd")
    np.testing.assert_array_equal(s, [0, 2, 4, 6])
    np.testing.assert_array_equal(d, [1, 3, 5, 7])
    s, d = initial_indices(8, "midpoint")
    np.testing.assert_array_equal(s, [0.5, 2.5, 4.5, 6.5])
    np.testing.assert_array_equal(d, s)
    with pytest.raises(ValueError, match="even number of frames"):
        initial_indices(7, "even_odd")
    with pytest.raises(ValueError, match="init must be one of"):
        initial_indices(8, "random")


def test_interpolation_hand_computed():
    # Frame t holds the value 10·t + 1 everywhere, so reading position p gives 10·p + 1.
    x = (10.0 * jnp.arange(4.0) + 1.0)[None, :, None, None, None] * jnp.ones((1, 4, 1, 1, 2))
    positions = jnp.array([[1.25, 2.0, 0.0, 3.0]])
    out = interpolate_frames(x, positions)
    np.testing.assert_allclose(out[0, :, 0, 0, 0], [13.5, 21.0, 1.0, 31.0], rtol=1e-6)
    # Non-linear content: X[1.25] = 0.75·X[1] + 0.25·X[2].
    x = jax.random.normal(jax.random.key(3), (1, 4, 2, 2, 3))
    out = interpolate_frames(x, jnp.array([[1.25]]))
    np.testing.assert_allclose(out[0, 0], 0.75 * x[0, 1] + 0.25 * x[0, 2], rtol=1e-6)


def test_interpolation_gradient_is_frame_difference():
    x = jax.random.normal(jax.random.key(4), (1, 4, 2, 2, 3))
    grad = jax.grad(lambda p: interpolate_frames(x, p).sum())(jnp.array([[1.4]]))
    np.testing.assert_allclose(grad[0, 0], (x[0, 2] - x[0, 1]).sum(), rtol=1e-5)


def test_reference_positions_match_grid_sample_quirk():
    # docs/reference-ifdd.md §3a: with zero offsets the even slots read {0, 1.79, 4.07, 6.36} and
    # the odd slots {0.64, 2.93, 5.21, 7} for T = 8.
    even = reference_positions(jnp.array([0.0, 2.0, 4.0, 6.0]), 8)
    odd = reference_positions(jnp.array([1.0, 3.0, 5.0, 7.0]), 8)
    np.testing.assert_allclose(
        even, [0.0, 8 * 2 / 7 - 0.5, 8 * 4 / 7 - 0.5, 8 * 6 / 7 - 0.5], rtol=1e-6
    )
    np.testing.assert_allclose(even, [0.0, 1.7857, 4.0714, 6.3571], atol=1e-4)
    np.testing.assert_allclose(odd, [0.6429, 2.9286, 5.2143, 7.0], atol=1e-4)


def test_index_range_resolution():
    assert resolve_index_range(None, 8, "paper") == 4.0
    assert resolve_index_range(None, 8, "reference") == 2.0
    assert resolve_index_range("T/4", 8, "paper") == 2.0
    assert resolve_index_range("1.5", 8, "paper") == 1.5
    assert resolve_index_range(3, 8, "reference") == 3.0
    with pytest.raises(ValueError, match="number or 'T/k'"):
        resolve_index_range("quarter", 8, "paper")
    with pytest.raises(ValueError, match="positive"):
        resolve_index_range("0", 8, "paper")


def test_paper_zero_offsets_reproduce_even_odd_frames():
    x = _x()
    module = _issm(flavor="paper")
    variables = _zero_offsets(_init(module, x))
    out = module.apply(variables, x)
    np.testing.assert_array_equal(out["static"], x[:, 0::2])
    np.testing.assert_array_equal(out["dynamic"], x[:, 1::2])
    np.testing.assert_array_equal(out["static_index"], jnp.tile(jnp.array([0.0, 2, 4, 6]), (2, 1)))
    assert out["similarity"].shape == (2, T, T)


def test_reference_zero_offsets_read_quirk_positions():
    x = _x()
    module = _issm(flavor="reference")
    variables = _init(module, x)
    # The released offset Linears have no bias; time_project exists but is unused.
    assert "bias" not in variables["params"]["static_offset"]
    assert set(variables["params"]["time_project"]) == {
        "layer0_kernel",
        "layer0_bias",
        "layer2_kernel",
        "layer2_bias",
    }
    out = module.apply(_zero_offsets(variables), x)
    expected = reference_positions(jnp.arange(0.0, T, 2.0), T)
    np.testing.assert_allclose(out["static_index"][0], expected, rtol=1e-6)
    np.testing.assert_allclose(out["static"][:, 1], 0.2143 * x[:, 1] + 0.7857 * x[:, 2], atol=1e-4)
    np.testing.assert_allclose(out["dynamic"][:, 3], x[:, 7], rtol=1e-6)


def _descriptor(module, variables, x):
    """Z of Eq. 1 `[B, T, d_T]`: the output of the paper flavor's final LayerNorm."""
    _, state = module.apply(
        variables,
        x,
        capture_intermediates=lambda mdl, _: mdl.name == "descriptor_norm",
        mutable=["intermediates"],
    )
    return np.asarray(state["intermediates"]["descriptor_norm"]["__call__"][0])


def test_paper_descriptor_has_a_bias_per_frame():
    """Eq. 1: Z = LN(W_T vec(Conv(Pool(X))) + b_T) with b_T ∈ R^{T×d_T}: W_T is shared by the
    frames, the bias has one row per frame."""
    x = _x()
    module = _issm(flavor="paper", similarity_dim=16)
    variables = _init(module, x)
    p = variables["params"]
    assert p["descriptor_bias"].shape == (T, 16)
    assert set(p["descriptor_dense"]) == {"kernel"}  # no shared bias besides b_T

    # Changing frame 3's bias row changes Z at frame 3 only (LayerNorm acts per frame).
    z = _descriptor(module, variables, x)
    bumped = p["descriptor_bias"].at[3].add(jax.random.normal(jax.random.key(5), (16,)))
    z2 = _descriptor(module, {"params": {**p, "descriptor_bias": bumped}}, x)
    others = [t for t in range(T) if t != 3]
    np.testing.assert_array_equal(z2[:, others], z[:, others])
    assert np.abs(z2[:, 3] - z[:, 3]).min() > 1e-4

    # With W_T = 0, Z[b, t] = LN(b_T[t]) for every clip b: the bias alone tells frames apart.
    b_t = np.asarray(jax.random.normal(jax.random.key(6), (T, 16)))
    zero_w = {"kernel": jnp.zeros_like(p["descriptor_dense"]["kernel"])}
    z3 = _descriptor(
        module, {"params": {**p, "descriptor_dense": zero_w, "descriptor_bias": b_t}}, x
    )
    mu, var = b_t.mean(-1, keepdims=True), b_t.var(-1, keepdims=True)
    norm = p["descriptor_norm"]
    expected = (b_t - mu) / np.sqrt(var + 1e-5) * np.asarray(norm["scale"]) + np.asarray(
        norm["bias"]
    )
    for b in range(x.shape[0]):
        np.testing.assert_allclose(z3[b], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("flavor", ["paper", "reference"])
def test_descriptor_conv_uses_pytorch_default_init(flavor):
    """The released 1×1 conv (`dim_project`, Conv2d with bias) is not touched by AdaptSplit's init
    (it re-initialises Linears only), so it keeps PyTorch's default: weight kaiming_uniform_(a=√5)
    = U(±1/sqrt(fan_in)) and bias U(±1/sqrt(fan_in)), fan_in = in_channels · kernel area. The paper
    flavor's 3×3 conv takes the same default."""
    c = 64
    x = jax.random.normal(jax.random.key(0), (1, T, 4, 4, c))
    params = _init(_issm(flavor=flavor), x)["params"]
    name, fan_in = ("dim_project", c) if flavor == "reference" else ("descriptor_conv", 9 * c)
    bound = 1.0 / np.sqrt(fan_in)
    kernel, bias = np.asarray(params[name]["kernel"]), np.asarray(params[name]["bias"])
    assert np.abs(kernel).max() <= bound and np.abs(bias).max() <= bound
    np.testing.assert_allclose(kernel.std(), bound / np.sqrt(3.0), rtol=0.1)
    assert np.all(bias != 0.0)  # drawn, not zero-initialised


def test_midpoint_init_with_zero_offsets_averages_pairs():
    x = _x()
    module = _issm(flavor="paper", init_index="midpoint")
    out = module.apply(_zero_offsets(_init(module, x)), x)
    pairs = 0.5 * (x[:, 0::2] + x[:, 1::2])
    np.testing.assert_allclose(out["static"], pairs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["dynamic"], pairs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("flavor", ["paper", "reference"])
@pytest.mark.parametrize("variant", ["issm", "entire", "weighting"])
def test_indices_stay_in_range_and_within_L(flavor, variant):
    x = 5.0 * _x(seed=7)
    module = _issm(variant=variant, flavor=flavor, index_range="T/4")
    variables = _init(module, x)
    # Blow the offset weights up so tanh saturates: indices must still stay in [0, T-1].
    big = jax.tree.map(lambda v: 1000.0 * v, variables)
    for v in (variables, big):
        out = module.apply(v, x)
        for key in ("static_index", "dynamic_index"):
            idx = np.asarray(out[key])
            assert idx.shape == (2, T // 2)
            assert np.all(idx >= 0.0) and np.all(idx <= T - 1.0), (key, idx)
        if variant != "weighting" and flavor == "paper":
            # |ΔI| < L = T/4 = 2 around the even / odd starting points.
            assert np.all(np.abs(out["static_index"] - np.arange(0, T, 2)) <= 2.0 + 1e-5)
            assert np.all(np.abs(out["dynamic_index"] - np.arange(1, T, 2)) <= 2.0 + 1e-5)
        assert out["static"].shape == (2, T // 2, H, W, C)


@pytest.mark.parametrize("flavor", ["paper", "reference"])
@pytest.mark.parametrize(
    "variant,param_name",
    [("issm", "static_offset"), ("entire", "index_mlp_out"), ("weighting", "static_weighting")],
)
def test_gradients_reach_the_index_parameters(flavor, variant, param_name):
    x = _x(seed=11)
    module = _issm(variant=variant, flavor=flavor)
    variables = _init(module, x)
    probe_s = jax.random.normal(jax.random.key(12), (2, T // 2, H, W, C))
    probe_d = jax.random.normal(jax.random.key(13), (2, T // 2, H, W, C))

    def loss(params):
        out = module.apply({"params": params}, x)
        return jnp.sum(out["static"] * probe_s) + jnp.sum(out["dynamic"] * probe_d)

    grads = jax.grad(loss)(variables["params"])
    g = np.asarray(grads[param_name]["kernel"])
    assert np.all(np.isfinite(g))
    assert np.abs(g).max() > 0.0


def test_even_odd_split_has_no_parameters():
    x = _x()
    module = _issm(variant="even_odd")
    variables = _init(module, x)
    assert not variables.get("params")
    out = module.apply(variables, x)
    np.testing.assert_array_equal(out["static"], x[:, 0::2])
    np.testing.assert_array_equal(out["dynamic"], x[:, 1::2])


def test_weighting_is_a_convex_combination_of_frames():
    x = jnp.broadcast_to(jax.random.normal(jax.random.key(5), (2, 1, H, W, C)), (2, T, H, W, C))
    module = _issm(variant="weighting")
    out = module.apply(_init(module, x), x)
    # Every frame is the same, so any convex combination over time returns that frame.
    np.testing.assert_allclose(out["static"], x[:, : T // 2], rtol=1e-5, atol=1e-5)


def test_standardized_offset_input_hand_computed():
    """offset_input="standardized": ΔI = L·tanh(W (v - mean v)/sqrt(var v + 1e-5) + b) with
    v = vec(A), recomputed here in numpy from S and the offset Linears' parameters."""
    x = _x(seed=3)
    module = _issm(offset_input="standardized", index_range=0.5)
    variables = _init(module, x)
    out = module.apply(variables, x)
    s = np.asarray(out["similarity"], np.float64)
    params = variables["params"]
    even = np.arange(0, T, 2, dtype=np.float64)
    for group, sign, start in (("static", 1.0, even), ("dynamic", -1.0, even + 1.0)):
        a = np.exp(sign * s - (sign * s).max(-1, keepdims=True))
        v = (a / a.sum(-1, keepdims=True)).reshape(x.shape[0], -1)
        v = (v - v.mean(-1, keepdims=True)) / np.sqrt(v.var(-1, keepdims=True) + 1e-5)
        dense = params[f"{group}_offset"]
        offset = 0.5 * np.tanh(v @ np.asarray(dense["kernel"]) + np.asarray(dense["bias"]))
        expected = np.clip(start + offset, 0.0, T - 1.0)
        np.testing.assert_allclose(out[f"{group}_index"], expected, rtol=1e-5, atol=1e-5)


def test_standardized_offset_input_makes_the_indices_follow_the_content():
    """At initialisation the raw vec(A) moves the indices across clips by a fraction of what its
    standardised form does: every row of A sums to 1, so vec(A) = 1/T + a small clip-dependent
    part, and W (std 0.03) passes that part on at its small scale."""
    x = _x(seed=4, b=16)

    def spread(offset_input: str) -> float:
        module = _issm(offset_input=offset_input, index_range=0.5)
        out = module.apply(_init(module, x), x)
        return float(jnp.mean(jnp.std(out["static_index"], axis=0)))

    raw, standardized = spread("vec_a"), spread("standardized")
    assert standardized > 3 * raw, (raw, standardized)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="variant must be one of"):
        _issm(variant="nope").init(jax.random.key(0), _x())
    with pytest.raises(ValueError, match="flavor must be one of"):
        _issm(flavor="pytorch").init(jax.random.key(0), _x())
    with pytest.raises(ValueError, match="offset_input must be one of"):
        _issm(offset_input="layernorm").init(jax.random.key(0), _x())
    with pytest.raises(ValueError, match=r"X \[B, T, H, W, C\]"):
        _issm().init(jax.random.key(0), jnp.zeros((2, T, C)))
    with pytest.raises(ValueError, match="even number of frames"):
        _issm().init(jax.random.key(0), _x(t=5))


def test_paper_frame_bias_b_t_is_not_weight_decayed():
    """b_T `[T, d_T]` is a bias of rank 2: the paper flavor's decay mask (weights only) must still
    leave it out, and keep decaying W_T."""
    x = jax.random.normal(jax.random.key(0), (1, 4, 4, 4, 8))
    params = _issm(flavor="paper").init(jax.random.key(1), x)["params"]
    mask = decay_mask(params, "paper")
    assert mask["descriptor_bias"] is False
    assert mask["descriptor_dense"]["kernel"] is True
