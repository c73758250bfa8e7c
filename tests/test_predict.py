"""The inference CLI (`python -m ifdd_jax.predict`) on a checkpoint trained for a few steps: a
synthetic clip, a frame folder, a video written here, a folder of them, the timeline, CSV output,
face cropping and the errors a user meets.

The checkpoint is the session's shared tiny run (the `run_dir` fixture, tests/conftest.py)."""

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from data_pipeline import face_crop, inputs
from ifdd_jax import predict, trained_run

TINY_CLASSES = 7


def _clip_folder(run: str) -> str:
    """A frame folder of the synthetic set the run trained on."""
    import glob

    pattern = os.path.join(
        os.path.dirname(run), "tiny_synthetic", "synthetic_*", "Clip", "clip_224x224_16f", "*"
    )
    return sorted(glob.glob(pattern))[0]


def _write_video(path: str, frames: np.ndarray, fps: int = 10) -> str:
    import av

    with av.open(path, "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _frames_of(folder: str) -> np.ndarray:
    from data_pipeline.frames import list_frames

    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in list_frames(folder)])


def _cli(*args, timeout=300):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, "-m", "ifdd_jax.predict", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def _check_record(record: dict) -> None:
    probs = record["probabilities"]
    assert len(probs) == TINY_CLASSES
    np.testing.assert_allclose(sum(probs.values()), 1.0, atol=1e-4)
    assert record["prediction"] == max(probs, key=probs.get)


def test_cli_predicts_a_clip_a_frame_folder_and_a_video(run_dir, tmp_path):
    clip = _clip_folder(run_dir)
    frames = _frames_of(clip)  # [8, 32, 32, 3]
    # A 40-frame video at a larger, non-square size: resized and centre-cropped like evaluation.
    long = np.concatenate([frames] * 5)
    long = np.pad(long, ((0, 0), (8, 8), (16, 16), (0, 0)), mode="edge")
    video = _write_video(str(tmp_path / "talk.mp4"), long)
    folder = tmp_path / "many"
    shutil.copytree(clip, folder / "clip_a")
    shutil.copy(video, folder / "b.mp4")
    out = str(tmp_path / "pred.json")
    result = _cli(
        "--workdir",
        run_dir,
        "--input",
        clip,
        video,
        str(folder),
        "--output",
        out,
        "--window_frames",
        "16",
        "--batch_size",
        "4",
    )
    assert result.returncode == 0, result.stderr
    report = json.load(open(out))
    assert report["errors"] == [] and report["model"] == "ifdd_2dcnn"
    assert report["num_frames"] == 8 and report["image_size"] == 32
    inputs = [r["input"] for r in report["results"]]
    assert inputs == [clip, video, str(folder / "b.mp4"), str(folder / "clip_a")]
    for record in report["results"]:
        _check_record(record)
    by_input = {r["input"]: r for r in report["results"]}
    assert by_input[clip]["kind"] == "frames" and by_input[video]["kind"] == "video"
    assert by_input[video]["num_frames"] == 40 and by_input[video]["fps"] == pytest.approx(10)
    # The same frames give the same prediction from a folder and from a copy of it.
    np.testing.assert_allclose(
        list(by_input[clip]["probabilities"].values()),
        list(by_input[str(folder / "clip_a")]["probabilities"].values()),
    )
    timeline = by_input[video]["timeline"]
    assert [(w["start_frame"], w["end_frame"]) for w in timeline] == [(0, 16), (16, 32), (32, 40)]
    assert timeline[1]["start_s"] == pytest.approx(1.6)
    for window in timeline:
        _check_record(window)
    assert "timeline" not in by_input[clip]  # 8 frames: shorter than a window
    assert f"{clip}: " in result.stdout and "1.60-" in result.stdout


def test_predictions_match_the_evaluation_pipeline(run_dir):
    """A synthetic clip read by predict equals the evaluation input (same sampling, transform and
    normalisation), and its probabilities are those of evaluation's compiled step."""
    import jax
    import jax.numpy as jnp

    from ifdd_jax import evaluate, sharding

    trained = trained_run.load_trained(run_dir)
    source = inputs.discover_sources(_clip_folder(run_dir))[0]
    clip = inputs.read_clip(source, trained.config)
    assert clip.clips.shape == (1, 8, 32, 32, 3) and clip.clips.dtype == np.float32
    np.testing.assert_array_equal(clip.indices, [np.arange(8)])
    expected = np.asarray(_frames_of(source.path), np.float32) / 255.0
    np.testing.assert_allclose(clip.clips[0], expected, atol=1e-5)  # 32 px: no resize
    report = predict.predict_sources(trained, [source], batch_size=8)

    mesh = sharding.make_mesh()
    clips = np.zeros((8,) + clip.clips.shape, np.float32)  # the eval batch of the run: 8 clips
    clips[0] = clip.clips
    batch = sharding.global_batch(
        mesh,
        dict(clips=clips, label=np.zeros(8, np.int32), mask=np.arange(8) == 0),
        evaluate.EVAL_KEYS,
    )
    step = evaluate._compiled_eval_step(trained.model, mesh, jnp.float32)
    _, logits = step(jax.device_put(trained.variables, sharding.replicated(mesh)), batch)
    np.testing.assert_allclose(
        list(report["results"][0]["probabilities"].values()),
        np.asarray(jax.nn.softmax(logits[0])),
        atol=1e-5,
    )


