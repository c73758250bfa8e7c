"""Command line: write the synthetic diluted-dynamics dataset in DFEW's layout, or in the custom
form (videos and a CSV, what configs/custom.py reads).

python -m data_pipeline.make_synthetic --out DIR --num_clips 300 --seed 0 --frames 16 --size 64
python -m data_pipeline.make_synthetic --out DIR --layout custom --classes Happy,Sad,Angry
"""

from __future__ import annotations

import argparse
import time

from data_pipeline.labels import DFEW_CLASSES
from data_pipeline.synthetic import SyntheticOptions, generate, generate_custom


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, help="root of the DFEW-layout tree to write")
    parser.add_argument("--num_clips", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames", type=int, default=16, help="frames per clip (F)")
    parser.add_argument("--size", type=int, default=64, help="frame side in pixels (P)")
    parser.add_argument(
        "--event_frames",
        type=int,
        default=3,
        help="frames covered by the expression event (dilution: smaller = harder)",
    )
    parser.add_argument("--imbalance", choices=("dfew", "none"), default="dfew")
    parser.add_argument(
        "--label_noise",
        type=float,
        default=0.0,
        help="probability that a clip's label is replaced by another class",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--layout",
        choices=("dfew", "custom"),
        default="dfew",
        help="dfew: DFEW's tree; custom: DIR/videos/<class>/*.mp4 and DIR/clips.csv",
    )
    parser.add_argument(
        "--classes",
        default=",".join(DFEW_CLASSES),
        help="--layout custom: the classes written, comma-separated (DFEW's class names)",
    )
    args = parser.parse_args(argv)
    opts = SyntheticOptions(
        num_clips=args.num_clips,
        num_frames=args.frames,
        size=args.size,
        seed=args.seed,
        event_frames=args.event_frames,
        imbalance=args.imbalance,
        label_noise=args.label_noise,
    )
    start = time.perf_counter()
    if args.layout == "custom":
        classes = tuple(c.strip() for c in args.classes.split(",") if c.strip())
        csv_path = generate_custom(args.out, opts, classes=classes, workers=args.workers)
        print(
            f"wrote {opts.num_clips} videos of {', '.join(classes)} and {csv_path} in "
            f"{time.perf_counter() - start:.1f}s; train on them with --config=configs/custom.py "
            f"--config.data_dir={csv_path}"
        )
        return
    meta = generate(args.out, opts, workers=args.workers)
    counts = [0] * 7
    for clip in meta["clips"]:
        counts[clip["csv_label"]] += 1
    print(
        f"wrote {opts.num_clips} clips x {opts.num_frames} frames at {opts.size}px to {args.out} "
        f"in {time.perf_counter() - start:.1f}s; clips per class "
        + ", ".join(f"{n} {c}" for n, c in zip(counts, meta["class_names"]))
    )


if __name__ == "__main__":
    main()
