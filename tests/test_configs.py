"""Config files, their colon arguments, and the model_summary command line."""

import subprocess
import sys

import pytest

from ifdd_jax import config_lib
from ifdd_jax.config_lib import ABLATIONS, load_config_file


def test_dfew_defaults_and_arguments():
    config = load_config_file("configs/dfew.py")
    assert (config.dataset, config.num_classes, config.model_name, config.flavor) == (
        "dfew",
        7,
        "ifdd_2dcnn",
        "paper",
    )
    assert (config.input.num_frames, config.input.image_size, config.fold) == (16, 224, 1)
    config = load_config_file(
        "configs/dfew.py:model=baseline_mobilenet_v2,flavor=reference,fold=3,issm=entire,"
        "ladm=cnn,lift_loss=thwc,issm_init=midpoint,issm_range=T/4"
    )
    assert config.model_name == "baseline_mobilenet_v2" and config.flavor == "reference"
    assert config.fold == 3
    assert (config.model.issm, config.model.ladm, config.loss.lift) == ("entire", "cnn", "thwc")
    assert (config.model.issm_init, config.model.issm_range) == ("midpoint", "T/4")


def test_mafw_and_ferv39k():
    mafw = load_config_file("configs/mafw.py:fold=5")
    assert (mafw.num_classes, mafw.input.num_frames, mafw.fold) == (11, 32, 5)
    ferv = load_config_file("configs/ferv39k.py:model=ifdd_2dcnn")
    assert (ferv.num_classes, ferv.dataset) == (7, "ferv39k")


@pytest.mark.parametrize("ablation", sorted(ABLATIONS))
def test_every_ablation_is_a_config_argument(ablation):
    config = load_config_file(f"configs/dfew.py:ablation={ablation}")
    for section, values in ABLATIONS[ablation].items():
        for key, value in values.items():
            assert config[section][key] == value


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown config argument 'modle'.*accepted"):
        load_config_file("configs/dfew.py:modle=ifdd_2dcnn")
    with pytest.raises(ValueError, match="'fold' expects an integer"):
        load_config_file("configs/dfew.py:fold=first")
    with pytest.raises(ValueError, match="unknown ablation 'issm_magic'"):
        load_config_file("configs/dfew.py:ablation=issm_magic")
    with pytest.raises(FileNotFoundError, match="configs/nope.py"):
        load_config_file("configs/nope.py")


def test_parse_arg_types():
    args = config_lib.parse_arg("a=2,b,c=0.5,d=x", a=1, b=False, c=1.0, d="")
    assert (args.a, args.b, args.c, args.d) == (2, True, 0.5, "x")


def test_command_line_overrides_reach_locked_fields():
    config = load_config_file("configs/dfew.py")
    config.lock()
    config.model.issm_range = "3"  # a typed placeholder accepts a value
    config.loss.lift_weight = 0.5
    with pytest.raises(AttributeError):
        config.model.not_a_field = 1


def test_model_summary_command_prints_params_and_gflops():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ifdd_jax.tools.model_summary",
            "--config=configs/dfew.py:model=ifdd_2dcnn",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    lines = result.stdout.splitlines()
    params = [line for line in lines if line.startswith("params: ")]
    gflops = [line for line in lines if line.startswith("GFLOPs: ")]
    assert len(params) == 1 and params[0].endswith(" M")
    assert abs(float(params[0].split()[1]) - 1.18) / 1.18 < 0.05
    assert abs(float(gflops[0].split()[1]) - 3.86) / 3.86 < 0.10
    assert any(line.startswith("issm") for line in lines)
    assert any("paper (IFDD-2DCNN)" in line for line in lines)
