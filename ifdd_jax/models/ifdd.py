"""IFDD: trunk -> pyramid -> ISSM -> LADM -> head, and the vanilla trunk + MLP baselines.

Both models take clips `[B, T, H, W, 3]` (already normalised by the input pipeline) and return a
dict, so the losses and the analysis tools read what they need without re-running the network.

IFDD outputs:
  logits        `[B, classes]`
  feature       `[B, C]`         the classification vector (before the head's dropout and Linear)
  static        `[B, T', H', W', C]`  Y_S after LADM (T' = T_X / 2)
  dynamic       `[B, T', H', W', C]`  Y_D after LADM
  pooled_x      `[B, T', H', W', C]`  P_T↓2(X), pairs of frames of the pyramid output X averaged
  static_index, dynamic_index  `[B, T']`  the frame positions ISSM read
Baseline outputs: logits, feature.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from ifdd_jax.models.layers import fold_time, temporal_pair_mean, trunc_normal_init, unfold_time


class ClassifierHead(nn.Module):
    """Dropout -> Linear, or with `hidden` an MLP Linear -> ReLU -> Dropout -> Linear.
    `[B, C]` -> `[B, classes]`. The last Linear is trunc-normal(0.01), zero bias, as released."""

    num_classes: int
    dropout: float
    hidden: int | None = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        if self.hidden:
            x = jax.nn.relu(nn.Dense(self.hidden, name="hidden")(x))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(
            self.num_classes,
            kernel_init=trunc_normal_init(0.01),
            bias_init=nn.initializers.zeros,
            name="logits",
        )(x)


class IFDD(nn.Module):
    """The IFDD network. The trunk maps clips to a list of per-frame pyramid levels
    `[B, T_X, h_j, w_j, c_j]` (finest first); the pyramid fuses them into X `[B, T_X, H, W, C]`."""

    trunk: nn.Module
    pyramid: nn.Module
    issm: nn.Module
    ladm: nn.Module
    num_classes: int
    head_dropout: float  # config.model.head_dropout

    @nn.compact
    def __call__(self, clips: jax.Array, *, train: bool = False) -> dict:
        levels = self.trunk(clips, train=train)
        batch = clips.shape[0]
        x = unfold_time(self.pyramid([fold_time(level) for level in levels]), batch)
        split = self.issm(x, train=train)
        lifted = self.ladm(split["static"], split["dynamic"], train=train)
        logits = ClassifierHead(self.num_classes, self.head_dropout, name="head")(
            lifted["feature"], train=train
        )
        return dict(
            logits=logits,
            feature=lifted["feature"],
            static=lifted["static"],
            dynamic=lifted["dynamic"],
            pooled_x=temporal_pair_mean(x),
            static_index=split["static_index"],
            dynamic_index=split["dynamic_index"],
        )


class Baseline(nn.Module):
    """A vanilla trunk, average pooling over T×H×W of its last level, and a classifier head."""

    trunk: nn.Module
    num_classes: int
    head_dropout: float  # config.model.head_dropout
    head_hidden: int | None = None  # an MLP head's hidden width; None: Dropout -> Linear

    @nn.compact
    def __call__(self, clips: jax.Array, *, train: bool = False) -> dict:
        last = self.trunk(clips, train=train)[-1]
        feature = last.mean(axis=tuple(range(1, last.ndim - 1)))
        logits = ClassifierHead(
            self.num_classes, self.head_dropout, hidden=self.head_hidden, name="head"
        )(feature, train=train)
        return dict(logits=logits, feature=feature)
