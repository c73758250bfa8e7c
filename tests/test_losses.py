"""Classification and lifting losses against hand-computed values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ifdd_jax.models.losses import (
    cross_entropy,
    ifdd_loss,
    lift_residual,
    lifting_loss,
    smooth_labels,
    soft_target_cross_entropy,
)


def _static_and_pooled():
    """B=1, t=2, H=1, W=2, C=2 with P_T↓2(X) - Y_S chosen so that the {T, C} averages are 0.5
    (position 0) and 3.0 (position 1)."""
    pooled = jnp.zeros((1, 2, 1, 2, 2))
    diff = jnp.array(
        [[[[0.0, 1.0], [2.0, 4.0]]], [[[0.5, 0.5], [3.0, 3.0]]]]
    )  # [t, H, W, C]; position 0 mean (0+1+0.5+0.5)/4 = 0.5, position 1 mean (2+4+3+3)/4 = 3
    static = pooled - diff[None]
    return static, pooled


def test_lifting_loss_is_zero_when_static_equals_pooled_x():
    x = jax.random.normal(jax.random.key(0), (3, 2, 2, 2, 4))
    for lift in ("tc", "thwc"):
        np.testing.assert_array_equal(lifting_loss(x, x, lift), np.zeros(3))


def test_lifting_loss_hand_computed_huber():
    static, pooled = _static_and_pooled()
    np.testing.assert_allclose(lift_residual(static, pooled, "tc")[0, 0], [0.5, 3.0])
    # Huber δ=1: 0.5·0.5² = 0.125 and 3 - 0.5 = 2.5; the H×W map is reduced by its mean (as the
    # released smooth_l1_loss(..).mean() does): (0.125 + 2.5) / 2 positions.
    np.testing.assert_allclose(lifting_loss(static, pooled, "tc"), [(0.125 + 2.5) / 2])
    # {T, H, W, C}: one average (0.5 + 3)/2 = 1.75 -> 1.25.
    np.testing.assert_allclose(lifting_loss(static, pooled, "thwc"), [1.25])
    np.testing.assert_array_equal(lifting_loss(static, pooled, "off"), [0.0])


def test_lifting_loss_rejects_bad_input():
    static, pooled = _static_and_pooled()
    with pytest.raises(ValueError, match="must be one of"):
        lifting_loss(static, pooled, "hw")
    with pytest.raises(ValueError, match="differ in shape"):
        lifting_loss(static, pooled[:, :1], "tc")


def test_cross_entropies():
    logits = jnp.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    labels = jnp.array([0, 2])
    expected = [-(2.0 - np.log(np.exp(2.0) + 1.0 + np.exp(-1.0))), np.log(3.0)]
    np.testing.assert_allclose(cross_entropy(logits, labels), expected, rtol=1e-6)
    one_hot = jax.nn.one_hot(labels, 3)
    np.testing.assert_allclose(soft_target_cross_entropy(logits, one_hot), expected, rtol=1e-6)


def test_smooth_labels_match_the_released_targets():
    targets = smooth_labels(jnp.array([1]), 7, 0.1)
    off, on = 0.1 / 7, 1 - 0.1 + 0.1 / 7
    np.testing.assert_allclose(targets[0], [off, on, off, off, off, off, off], rtol=1e-6)
    np.testing.assert_allclose(targets.sum(), 1.0, rtol=1e-6)


def _released_lifting_loss(pool_a: np.ndarray) -> float:
    """The released LiftingLoss written out in numpy: `for _x in pool_a` iterates over the batch
    axis of the [B, H, W] tensor and adds smooth_l1(_x, 0).mean() (β = 1), then multiplies by
    λ1 = 0.1."""
    total = 0.0
    for clip in pool_a:
        r = np.abs(clip)
        total += np.where(r < 1.0, 0.5 * r**2, r - 0.5).mean()
    return 0.1 * total


def test_reference_lift_term_is_the_released_sum_over_the_batch():
    """Reference flavor: 0.1 · Σ_b mean_hw Huber(pool_a[b]), i.e. 0.1 · B · mean_b (1.6 × the
    per-clip mean at the released batch 16), against the released formula written out."""
    batch = 16
    key_s, key_p = jax.random.split(jax.random.key(3))
    static = 1.5 * jax.random.normal(key_s, (batch, 2, 7, 7, 8))
    pooled = jax.random.normal(key_p, (batch, 2, 7, 7, 8))
    # The released pool_a = mean over (C, T) of (X_skip_pooled - Y_S) -> [B, 7, 7].
    pool_a = np.asarray(pooled - static).mean(axis=(1, 4))
    outputs = dict(logits=jnp.zeros((batch, 7)), static=static, pooled_x=pooled)
    labels = jnp.arange(batch) % 7
    total, terms = ifdd_loss(outputs, labels, flavor="reference")
    expected_lift = _released_lifting_loss(pool_a)
    np.testing.assert_allclose(terms["lifting"], expected_lift, rtol=1e-5)
    np.testing.assert_allclose(total, np.log(7.0) + expected_lift, rtol=1e-5)
    # The weight is 0.1 · batch on the per-clip mean.
    np.testing.assert_allclose(terms["lifting"], 0.1 * batch * terms["lifting_per_clip"], rtol=1e-5)


def test_paper_loss_is_equal_weight_per_clip():
    """Paper Eq. 9 in batch-mean form: mean_k CE_k + mean_k mean_hw Huber_k (no 0.1, no sum over
    positions), so the lift term does not grow with the batch or the map size."""
    static, pooled = _static_and_pooled()
    outputs = dict(logits=jnp.zeros((1, 3)), static=static, pooled_x=pooled)
    _, small = ifdd_loss(outputs, jnp.array([0]), flavor="paper")
    tiled = {k: jnp.concatenate([v] * 4) for k, v in outputs.items()}
    total, big = ifdd_loss(tiled, jnp.array([0, 1, 2, 0]), flavor="paper")
    np.testing.assert_allclose(small["lifting"], (0.125 + 2.5) / 2, rtol=1e-6)
    np.testing.assert_allclose(big["lifting"], small["lifting"], rtol=1e-6)
    np.testing.assert_allclose(total, np.log(3.0) + (0.125 + 2.5) / 2, rtol=1e-6)
    with pytest.raises(ValueError, match="reduction"):
        ifdd_loss(outputs, jnp.array([0]), lift_reduction="max")


def test_ifdd_loss_weights_masks_and_flavors():
    static, pooled = _static_and_pooled()
    static = jnp.concatenate([static, pooled])  # second example has zero lifting loss
    pooled = jnp.concatenate([pooled, pooled])
    logits = jnp.zeros((2, 3))
    outputs = dict(logits=logits, static=static, pooled_x=pooled)
    labels = jnp.array([0, 1])
    total, terms = ifdd_loss(outputs, labels, flavor="paper")
    np.testing.assert_allclose(terms["classification"], np.log(3.0), rtol=1e-6)
    # Per-clip lifting: 1.3125 and 0; paper: their mean with weight 1.
    np.testing.assert_allclose(terms["lifting"], 1.3125 / 2, rtol=1e-6)
    np.testing.assert_allclose(total, np.log(3.0) + 1.3125 / 2, rtol=1e-6)
    # Reference: their sum with weight 0.1.
    total, terms = ifdd_loss(outputs, labels, flavor="reference")
    np.testing.assert_allclose(total, np.log(3.0) + 0.1 * 1.3125, rtol=1e-6)
    np.testing.assert_allclose(terms["lifting_per_clip"], 1.3125 / 2, rtol=1e-6)
    # The mask drops the padded second example; an explicit weight overrides the flavor's.
    total, terms = ifdd_loss(outputs, labels, mask=jnp.array([1.0, 0.0]), lift_weight=2.0)
    np.testing.assert_allclose(total, np.log(3.0) + 2.0 * 1.3125, rtol=1e-6)
    # A padded example counts in neither reduction.
    total, terms = ifdd_loss(outputs, labels, mask=jnp.array([1.0, 0.0]), flavor="reference")
    np.testing.assert_allclose(total, np.log(3.0) + 0.1 * 1.3125, rtol=1e-6)
    # Soft targets and lift="off".
    total, terms = ifdd_loss(outputs, jax.nn.one_hot(labels, 3), lift="off")
    np.testing.assert_allclose(total, np.log(3.0), rtol=1e-6)
    assert float(terms["lifting"]) == 0.0
    # Baselines have no Y_S: the lifting term is zero.
    total, _ = ifdd_loss(dict(logits=logits), labels)
    np.testing.assert_allclose(total, np.log(3.0), rtol=1e-6)
