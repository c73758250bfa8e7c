"""Helpers for the `configs/*.py` files: argument parsing (`configs/dfew.py:model=x,flavor=y`)
and the model/loss sections shared by every dataset config.

The config files stay small: they call `base_config()`, set their dataset's fields and apply the
parsed arguments with `apply_model_args()`.
"""

from __future__ import annotations

import importlib.util
import pathlib
from typing import Any

import ml_collections
from ml_collections import config_dict

# Arguments every dataset config accepts after the colon, with their defaults.
MODEL_ARGS = dict(
    model="ifdd_2dcnn",
    flavor="paper",
    issm="",
    issm_init="",
    issm_range="",
    ladm="",
    lift_loss="",
    ablation="",
)


def _convert(key: str, text: str, default: Any) -> Any:
    if isinstance(default, bool):
        if text.lower() in ("", "1", "true", "yes"):
            return True
        if text.lower() in ("0", "false", "no"):
            return False
        raise ValueError(f"config argument {key!r} expects a boolean, got {text!r}")
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"config argument {key!r} expects an integer, got {text!r}") from None
    if isinstance(default, float):
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"config argument {key!r} expects a number, got {text!r}") from None
    return text


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
    """Parses "k1=v1,k2=v2,flag" into a ConfigDict typed like `defaults`.

    Unknown keys are an error that lists the accepted ones; a bare key sets a boolean to True.
    """
    result = ml_collections.ConfigDict(dict(defaults))
    if not arg:
        return result
    for item in arg.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        if key not in defaults:
            raise ValueError(
                f"unknown config argument {key!r}; accepted: {', '.join(sorted(defaults))}"
            )
        default = defaults[key]
        if not sep and not isinstance(default, bool):
            raise ValueError(f"config argument {key!r} needs a value ({key}=...)")
        result[key] = _convert(key, value.strip(), default)
    return result


def base_config() -> ml_collections.ConfigDict:
    """Model, loss and input sections with the defaults of the paper flavor of IFDD-2DCNN.

    Fields left as typed placeholders (None) take the flavor's default when the model is built.
    """
    config = ml_collections.ConfigDict()
    config.model_name = "ifdd_2dcnn"
    config.flavor = "paper"  # "paper" follows the equations; "reference" the released code
    config.num_classes = 7
    config.dataset = ""

    config.input = ml_collections.ConfigDict()
    config.input.num_frames = 16
    config.input.image_size = 224

    config.model = ml_collections.ConfigDict()
    config.model.issm = "issm"  # even_odd | issm | entire | weighting
    config.model.issm_init = "even_odd"  # even_odd | midpoint
    # Allowable index range L: None -> T/2 (paper) or 2 (reference); a number or "T/k".
    config.model.issm_range = config_dict.placeholder(str)
    config.model.ladm = "lifting"  # lifting | predictor_first | no_mutual | cnn | none
    config.model.ladm_heads = config_dict.placeholder(int)  # None -> 1 (paper) or 8 (reference)
    config.model.drop_path = 0.2  # whole-sample stochastic depth in the reference LADM
    config.model.head_dropout = 0.5
    config.model.features = config_dict.placeholder(int)  # C_S of X; None -> the model's default
    config.model.similarity_dim = 128  # d_T of ISSM's Eq. 1 (paper flavor)
    config.model.channel_compression = config_dict.placeholder(int)  # D_c; None -> model default

    config.loss = ml_collections.ConfigDict()
    config.loss.lift = "tc"  # tc | thwc | off
    config.loss.lift_weight = config_dict.placeholder(float)  # None -> 1.0 paper, 0.1 reference
    config.loss.label_smoothing = 0.1
    return config


def apply_model_args(config: ml_collections.ConfigDict, args: ml_collections.ConfigDict) -> None:
    """Applies the MODEL_ARGS values of `args` (empty strings mean "keep the default")."""
    from ifdd_jax.models.registry import ABLATIONS  # local: keeps config files light to import

    config.model_name = args.model
    config.flavor = args.flavor
    if args.ablation:
        if args.ablation not in ABLATIONS:
            raise ValueError(
                f"unknown ablation {args.ablation!r}; known: {', '.join(sorted(ABLATIONS))}"
            )
        for section, values in ABLATIONS[args.ablation].items():
            for key, value in values.items():
                config[section][key] = value
    for arg_key, (section, key) in dict(
        issm=("model", "issm"),
        issm_init=("model", "issm_init"),
        issm_range=("model", "issm_range"),
        ladm=("model", "ladm"),
        lift_loss=("loss", "lift"),
    ).items():
        if args[arg_key]:
            config[section][key] = args[arg_key]


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """Loads `path/to/config.py[:arg]` the way `--config=` does (for tests, notebooks and tools).
    A relative path is taken from the current directory, then from the repository root."""
    path_text, _, arg = spec.partition(":")
    path = pathlib.Path(path_text)
    if not path.is_file():
        repo_path = pathlib.Path(__file__).resolve().parents[1] / path_text
        if not repo_path.is_file():
            raise FileNotFoundError(f"config file {path_text!r} not found")
        path = repo_path
    module_spec = importlib.util.spec_from_file_location(f"ifdd_config_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg or None)
