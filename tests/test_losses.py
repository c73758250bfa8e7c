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
        for flavor in ("paper", "reference"):
            np.testing.assert_array_equal(lifting_loss(x, x, lift, flavor), np.zeros(3))


def test_lifting_loss_hand_computed_huber():
    static, pooled = _static_and_pooled()
    np.testing.assert_allclose(lift_residual(static, pooled, "tc")[0, 0], [0.5, 3.0])
    # Huber δ=1: 0.5·0.5² = 0.125 and 3 - 0.5 = 2.5.
    np.testing.assert_allclose(lifting_loss(static, pooled, "tc", "paper"), [0.125 + 2.5])  # Σ_k
    np.testing.assert_allclose(lifting_loss(static, pooled, "tc", "reference"), [(0.125 + 2.5) / 2])
    # {T, H, W, C}: one average (0.5 + 3)/2 = 1.75 -> 1.25.
    np.testing.assert_allclose(lifting_loss(static, pooled, "thwc", "paper"), [1.25])
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


def test_ifdd_loss_weights_masks_and_flavors():
    static, pooled = _static_and_pooled()
    static = jnp.concatenate([static, pooled])  # second example has zero lifting loss
    pooled = jnp.concatenate([pooled, pooled])
    logits = jnp.zeros((2, 3))
    outputs = dict(logits=logits, static=static, pooled_x=pooled)
    labels = jnp.array([0, 1])
    total, terms = ifdd_loss(outputs, labels, flavor="paper")
    np.testing.assert_allclose(terms["classification"], np.log(3.0), rtol=1e-6)
    np.testing.assert_allclose(terms["lifting"], 2.625 / 2, rtol=1e-6)
    np.testing.assert_allclose(total, np.log(3.0) + 1.0 * 2.625 / 2, rtol=1e-6)
    # Reference: averaged positions, weight 0.1.
    total, terms = ifdd_loss(outputs, labels, flavor="reference")
    np.testing.assert_allclose(total, np.log(3.0) + 0.1 * 1.3125 / 2, rtol=1e-6)
    # The mask drops the padded second example; an explicit weight overrides the flavor's.
    total, terms = ifdd_loss(outputs, labels, mask=jnp.array([1.0, 0.0]), lift_weight=2.0)
    np.testing.assert_allclose(total, np.log(3.0) + 2.0 * 2.625, rtol=1e-6)
    # Soft targets and lift="off".
    total, terms = ifdd_loss(outputs, jax.nn.one_hot(labels, 3), lift="off")
    np.testing.assert_allclose(total, np.log(3.0), rtol=1e-6)
    assert float(terms["lifting"]) == 0.0
    # Baselines have no Y_S: the lifting term is zero.
    total, _ = ifdd_loss(dict(logits=logits), labels)
    np.testing.assert_allclose(total, np.log(3.0), rtol=1e-6)
