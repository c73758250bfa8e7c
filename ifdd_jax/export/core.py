"""A trained run exported for deployment, with a parity check of every artifact (`export`).

The exported function is the model in evaluation mode on clips [B, T, H, W, 3] (float32, H = W =
the run's image size, T its frame count) already preprocessed as evaluation does
(data_pipeline/inputs.py: frames sampled uniformly, resized, centre-cropped and normalised with the
run's `normalization`, "unit" = RGB in [0, 1] or "imagenet" = (x - mean) / std); it returns
`probabilities` [B, K] (softmax of the logits) and `logits` [B, K]. A run evaluated with several
views per clip (config.data.num_eval_views) averages the views' logits: feed the V views as
V rows and average their `logits` before the softmax, as ifdd_jax/views.py does. The class names
and the preprocessing go with every artifact: in `metadata.json` beside it and in the format's own
metadata where it has some (ONNX metadata_props, a SavedModel `metadata` signature).

Formats (FORMATS), and what checks each:
* "stablehlo": `jax.export` (serialized, versioned: the metadata records its calling-convention
  version and the jax version; lowered for `platforms`), checked by deserializing and calling it;
* "onnx": our jaxpr lowering (ifdd_jax/export/onnx_lowering.py says why not a converter package),
  checked with onnxruntime on the CPU;
* "savedmodel": jax2tf (the StableHLO module inside an `XlaCallModule` op; the parameters are
  `tf.Variable`s), checked by loading it back with TensorFlow alone; and a TFLite model converted
  from the same function at a fixed batch (`convert_tflite`), kept when it converts and matches,
  else the reason is printed and recorded.

Each check runs the same fixed clips (`parity_clips`) through the artifact and through the JAX
model (`TrainedModel.apply`) and reports the largest absolute difference over both outputs; above
TOLERANCE (float32) the export fails.

Exports trace the model with portable forms of a few ops (ifdd_jax/export/portable.py: MViT's
depthwise Conv3d as one grouped convolution, and for TFLite also ISSM's frame reads as one-hot
products, MViT's relative positions at rank <= 6 and the depthwise Conv3d as shifted slices); the
parity check compares each artifact with the model as it runs in JAX.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from data_pipeline import inputs
from ifdd_jax import quiet_logs
from ifdd_jax.export.portable import portable
from ifdd_jax.trained_run import TrainedModel

FORMATS = ("onnx", "savedmodel", "stablehlo")
TOLERANCE = 1e-4  # float32: the largest absolute difference an artifact may show
EXPORT_VERSION = 1  # of this module's layout (files and metadata keys)
INPUT_NAME = "clips"
OUTPUT_NAMES = ("probabilities", "logits")
BATCH_SYMBOL = "batch"
DEFAULT_PLATFORMS = ("cpu", "cuda", "tpu")
METADATA_FILE = "metadata.json"
FILES = {"onnx": "model.onnx", "stablehlo": "model.jax_exported", "tflite": "model.tflite"}
SAVEDMODEL_ENTRIES = ("saved_model.pb", "variables", "assets", "fingerprint.pb")

PREPROCESSING = (
    "T frames sampled uniformly over the clip (data_pipeline.sampling.eval_indices), the shorter "
    "side resized to the image size (bilinear) and centre-cropped to a square, RGB scaled to "
    "[0, 1] and normalised with `normalization`; data_pipeline/inputs.py (read_clip) does all of "
    "it for a video file or a frame folder"
)


@dataclasses.dataclass
class ExportResult:
    """What `export` wrote and how far the artifact is from the JAX model."""

    format: str
    out_dir: str
    files: list[str]
    max_abs_diff: float
    per_output: dict[str, float]
    checked_with: str
    num_clips: int
    tflite: dict | None = None  # savedmodel only: {"status", "reason", "max_abs_diff", "file"}

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= TOLERANCE


# --- the exported function ---------------------------------------------------------------------


def apply_function(model: nn.Module, tflite: bool = False) -> Callable[[dict, jax.Array], tuple]:
    """(variables, clips [B, T, S, S, 3] float32) -> (probabilities [B, K], logits [B, K]),
    traced with the portable forms of ifdd_jax/export/portable.py."""

    def forward(variables: dict, clips: jax.Array) -> tuple:
        with portable(tflite):
            logits = model.apply(variables, clips, train=False)["logits"]
        logits = logits.astype(jnp.float32)
        return jax.nn.softmax(logits, axis=-1), logits

    return forward


def inference_function(trained: TrainedModel) -> Callable[[jax.Array], tuple]:
    """clips [B, T, S, S, 3] -> (probabilities [B, K], logits [B, K]), the parameters fixed."""
    forward = apply_function(trained.model)
    variables = trained.variables
    return lambda clips: forward(variables, clips)


def input_spec(trained: TrainedModel, batch: int | None) -> jax.ShapeDtypeStruct:
    """The input's shape [B, T, S, S, 3]; batch None: a symbolic (dynamic) batch."""
    if batch is None:
        (size,) = jax.export.symbolic_shape(BATCH_SYMBOL)
    else:
        size = int(batch)
    shape = (size, trained.num_frames, trained.image_size, trained.image_size, 3)
    return jax.ShapeDtypeStruct(shape, jnp.float32)


