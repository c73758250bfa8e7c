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

from data_pipeline.configs import get_data_config
from ifdd_jax import compile_cache

# Paper rows (Tables 1, 9, 10, 11) as overrides of a config: keys of "model" go to config.model,
# of "loss" to config.loss, so a table row is `model=ifdd_2dcnn` plus one entry (`ablation=`).
ABLATIONS: dict[str, dict] = {
    "issm_fixed_even_odd": dict(model=dict(issm="even_odd")),  # = "LADM only"
    "issm_entire": dict(model=dict(issm="entire")),  # ISSM†
    "issm_weighting": dict(model=dict(issm="weighting")),  # ISSM‡
    "issm_init_midpoint": dict(model=dict(issm_init="midpoint")),
    "issm_range_quarter": dict(model=dict(issm_range="T/4")),  # Table 9's ±T/4 (the released L)
    "ladm_predictor_first": dict(model=dict(ladm="predictor_first")),
    "ladm_cnn": dict(model=dict(ladm="cnn")),
    "ladm_no_mutual": dict(model=dict(ladm="no_mutual")),
    "ladm_none": dict(model=dict(ladm="none")),  # = "ISSM only"
    "lift_loss_thwc": dict(loss=dict(lift="thwc")),
    "lift_loss_off": dict(loss=dict(lift="off")),
}

# The config.model fields that base_config leaves None because their default depends on the
# network's trunk family (and, given per flavor, on the flavor): C_S of X (`features`) and D_c of
# ISSM's Eq. 1 (`channel_compression`, the paper's 1 for 2DCNN and 4 for 3DViT). The model
# constructors read these fields through `model_setting`.
# C_S, where the paper contradicts itself (docs/reference-ifdd.md §8): its appendix extracts
# "768-dimension feature vectors" from IFDD-3DViT (the released width too), so the paper flavor
# uses 768 there. For IFDD-2DCNN the appendix speaks of "the 128-dimension features" while its
# cost table (1.18 M parameters) is reproduced by 64 (128 gives 1.79 M); 128 is also ISSM's d_T,
# a likely source of the phrase. 64 it is; `--config.model.features=128` gives the other reading.
TRUNK_DEFAULTS: dict[str, dict] = {
    "mobilenet_v2": dict(features=64, channel_compression=1),
    "mvit": dict(features=768, channel_compression=4),
}

