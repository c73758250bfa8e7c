"""Decoded + augmented clips per second of the train pipeline, from frames and from videos.

    python bench/pipeline_throughput.py [--clips 64] [--frames 16] [--size 112] [--steps 20]
        [--device_augment] [--sources tfds,files,video]

Builds a synthetic DFEW-layout tree (frames) plus mp4 copies of the same clips (videos) in a
temporary folder, then times `build_datasets(...).train` batches (temporal sampling, decoding,
clip-consistent augmentation, mixup/cutmix) for: frames from TFRecords (the default "tfds"
source), frames read from the folders ("files" source) and videos decoded with decord.

With --device_augment (config.data.augment_on_device) the host's share is timed alone: reading,
decoding and batching uint8 clips at the stored size; the augmentation then runs in the train
step on the accelerator. Rates are printed per second and per CPU core this process may use
(os.sched_getaffinity), with the load average, since other work on the cores lowers them.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from data_pipeline.configs import get_data_config  # noqa: E402
from data_pipeline.pipeline import build_datasets  # noqa: E402
from data_pipeline.synthetic import SyntheticOptions, generate  # noqa: E402


def _write_videos(root: str) -> None:
    """mp4 copy of every frame folder, at Clip/original/<id>.mp4 (DFEW's video version)."""
    import av

    frames_root = os.path.join(root, "Clip", "clip_224x224_16f")
    out_root = os.path.join(root, "Clip", "original")
    os.makedirs(out_root, exist_ok=True)
    for name in sorted(os.listdir(frames_root)):
        files = sorted(os.listdir(os.path.join(frames_root, name)), key=lambda n: int(n[:-4]))
        frames = [np.asarray(Image.open(os.path.join(frames_root, name, f))) for f in files]
        with av.open(os.path.join(out_root, name + ".mp4"), mode="w") as container:
            stream = container.add_stream("mpeg4", rate=25)
            stream.height, stream.width = frames[0].shape[:2]
            stream.pix_fmt = "yuv420p"
            for f in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
            container.mux(stream.encode())


def _time(cfg, batch: int, steps: int) -> float:
    d = build_datasets(cfg, global_batch_size=batch, eval_batch_size=batch, seed=0)
    next(d.train)  # warm-up: graph tracing, file opening
    start = time.perf_counter()
    for _ in range(steps):
        next(d.train)
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--frames", type=int, default=16, help="frames stored per clip and T")
    parser.add_argument("--size", type=int, default=112, help="stored frame size and output size")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument(
        "--device_augment",
        action="store_true",
        help="time the host's part of config.data.augment_on_device (decode + batch only)",
    )
    parser.add_argument(
        "--sources", default="tfds,files,video", help="comma-separated subset of tfds,files,video"
    )
    args = parser.parse_args()
    wanted = set(args.sources.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "tree")
        generate(
            root,
            SyntheticOptions(num_clips=args.clips, num_frames=args.frames, size=args.size, seed=0),
        )
        if "video" in wanted:
            _write_videos(root)
        results = {}
        for key, label, source, version in (
            ("tfds", "frames (TFRecords)", "tfds", "16f"),
            ("files", "frames (JPEG folders)", "files", "16f"),
            ("video", "videos (decord)", "files", "video"),
        ):
            if key not in wanted:
                continue
            cfg = get_data_config("dfew", flavor="reference")
            cfg.data_dir, cfg.tfds_data_dir = root, os.path.join(tmp, "tfds")
            cfg.source, cfg.frame_version, cfg.val_protocol = source, version, "test"
            cfg.num_frames, cfg.image_size = args.frames, args.size
            cfg.augment_on_device = args.device_augment
            results[label] = _time(cfg, args.batch, args.steps)
        _report(args, results)


def _report(args: argparse.Namespace, results: dict[str, float]) -> None:
    cores = len(os.sched_getaffinity(0))
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    what = (
        "host part only: read + decode + batch, uint8 at the stored size"
        if args.device_augment
        else "decoded + augmented + mixed"
    )
    print(
        f"train pipeline, {args.frames} frames at {args.size}px, batch {args.batch}, "
        f"{cores} CPU cores usable (os.sched_getaffinity; {os.cpu_count()} on the machine), "
        f"load average {load} (1, 5, 15 min):"
    )
    for label, rate in results.items():
        print(f"  {label:24s} {rate:8.1f} clips/s  {rate / cores:7.1f} clips/s per core ({what})")


if __name__ == "__main__":
    main()
