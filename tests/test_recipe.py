"""The flavors' training recipes: what each resolves to, that explicit overrides win, what a run
records, and the best-checkpoint criterion."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data_pipeline.configs import check_resolved, get_data_config
from ifdd_jax import checkpointing, recipe
from ifdd_jax.config_lib import load_config_file
from ifdd_jax.train import write_config


def test_paper_flavor_trains_with_flip_and_crop_only():
    """The paper: "random horizontal flip and random crop"; Eq. 9 with equal weight per clip."""
    config = load_config_file("configs/dfew.py")
    recipe.resolve(config)
    a, m = config.data.augment, config.data.mix
    assert (a.brightness, a.contrast, a.saturation, a.hue) == (0.0, 0.0, 0.0, 0.0)
    assert a.flip_prob == 0.5 and a.enabled
    assert m.enabled is False and m.label_smoothing == 0.0
    assert (config.loss.lift_weight, config.loss.lift_reduction) == (1.0, "mean")
    assert config.best_metric == "uar"


def test_reference_flavor_resolves_to_the_released_recipe():
    """The released DFEW recipe (configs/IFDD_DFEW.json + the Exp class): strong_aug colour jitter
    0.4 ×4, mixup on with label smoothing 0.1, LiftingLoss λ1 = 0.1 summed over the batch, and the
    `best_val_acc` checkpoint (micro recall = WAR)."""
    config = load_config_file("configs/dfew.py:flavor=reference")
    recipe.resolve(config)
    a, m = config.data.augment, config.data.mix
    assert (a.brightness, a.contrast, a.saturation, a.hue) == (0.4, 0.4, 0.4, 0.4)
    assert m.enabled is True and m.label_smoothing == 0.1
    assert (m.mixup_alpha, m.cutmix_alpha, m.switch_prob) == (0.8, 1.0, 0.5)
    assert (config.loss.lift_weight, config.loss.lift_reduction) == (0.1, "sum")
    assert config.best_metric == "war"


def test_explicit_overrides_win_and_resolve_is_idempotent():
    config = load_config_file("configs/dfew.py:flavor=reference")
    config.data.mix.enabled = False
    config.data.augment.hue = 0.1
    config.loss.lift_weight = 0.5
    config.best_metric = "uar"
    filled = recipe.resolve(config)
    assert "data.mix.enabled" not in filled and "loss.lift_weight" not in filled
    assert config.data.mix.enabled is False and config.data.augment.hue == 0.1
    assert config.loss.lift_weight == 0.5 and config.best_metric == "uar"
    assert config.data.augment.brightness == 0.4  # unset: the flavor's value
    assert recipe.resolve(config) == {}
    config.best_metric = "acc"
    with pytest.raises(ValueError, match="best_metric"):
        recipe.resolve(config)


def test_an_unresolved_data_config_is_refused_by_name():
    cfg = get_data_config("dfew")
    with pytest.raises(ValueError, match="data.augment.brightness"):
        check_resolved(cfg)
    check_resolved(get_data_config("dfew", flavor="paper"))


def test_config_json_and_recipe_record_the_resolved_values(tmp_path):
    config = load_config_file("configs/dfew.py:flavor=reference")
    path = write_config(config, str(tmp_path))
    saved = json.load(open(path))
    assert saved["data"]["augment"]["hue"] == 0.4 and saved["data"]["mix"]["enabled"] is True
    assert saved["loss"]["lift_reduction"] == "sum" and saved["best_metric"] == "war"
    described = recipe.describe(config)
    assert described["loss"]["formula"] == "mean_b CE_b + 0.1 * sum_b Huber_b"
    assert described["checkpoint"]["criterion"] == "validation WAR"
    assert described["schedule"]["base_lr"] == pytest.approx(1e-4 * 16 / 32)
    assert described["augmentation"]["label_smoothing"] == 0.1
    assert described["augmentation"]["crop_sampler"] == "torchvision"
    assert described["augmentation"]["temporal_sampling"] == "segments"
    paper = load_config_file("configs/dfew.py")
    recipe.resolve(paper)
    assert recipe.describe(paper)["loss"]["formula"] == "mean_b CE_b + 1 * mean_b Huber_b"
    assert recipe.describe(paper)["augmentation"]["crop_sampler"] == "tf"
    mafw = load_config_file("configs/mafw.py:flavor=reference")
    recipe.resolve(mafw)
    assert recipe.describe(mafw)["augmentation"]["temporal_sampling"] == "strided_window"


@pytest.mark.parametrize("metric, expected_step", [("war", 3), ("uar", 2)])
def test_best_checkpoint_follows_the_metric_and_ties_go_to_the_later_step(
    tmp_path, metric, expected_step
):
    """Validation (UAR, WAR) per step below: UAR peaks at step 2, WAR at step 3. The released
    trainer keeps the best with `>=`, so an equal later value replaces the best."""
    config = load_config_file("configs/default.py")
    state = {"w": jnp.zeros(3)}
    reports = {1: (40.0, 50.0), 2: (60.0, 55.0), 3: (50.0, 70.0), 4: (45.0, 65.0)}
    ckpt = checkpointing.Checkpointer(str(tmp_path / metric), keep=4, best_metric=metric)
    for step, (uar, war) in reports.items():
        state = {"w": jnp.full(3, float(step))}
        ckpt.save(
            step,
            state,
            {"epoch": step},
            config,
            val_metrics=checkpointing.val_metrics(dict(uar=uar, war=war)),
        )
    ckpt.wait()
    assert ckpt.best_step() == expected_step
    restored, step = ckpt.restore_best(
        state, jax.sharding.SingleDeviceSharding(jax.devices()[0]), config
    )
    assert step == expected_step
    np.testing.assert_array_equal(restored["w"], [float(expected_step)] * 3)
    ckpt.close()
    # A tie with the best: the later step becomes the best.
    ties = checkpointing.Checkpointer(str(tmp_path / f"{metric}_ties"), keep=4, best_metric=metric)
    for step in (1, 2, 3):
        value = 50.0 if step > 1 else 40.0
        ties.save(
            step,
            state,
            {"epoch": step},
            config,
            val_metrics=checkpointing.val_metrics(dict(uar=value, war=value)),
        )
    ties.wait()
    assert ties.best_step() == 3
    ties.close()
    with pytest.raises(ValueError, match="best_metric"):
        checkpointing.Checkpointer(str(tmp_path / "bad"), best_metric="acc")
    assert os.path.isdir(tmp_path / metric / checkpointing.BEST_DIR)