def export_metadata(trained: TrainedModel, fmt: str, batch: int | None) -> dict:
    """What a user of the artifact needs: classes, input layout and preprocessing, provenance."""
    d = trained.config.data
    normalization = d.get("normalization", "unit")
    norm: dict = {"normalization": normalization}
    if normalization == "imagenet":
        # deferred: imports TensorFlow, which the stablehlo and onnx exports do not otherwise need
        from data_pipeline.augment import IMAGENET_MEAN, IMAGENET_STD

        norm.update(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD))
    shape = [
        batch if batch else BATCH_SYMBOL,
        trained.num_frames,
        trained.image_size,
        trained.image_size,
        3,
    ]
    return dict(
        format=fmt,
        export_version=EXPORT_VERSION,
        model=str(trained.config.model_name),
        flavor=str(trained.config.get("flavor", "paper")),
        class_names=list(trained.class_names),
        input=dict(
            name=INPUT_NAME, shape=shape, dtype="float32", layout="[B, T, H, W, C], RGB", **norm
        ),
        outputs={
            OUTPUT_NAMES[0]: "[B, K] softmax of the logits",
            OUTPUT_NAMES[1]: "[B, K] (average them over a clip's views)",
        },
        preprocessing=PREPROCESSING,
        num_eval_views=int(d.get("num_eval_views", 1)),
        checkpoint=trained.checkpoint,
        step=int(trained.step),
        jax_version=jax.__version__,
    )


# --- parity ------------------------------------------------------------------------------------


def parity_clips(trained: TrainedModel, num_clips: int, seed: int = 0) -> np.ndarray:
    """Fixed clips float32 [N, T, S, S, 3]: random frames through the evaluation preprocessing
    and the run's normalisation (the same clips for every format)."""
    rng = np.random.default_rng(seed)
    size = trained.image_size
    frames = rng.integers(0, 256, (num_clips, trained.num_frames, size, size, 3), np.uint8)
    return inputs.preprocess(frames, trained.config)


def jax_outputs(trained: TrainedModel, clips: np.ndarray) -> dict[str, np.ndarray]:
    """The JAX model's outputs on `clips` [N, T, S, S, 3], as inference runs it."""

    @jax.jit
    def run(variables: dict, x: jax.Array) -> dict:
        logits = trained.model.apply(variables, x, train=False)["logits"].astype(jnp.float32)
        return {OUTPUT_NAMES[0]: jax.nn.softmax(logits, axis=-1), OUTPUT_NAMES[1]: logits}

    return {k: np.asarray(v) for k, v in run(trained.variables, jnp.asarray(clips)).items()}


