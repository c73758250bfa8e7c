"""The training recipe of each flavor, in one place: what `flavor=paper` and `flavor=reference`
train with, and how a run's config gets it.

Each paper-flavor entry says where it comes from: [P] the paper states it, [R] the released code
does it, [O] our choice where the paper is silent. The reference flavor is the released code
except where marked [O].

* loss. paper: mean_k CE_k + mean_k Huber_k [P, Eq. 9]. reference: mean_b CE_b + 0.1·Σ_b Huber_b.
* optimizer. paper: AdamW [P] with PyTorch's default betas/eps [O = R]. reference: the same.
* lr. paper: 1e-4 [P], warmup from 1e-6 over 10 epochs [P], cosine [P] to 1e-6 [O = the released
  cosine function's default end], all stepped per step [O]. reference: per epoch, base
  lr/32·batch, the released warmup quirk.
* weight decay. paper: 1e-3 [P] on weights only [O]: no biases (ISSM's b_T included), norms,
  tables or tokens. reference: 1e-3 on every parameter.
* batch and epochs. paper: 16 [O = R], 100 [P]. reference: 16, 100.
* augmentation. paper: horizontal flip + random crop [P], crop ranges [R], TF's box sampler [O].
  reference: + colour jitter 0.4, mixup/cutmix, label smoothing 0.1, torchvision's box sampler.
* temporal sampling. paper: uniform segments [O]. reference: uniform segments, except MAFW: the
  released random 63-frame window read at stride 2, for training and evaluation alike.
* dropout and drop path. paper: head 0.5, MViT trunks 0.2 [O = R]. reference: the same, + LADM's
  drop path 0.2.
* validation split. paper: a 4:1 holdout of the training fold [P]. reference: the same [O]: the
  released code reads validation lists that DFEW does not ship.
* best checkpoint. paper: validation UAR [O] (the paper does not say). reference: validation WAR
  (micro recall).
* early stop. paper: none [O]. reference: validation accuracy > 0.95.

Details live where each piece is computed: the loss in `ifdd_jax/models/losses.py`, the schedule
and weight decay in `ifdd_jax/optim.py`, the augmentation in `data_pipeline/configs.py`
(`FLAVOR_DATA_DEFAULTS`), the checkpoint criterion in `ifdd_jax/checkpointing.py`. Each of these
config fields is a placeholder (None) until `resolve(config)` fills the ones a user left unset with
the flavor's value, so an explicit `--config.x=y` always wins; the main job resolves before it
writes `config.json`, and `describe(config)` is what `results.json` records under "recipe".

Both flavors select the checkpoint with "≥" (a later evaluation that ties the best replaces it),
which is the released rule.
"""

from __future__ import annotations

import ml_collections

from data_pipeline.configs import resolve_flavor_defaults
from ifdd_jax.models.layers import check_flavor
from ifdd_jax.models.losses import default_lift_reduction, default_lift_weight

BEST_METRICS = ("uar", "war")


def default_best_metric(flavor: str) -> str:
    """The validation metric that selects the best checkpoint: UAR (paper flavor, the balanced
    metric of imbalanced DFER sets) or WAR (the released trainer's `best_val_acc`)."""
    return "uar" if flavor == "paper" else "war"


def resolve(config: ml_collections.ConfigDict) -> dict:
    """Fills every flavor-dependent field of `config` that is still None, in place (idempotent).

    Returns {"field.path": value} of what it filled.
    """
    flavor = config.flavor
    check_flavor(flavor)
    filled = {}
    for section, key, value in (
        ("loss", "lift_weight", default_lift_weight(flavor)),
        ("loss", "lift_reduction", default_lift_reduction(flavor)),
    ):
        if config[section].get(key) is None:
            config[section][key] = value
            filled[f"{section}.{key}"] = value
    if config.get("best_metric") is None:
        config.best_metric = default_best_metric(flavor)
        filled["best_metric"] = config.best_metric
    if config.best_metric not in BEST_METRICS:
        raise ValueError(f"best_metric must be one of {BEST_METRICS}, got {config.best_metric!r}")
    if config.get("early_stop_accuracy") is None:  # the released rule; 1.0 never stops (train.py)
        config.early_stop_accuracy = 0.95 if flavor == "reference" else 1.0
        filled["early_stop_accuracy"] = config.early_stop_accuracy
    for key, value in resolve_flavor_defaults(config.data, flavor).items():
        filled[f"data.{key}"] = value
    return filled


def describe(config: ml_collections.ConfigDict) -> dict:
    """The resolved recipe of a run, for results.json: loss weighting, schedule, augmentation and
    the checkpoint criterion."""
    o, d = config.optim, config.data
    if config.flavor == "reference":
        schedule = dict(
            kind="released per-epoch: linear warmup to the released target, cosine after",
            base_lr=o.lr * config.batch_size / o.reference_lr_batch,
            warmup_epochs=o.warmup_epochs,
            warmup_init_lr=o.warmup_init_lr,
            end_lr_ratio=0.01,
            weight_decay=o.weight_decay,
            decay_mask="all parameters",
        )
    else:
        schedule = dict(
            kind="per-step linear warmup, cosine decay",
            peak_lr=o.lr,
            warmup_epochs=o.warmup_epochs,
            warmup_init_lr=o.warmup_init_lr,
            end_lr_ratio=o.end_lr_ratio,
            weight_decay=o.weight_decay,
            decay_mask="weights only (no biases, norms, positional tables, tokens)",
        )
    schedule.update(
        optimizer="AdamW",
        b1=o.b1,
        b2=o.b2,
        eps=o.eps,
        grad_clip=o.grad_clip,
        batch_size=config.batch_size,
    )
    a, m = d.augment, d.mix
    stop = config.get("early_stop_accuracy")  # accuracy never exceeds 1: >= 1 never stops
    return dict(
        flavor=config.flavor,
        loss=dict(
            lift=config.loss.lift,
            lift_weight=config.loss.lift_weight,
            lift_reduction=config.loss.lift_reduction,
            formula=(
                f"mean_b CE_b + {config.loss.lift_weight:g} * "
                + ("sum_b" if config.loss.lift_reduction == "sum" else "mean_b")
                + " Huber_b"
                if config.loss.lift != "off"
                else "mean_b CE_b"
            ),
        ),
        schedule=schedule,
        augmentation=dict(
            enabled=a.enabled,
            flip_prob=a.flip_prob,
            crop_sampler=a.get("crop_sampler"),
            temporal_sampling=d.get("temporal_sampling"),
            crop_scale=[a.crop_scale_min, a.crop_scale_max],
            crop_ratio=[a.crop_ratio_min, a.crop_ratio_max],
            color_jitter=dict(
                brightness=a.brightness, contrast=a.contrast, saturation=a.saturation, hue=a.hue
            ),
            mix=dict(
                enabled=m.enabled,
                mixup_alpha=m.mixup_alpha,
                cutmix_alpha=m.cutmix_alpha,
                prob=m.prob,
                switch_prob=m.switch_prob,
            ),
            label_smoothing=m.label_smoothing,
        ),
        checkpoint=dict(
            criterion=f"validation {config.best_metric.upper()}", ties="later wins (>=)"
        ),
        early_stop="never" if stop is None or stop >= 1 else f"validation accuracy > {stop:g}",
    )
