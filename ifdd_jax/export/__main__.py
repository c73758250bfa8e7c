"""Export a trained run to ONNX, a TensorFlow SavedModel (and TFLite) or serialized StableHLO.

    python -m ifdd_jax.export --workdir runs/default --format onnx --out exported/onnx
    python -m ifdd_jax.export --checkpoint runs/default/checkpoints_best --format savedmodel \
        --out exported/savedmodel --batch 1
    python -m ifdd_jax.export --workdir runs/default --format stablehlo --out exported/stablehlo

Each export runs the same fixed clips through the artifact and the JAX model and prints
`max abs diff: <x>`; above 1e-4 (float32) it fails with exit status 1. ifdd_jax/export/core.py
describes the exported function (input [B, T, H, W, 3] in the run's normalisation, outputs
probabilities and logits), the metadata written beside it and how each format is checked.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from data_pipeline.errors import DataError
from ifdd_jax import compile_cache
from ifdd_jax.export import core
from ifdd_jax.trained_run import load_trained


def _batch(text: str) -> int | None:
    if text == "dynamic":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--batch must be a number or 'dynamic', got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"--batch must be positive, got {value}")
    return value


def _size(path: str) -> str:
    if os.path.isdir(path):
        total = sum(
            os.path.getsize(os.path.join(root, name))
            for root, _, names in os.walk(path)
            for name in names
        )
    else:
        total = os.path.getsize(path)
    return f"{total / 1e6:.1f} MB"


def report(result: core.ExportResult) -> str:
    """The lines the command prints for one export."""
    lines = [f"{result.format}: wrote {path} ({_size(path)})" for path in result.files]
    per = ", ".join(f"{k} {v:.3g}" for k, v in result.per_output.items())
    lines.append(
        f"{result.format}: checked with {result.checked_with} on {result.num_clips} "
        f"fixed clips ({per})"
    )
    lines.append(f"max abs diff: {result.max_abs_diff:.3g}")
    if result.tflite is not None:
        if result.tflite["status"] == "ok":
            lines.append(f"tflite: max abs diff: {result.tflite['max_abs_diff']:.3g}")
        else:
            lines.append(f"tflite: not written: {result.tflite['reason']}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ifdd_jax.export",
        description="Export a trained run (ONNX, SavedModel + TFLite, StableHLO) and check it "
        "against the JAX model.",
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--workdir", help="a training run's folder (its best checkpoint is used)")
    where.add_argument("--checkpoint", help="a checkpoint folder or one step folder")
    parser.add_argument(
        "--config",
        default=None,
        help="the run's config when it has no config.json (configs/x.py:args or a .json file)",
    )
    parser.add_argument("--format", required=True, choices=core.FORMATS)
    parser.add_argument("--out", required=True, help="the folder the artifact is written to")
    parser.add_argument(
        "--batch", type=_batch, default=None, help="a fixed batch size, or 'dynamic' (default)"
    )
    parser.add_argument(
        "--platforms",
        default=",".join(core.DEFAULT_PLATFORMS),
        help="stablehlo/savedmodel: platforms to lower for (comma-separated)",
    )
    parser.add_argument(
        "--no_tflite", action="store_true", help="savedmodel: skip the TFLite conversion"
    )
    args = parser.parse_args(argv)
    try:
        trained = load_trained(args.workdir, args.checkpoint, args.config)
        result = core.export(
            trained,
            args.format,
            args.out,
            batch=args.batch,
            platforms=[p for p in args.platforms.split(",") if p],
            tflite=not args.no_tflite,
        )
    except (DataError, OSError, ValueError, ImportError, NotImplementedError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(report(result))
    if not result.ok:
        print(
            f"error: the {args.format} export differs from the JAX model by "
            f"{result.max_abs_diff:.3g} > {core.TOLERANCE:g} (float32 tolerance)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    compile_cache.enable()
    sys.exit(main())