def compare(outputs: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict:
    """{output name: max |outputs - reference|}; shapes must agree."""
    diffs = {}
    for name in OUTPUT_NAMES:
        got, want = np.asarray(outputs[name]), reference[name]
        if got.shape != want.shape:
            raise ValueError(f"{name}: the artifact returns shape {got.shape}, JAX {want.shape}")
        diffs[name] = float(np.max(np.abs(got.astype(np.float64) - want)))
    return diffs


# --- stablehlo ---------------------------------------------------------------------------------


def write_stablehlo(
    trained: TrainedModel, out_dir: str, batch: int | None, platforms: Sequence[str]
) -> tuple[list[str], dict]:
    exported = jax.export.export(jax.jit(inference_function(trained)), platforms=tuple(platforms))(
        input_spec(trained, batch)
    )
    path = os.path.join(out_dir, FILES["stablehlo"])
    with open(path, "wb") as f:
        f.write(exported.serialize())
    info = dict(
        calling_convention_version=int(exported.calling_convention_version),
        platforms=list(exported.platforms),
        load="jax.export.deserialize(open(path, 'rb').read()).call(clips)",
    )
    return [path], info


def run_stablehlo(out_dir: str, clips: np.ndarray) -> dict[str, np.ndarray]:
    with open(os.path.join(out_dir, FILES["stablehlo"]), "rb") as f:
        exported = jax.export.deserialize(bytearray(f.read()))
    outputs = exported.call(jnp.asarray(clips))
    return {name: np.asarray(x) for name, x in zip(OUTPUT_NAMES, outputs)}


# --- onnx --------------------------------------------------------------------------------------


def write_onnx(
    trained: TrainedModel, out_dir: str, batch: int | None, metadata: dict
) -> tuple[list[str], dict]:
    # deferred: onnx is in the optional export extra
    import onnx

    # deferred: the lowering imports onnx
    from ifdd_jax.export.onnx_lowering import OPSET, to_onnx

    props = {"class_names": json.dumps(list(trained.class_names)), "ifdd_jax": json.dumps(metadata)}
    model = to_onnx(
        inference_function(trained),
        input_spec(trained, batch),
        input_name=INPUT_NAME,
        output_names=OUTPUT_NAMES,
        metadata=props,
        graph_name=str(trained.config.model_name),
    )
    onnx.checker.check_model(model)
    path = os.path.join(out_dir, FILES["onnx"])
    onnx.save(model, path)
    return [path], dict(opset=OPSET, metadata_props=sorted(props))


def run_onnx(out_dir: str, clips: np.ndarray) -> dict[str, np.ndarray]:
    # deferred: onnxruntime is in the optional export extra
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # no warnings about initializers the graph optimiser drops
    session = onnxruntime.InferenceSession(
        os.path.join(out_dir, FILES["onnx"]), options, providers=["CPUExecutionProvider"]
    )
    outputs = session.run(list(OUTPUT_NAMES), {INPUT_NAME: np.asarray(clips, np.float32)})
    return dict(zip(OUTPUT_NAMES, outputs))


# --- savedmodel and tflite ---------------------------------------------------------------------


def _tf_module(
    trained: TrainedModel,
    batch: int | None,
    metadata: dict,
    platforms: Sequence[str],
    tflite: bool = False,
) -> Any:
    """A tf.Module holding the parameters as variables (not graph constants, as jax2tf
    recommends), `serve` (clips -> {probabilities, logits}) and `describe` (the metadata)."""
    # deferred: TensorFlow is slow to import and only this format needs it
    import tensorflow as tf

    # deferred: jax2tf imports TensorFlow
    from jax.experimental import jax2tf

    converted = jax2tf.convert(
        apply_function(trained.model, tflite),
        with_gradient=False,
        polymorphic_shapes=[None, None if batch else f"({BATCH_SYMBOL}, ...)"],
        native_serialization_platforms=tuple(platforms),
    )
    module = tf.Module()
    module.params = tf.nest.map_structure(
        lambda x: tf.Variable(np.asarray(x), trainable=False), jax.device_get(trained.variables)
    )
    shape = [batch] + list(input_spec(trained, batch).shape[1:])

    @tf.function(
        autograph=False, input_signature=[tf.TensorSpec(shape, tf.float32, name=INPUT_NAME)]
    )
    def serve(clips: tf.Tensor) -> dict:
        probabilities, logits = converted(module.params, clips)
        return {OUTPUT_NAMES[0]: probabilities, OUTPUT_NAMES[1]: logits}

    @tf.function(autograph=False, input_signature=[])
    def describe() -> dict:
        return {
            "class_names": tf.constant(list(trained.class_names)),
            "metadata_json": tf.constant(json.dumps(metadata)),
        }

    module.serve, module.describe = serve, describe
    return module


def write_savedmodel(
    trained: TrainedModel, out_dir: str, batch: int | None, metadata: dict, platforms: Sequence[str]
) -> tuple[list[str], dict]:
    # deferred: TensorFlow is slow to import and only this format needs it
    import tensorflow as tf

    module = _tf_module(trained, batch, metadata, platforms)
    tf.saved_model.save(
        module,
        out_dir,
        signatures={
            "serving_default": module.serve.get_concrete_function(),
            "metadata": module.describe.get_concrete_function(),
        },
    )
    files = [os.path.join(out_dir, "saved_model.pb"), os.path.join(out_dir, "variables")]
    return files, dict(signatures=["serving_default", "metadata"], platforms=list(platforms))


def run_savedmodel(out_dir: str, clips: np.ndarray) -> dict[str, np.ndarray]:
    # deferred: TensorFlow is slow to import and only this format needs it
    import tensorflow as tf

    loaded = tf.saved_model.load(out_dir)
    outputs = loaded.signatures["serving_default"](**{INPUT_NAME: tf.constant(clips)})
    return {name: outputs[name].numpy() for name in OUTPUT_NAMES}


@contextlib.contextmanager
def _stderr_to(path: str) -> Iterator[None]:
    """Sends file descriptor 2 to `path`: the TFLite converter prints each failing op's full MLIR
    location there (pages of text); its exception keeps the message."""
    with open(path, "w") as f, quiet_logs.stderr_fd_to(f):
        yield


def convert_tflite(
    trained: TrainedModel,
    out_dir: str,
    batch: int | None,
    metadata: dict,
    clips: np.ndarray,
    reference: dict[str, np.ndarray],
) -> dict:
    """The SavedModel's function as TFLite, kept only when it converts and matches the JAX model
    within TOLERANCE. Returns {"status": "ok" | "failed", "reason", "max_abs_diff", "file",
    "batch"}.

    TFLite gets a fixed batch (the export's, or 1 for a dynamic one: under a symbolic batch jax
    writes even constant slices such as `kv[..., :c]` as dynamic gathers, which the converter
    rejects), a CPU lowering, and ISSM's frame reads as one-hot products (its converter cannot
    express a gather with batch dimensions; ifdd_jax/export/portable.py)."""
    # deferred: TensorFlow is slow to import and only this format needs it
    import tensorflow as tf

    path = os.path.join(out_dir, FILES["tflite"])
    log = os.path.join(out_dir, "tflite_converter.log")
    size = batch or 1
    try:
        module = _tf_module(trained, size, metadata, ("cpu",), tflite=True)
        converter = tf.lite.TFLiteConverter.from_concrete_functions(
            [module.serve.get_concrete_function()], module
        )
        with _stderr_to(log):
            data = converter.convert()
        with open(path, "wb") as f:
            f.write(data)
        with warnings.catch_warnings():  # tf.lite.Interpreter's deprecation notice
            warnings.simplefilter("ignore")
            runner = tf.lite.Interpreter(model_path=path).get_signature_runner()
        parts = [runner(**{INPUT_NAME: clips[i : i + size]}) for i in range(0, len(clips), size)]
        outputs = {k: np.concatenate([part[k] for part in parts]) for k in OUTPUT_NAMES}
        diffs = compare(outputs, reference)
    except Exception as e:  # the converter and the interpreter raise many types
        if os.path.exists(path):
            os.remove(path)
        reason = " ".join(str(e).strip().split())[:2000]
        return dict(
            status="failed",
            reason=f"{type(e).__name__}: {reason} (log: {log})",
            max_abs_diff=None,
            file=None,
            batch=size,
        )
    if os.path.exists(log):
        os.remove(log)
    worst = max(diffs.values())
    if worst > TOLERANCE:
        os.remove(path)
        return dict(
            status="failed",
            max_abs_diff=worst,
            file=None,
            batch=size,
            reason=f"converted, but differs from the JAX model by {worst:.3g}",
        )
    return dict(status="ok", reason="", max_abs_diff=worst, file=path, batch=size)


# --- the whole export --------------------------------------------------------------------------


def _checker(fmt: str) -> str:
    if fmt == "onnx":
        # deferred: onnxruntime is in the optional export extra
        import onnxruntime

        return f"onnxruntime {onnxruntime.__version__} (CPUExecutionProvider)"
    if fmt == "savedmodel":
        # deferred: TensorFlow is slow to import and only this format needs it
        import tensorflow as tf

        return f"tensorflow {tf.__version__} (tf.saved_model.load)"
    return f"jax {jax.__version__} (jax.export.deserialize)"


def _remove_savedmodel(out_dir: str) -> None:
    """Removes an earlier SavedModel export from `out_dir` (tf.saved_model.save would leave its
    stale files), and nothing else."""
    for name in SAVEDMODEL_ENTRIES + (FILES["tflite"], METADATA_FILE):
        path = os.path.join(out_dir, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)


def export(
    trained: TrainedModel,
    fmt: str,
    out_dir: str,
    *,
    batch: int | None = None,
    platforms: Sequence[str] = DEFAULT_PLATFORMS,
    tflite: bool = True,
    num_clips: int | None = None,
) -> ExportResult:
    """Writes `fmt` (FORMATS) of the run to `out_dir` with metadata.json, and checks it on
    `num_clips` fixed clips (default: the batch, or 2 for a dynamic batch)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if batch is not None and batch < 1:
        raise ValueError(f"batch must be positive, got {batch}")
    if fmt == "savedmodel":
        _remove_savedmodel(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    metadata = export_metadata(trained, fmt, batch)
    if fmt == "stablehlo":
        files, info = write_stablehlo(trained, out_dir, batch, platforms)
    elif fmt == "onnx":
        files, info = write_onnx(trained, out_dir, batch, metadata)
    else:
        files, info = write_savedmodel(trained, out_dir, batch, metadata, platforms)
    clips = parity_clips(trained, num_clips or batch or 2)
    reference = jax_outputs(trained, clips)
    runner = {"stablehlo": run_stablehlo, "onnx": run_onnx, "savedmodel": run_savedmodel}[fmt]
    diffs = compare(runner(out_dir, clips), reference)
    result = ExportResult(
        format=fmt,
        out_dir=out_dir,
        files=files,
        max_abs_diff=max(diffs.values()),
        per_output=diffs,
        checked_with=_checker(fmt),
        num_clips=len(clips),
    )
    if fmt == "savedmodel" and tflite:
        result.tflite = convert_tflite(trained, out_dir, batch, metadata, clips, reference)
        if result.tflite["file"]:
            result.files.append(result.tflite["file"])
    metadata[fmt] = info
    metadata["parity"] = dict(
        max_abs_diff=result.max_abs_diff,
        per_output=diffs,
        num_clips=result.num_clips,
        checked_with=result.checked_with,
        tolerance=TOLERANCE,
        tflite=result.tflite,
    )
    path = os.path.join(out_dir, METADATA_FILE)
    with open(path, "w") as f:
        json.dump(metadata, f, indent=2)
    result.files.append(path)
    return result