def test_padded_batch_reuses_a_compiled_size_or_pads_to_a_power_of_two():
    assert predict.padded_batch(1, 8, set()) == 1  # one clip: one clip's forward pass
    assert predict.padded_batch(3, 8, set()) == 4
    assert predict.padded_batch(8, 8, set()) == 8
    assert predict.padded_batch(5, 6, set()) == 6  # never above batch_size
    assert predict.padded_batch(3, 8, {8}) == 8  # the remainder reuses the full batch's program
    assert predict.padded_batch(1, 8, {2, 8}) == 2


def test_predicting_one_clip_runs_a_batch_of_one(run_dir, trained, monkeypatch):
    """The batches predict_sources hands to the model: one clip alone runs at batch 1, and a
    remainder after full batches is padded to the size already compiled."""
    seen = []
    real = predict.make_predict_fn

    def spy(model):
        fn = real(model)
        return lambda clips: seen.append(clips.shape[0]) or fn(clips)

    monkeypatch.setattr(predict, "make_predict_fn", spy)
    source = inputs.discover_sources(_clip_folder(run_dir))[0]
    report = predict.predict_sources(trained, [source], batch_size=8)
    assert seen == [1] and len(report["results"]) == 1
    seen.clear()
    report = predict.predict_sources(trained, [source] * 5, batch_size=2)
    assert seen == [2, 2, 2] and len(report["results"]) == 5


def test_csv_output_face_crop_and_window_seconds(run_dir, tmp_path):
    trained = trained_run.load_trained(checkpoint=os.path.join(run_dir, "checkpoints"))
    frames = np.concatenate([_frames_of(_clip_folder(run_dir))] * 3)  # 24 frames
    video = _write_video(str(tmp_path / "v.avi"), frames, fps=8)
    report = predict.predict_sources(
        trained, inputs.discover_sources(video), batch_size=8, crop_faces=True, window_s=1.0
    )
    record = report["results"][0]
    # A synthetic cartoon face may or may not be detected; either way the result says what happened.
    assert (record["face_crop"] is None) == ("face_crop_note" in record)
    assert [(w["start_frame"], w["end_frame"]) for w in record["timeline"]] == [
        (0, 8),
        (8, 16),
        (16, 24),
    ]
    out = str(tmp_path / "p.csv")
    predict.write_output(report, out)
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 4 and rows[0]["window_start_frame"] == "" and rows[2]["start_s"] == "1.0"
    assert rows[0]["prediction"] == record["prediction"]
    np.testing.assert_allclose(
        sum(float(rows[1][f"p_{n}"]) for n in trained.class_names), 1, atol=1e-4
    )


def test_face_box_finds_a_face_like_pattern():
    """The bundled Haar cascade is found and a face box is a square inside the frame."""
    cv2 = pytest.importorskip("cv2")
    assert os.path.isfile(
        os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
    )
    blank = np.full((3, 64, 80, 3), 128, np.uint8)
    assert face_crop.face_box(blank) is None


def test_unreadable_inputs_are_named(run_dir, tmp_path, capsys):
    good = _clip_folder(run_dir)
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video")
    out = tmp_path / "p.json"
    assert (
        predict.main(["--workdir", run_dir, "--input", good, str(bad), "--output", str(out)]) == 1
    )
    err = capsys.readouterr().err
    assert f"error: {bad}: cannot open video" in err
    report = json.load(open(out))
    assert [r["input"] for r in report["results"]] == [good]
    assert report["errors"][0]["input"] == str(bad)

    frames = tmp_path / "frames"
    shutil.copytree(good, frames)
    (frames / "3.jpg").write_bytes(b"\xff\xd8\xff truncated")
    report = predict.predict_sources(
        trained_run.load_trained(run_dir), inputs.discover_sources(str(frames))
    )
    assert report["results"] == []
    assert report["errors"][0]["error"].startswith(f"{frames / '3.jpg'}: corrupt or unreadable")

    (tmp_path / "empty").mkdir()
    for args, message in [
        (
            ["--workdir", run_dir, "--input", str(tmp_path / "nope.mp4")],
            "nope.mp4: input does not exist",
        ),
        (["--workdir", str(tmp_path), "--input", good], f"{tmp_path}: no config.json"),
        (["--workdir", run_dir, "--input", good, "--output", "x.txt"], "must end in .json or .csv"),
        (["--workdir", run_dir, "--input", str(tmp_path / "empty")], "holds no video"),
    ]:
        assert predict.main(args) == 1
        assert message in capsys.readouterr().err
