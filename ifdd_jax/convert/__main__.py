"""Converts a PyTorch checkpoint for one of our models and writes it as an Orbax checkpoint.

    python -m ifdd_jax.convert --source mvit_v2_s.pth --model ifdd_3dvit --out /tmp/ifdd_3dvit_k400
    python -m ifdd_jax.convert --source ifdd_dfew.pth --model ifdd_3dvit --flavor reference \
        --out /tmp/ifdd_released

The model is built from `--config` (default configs/dfew.py) with `--model` / `--flavor`, and
initialised at the config's input size; the checkpoint's values replace the initialisation
wherever it has them. The report (also written to OUT/conversion_report.txt) names every key that
was resized, skipped, not loaded, missing, wrong-shaped or unexpected. Without --allow-partial
any missing, wrong-shaped or unexpected key is an error (exit status 1).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import jax
import orbax.checkpoint as ocp

from ifdd_jax.config_lib import load_config_file
from ifdd_jax.convert import load_into
from ifdd_jax.models import build_model


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ifdd_jax.convert", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--source", required=True, help=".pth/.pt, .safetensors, .npz or a converter output dir"
    )
    parser.add_argument("--model", required=True, help="registry model name, e.g. ifdd_3dvit")
    parser.add_argument("--out", required=True, help="output directory (Orbax checkpoint)")
    parser.add_argument("--config", default="configs/dfew.py", help="config file (file.py[:args])")
    parser.add_argument("--flavor", default=None, help="paper | reference (default: the config's)")
    parser.add_argument("--num-frames", type=int, help="override config.input.num_frames")
    parser.add_argument("--image-size", type=int, help="override config.input.image_size")
    parser.add_argument(
        "--allow-partial", action="store_true", help="report, do not fail, on misfits"
    )
    args = parser.parse_args(argv)
    spec = args.config
    extra = f"model={args.model}" + (f",flavor={args.flavor}" if args.flavor else "")
    spec = f"{spec},{extra}" if ":" in spec else f"{spec}:{extra}"
    config = load_config_file(spec)
    if args.num_frames:
        config.input.num_frames = args.num_frames
    if args.image_size:
        config.input.image_size = args.image_size
    model = build_model(config)
    size = config.input.image_size
    clips = jax.numpy.zeros((1, config.input.num_frames, size, size, 3), jax.numpy.float32)
    variables = jax.jit(lambda x: model.init({"params": jax.random.key(0)}, x))(clips)
    try:
        variables, report = load_into(
            variables, args.source, args.model, strict=not args.allow_partial
        )
    except ValueError as e:  # ConversionError, SourceError, an unrecognised checkpoint
        print(f"error: {e}", file=sys.stderr)
        return 1
    text = report.format()
    print(text)
    out = os.path.abspath(args.out)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(out, variables)
    checkpointer.wait_until_finished()
    with open(os.path.join(out, "conversion_report.txt"), "w") as f:
        f.write(text + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
