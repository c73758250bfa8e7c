"""Command line: write the synthetic diluted-dynamics dataset in DFEW's layout.

python -m data_pipeline.make_synthetic --out DIR --num_clips 300 --seed 0 --frames 16 --size 64
"""

from __future__ import annotations

import argparse
import time

from data_pipeline.synthetic import SyntheticOptions, generate


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