# Arguments every dataset config accepts after the colon, with their defaults.
MODEL_ARGS = dict(
    model="ifdd_2dcnn",
    flavor="paper",
    issm="",
    issm_init="",
    issm_range="",
    issm_offset_input="",
    stem_temporal_stride="",
    ladm="",
    ladm_mlp="",
    ladm_norm="",
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


def base_config(dataset: str) -> ml_collections.ConfigDict:
    """Every section of a run with the paper's recipe for IFDD-2DCNN on `dataset`.

    Fields left as typed placeholders (None) take the flavor's default when they are used. The
    input size is `config.data.num_frames` × `config.data.image_size`².
    """
    config = ml_collections.ConfigDict()
    config.model_name = "ifdd_2dcnn"
    config.flavor = "paper"  # "paper" follows the equations; "reference" the released code
    config.dataset = dataset
    config.num_classes = 7
    config.data = get_data_config(dataset)
    # The model's input and the fold are the data section's values, linked (setting either name
    # sets both), so the model and the pipeline can never disagree.
    config.fold = config.data.get_ref("fold")
    config.input = ml_collections.ConfigDict()
    config.input.num_frames = config.data.get_ref("num_frames")
    config.input.image_size = config.data.get_ref("image_size")
    # Root of the dataset's official layout (copied into config.data.data_dir when set).
    config.data_dir = config_dict.placeholder(str)
    # Converted pretrained weights to start from (a file ifdd_jax.convert reads, or its output).
    config.init_from = config_dict.placeholder(str)
    config.seed = 0
    # Persistent XLA compilation cache (ifdd_jax/compile_cache.py): "" turns it off;
    # JAX_COMPILATION_CACHE_DIR, when set, takes precedence.
    config.compilation_cache_dir = compile_cache.DEFAULT_DIR

    # Training recipe (both flavors' recipes side by side: ifdd_jax/recipe.py).
    config.batch_size = 16  # global, over all devices and hosts
    config.eval_batch_size = 16
    config.num_epochs = 100
    config.num_train_steps = -1  # > 0 overrides num_epochs
    config.compute_dtype = "float32"  # or "bfloat16" (parameters stay float32)
    config.optim = ml_collections.ConfigDict()
    config.optim.lr = 1e-4
    config.optim.warmup_epochs = 10.0
    config.optim.warmup_init_lr = 1e-6
    config.optim.end_lr_ratio = 0.01  # paper flavor: cosine ends at lr · ratio
    config.optim.reference_lr_batch = 32  # reference flavor: base lr = lr · batch / 32
    config.optim.weight_decay = 1e-3
    config.optim.b1 = 0.9
    config.optim.b2 = 0.999
    config.optim.eps = 1e-8
    config.optim.grad_clip = 0.0  # > 0: clip by global norm

    config.log_every_steps = 50
    config.eval_every_epochs = 1
    config.checkpoint_every_steps = 1000  # between evaluations
    config.keep_checkpoints = 3
    # Stop after a validation whose accuracy (WAR as a fraction) is > this; None -> the flavor's
    # (reference: 0.95, the released rule; paper: 1.0, which accuracy never exceeds: never).
    config.early_stop_accuracy = config_dict.placeholder(float)

    config.model = _model_section()

    config.loss = ml_collections.ConfigDict()
    config.loss.lift = "tc"  # tc | thwc | off
    # The flavor's recipe (ifdd_jax/recipe.py) fills these placeholders unless they are set:
    config.loss.lift_weight = config_dict.placeholder(float)  # None -> 1.0 paper, 0.1 reference
    config.loss.lift_reduction = config_dict.placeholder(str)  # over the batch: mean | sum
    config.best_metric = config_dict.placeholder(str)  # checkpoint criterion: uar (paper) | war
    return config


def _model_section() -> ml_collections.ConfigDict:
    """config.model: the network's fields, with the paper flavor's values or placeholders."""
    model = ml_collections.ConfigDict()
    model.issm = "issm"  # even_odd | issm | entire | weighting
    model.issm_init = "even_odd"  # even_odd | midpoint
    # Allowable index range L: None -> T/2 (paper) or 2 (reference); a number or "T/k".
    model.issm_range = config_dict.placeholder(str)
    # What Eq. 3's offset Linear reads: "vec_a" (the paper's vec(A)) or "standardized" (vec(A)
    # minus its mean over entries, over its std: the clip-dependent part at unit scale). Not a
    # flavor difference: an option the dilution study measured (docs/dilution-study.md).
    model.issm_offset_input = "vec_a"
    # IFDD-2DCNN's Conv3d stem: temporal stride 2 halves T before the trunk (released and paper);
    # 1 keeps every frame (X then has T frames, ISSM splits them into T/2 + T/2).
    model.stem_temporal_stride = 2
    model.ladm = "lifting"  # lifting | predictor_first | no_mutual | cnn | none
    model.ladm_heads = config_dict.placeholder(int)  # None -> 1 (paper) or 8 (reference)
    # The operator after each lifting attention (Eq. 7's "MLP"): mlp (Linear-GELU-Linear) |
    # linear | linear_gelu; None -> mlp (paper) or linear (reference). models/ladm.py says why.
    model.ladm_mlp = config_dict.placeholder(str)
    # LayerNorms on X_S and X_D before lifting: input | none; None -> input (both flavors).
    model.ladm_norm = config_dict.placeholder(str)
    model.drop_path = 0.2  # whole-sample stochastic depth in the reference LADM
    model.trunk_drop_path = 0.2  # MViT trunks' last-block stochastic depth (released)
    model.head_dropout = 0.5
    model.features = config_dict.placeholder(int)  # C_S of X; None -> TRUNK_DEFAULTS
    model.width_multiplier = 1.0  # MobileNetV2 trunks' α (the paper uses 1.0)
    model.similarity_dim = 128  # d_T of ISSM's Eq. 1 (paper flavor)
    model.channel_compression = config_dict.placeholder(int)  # D_c; None -> TRUNK_DEFAULTS
    return model


def model_setting(config: ml_collections.ConfigDict, key: str, trunk: str) -> Any:
    """config.model[key], or when it is None the default of the `trunk` family (TRUNK_DEFAULTS)."""
    value = config.model[key]
    if value is not None:
        return value
    return TRUNK_DEFAULTS[trunk][key]


def finalize_dataset(
    config: ml_collections.ConfigDict, *, num_frames: int, image_size: int, num_classes: int
) -> None:
    """Sets the dataset's input size and class count in the one place the model and data read."""
    config.num_classes = num_classes
    config.data.num_frames = num_frames
    config.data.image_size = image_size


def apply_model_args(config: ml_collections.ConfigDict, args: ml_collections.ConfigDict) -> None:
    """Applies the MODEL_ARGS values of `args` (empty strings mean "keep the default")."""
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
        issm_offset_input=("model", "issm_offset_input"),
        ladm=("model", "ladm"),
        ladm_mlp=("model", "ladm_mlp"),
        ladm_norm=("model", "ladm_norm"),
        lift_loss=("loss", "lift"),
    ).items():
        if args[arg_key]:
            config[section][key] = args[arg_key]
    if args.stem_temporal_stride:
        config.model.stem_temporal_stride = _convert(
            "stem_temporal_stride", args.stem_temporal_stride, 0
        )


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
