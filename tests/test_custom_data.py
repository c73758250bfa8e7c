"""Your own videos (configs/custom.py, data_pipeline/custom.py): a CSV of generated videos with 3
named classes trained for a few steps, evaluated and predicted, class names carried into
results.json and the predictions; the folder-per-class layout; every kind of bad input named."""

import json
import os
import shutil

import pytest

from data_pipeline import custom, make_synthetic
from data_pipeline.configs import resolve_flavor_defaults
from data_pipeline.errors import DataError
from data_pipeline.synthetic import SyntheticOptions, generate_custom
from ifdd_jax.config_lib import load_config_file

CLASSES = ("Happy", "Sad", "Angry")
SORTED = ["Angry", "Happy", "Sad"]


@pytest.fixture(scope="module")
def clips_csv(tmp_path_factory: pytest.TempPathFactory) -> str:
    opts = SyntheticOptions(
        num_clips=45, num_frames=8, size=32, seed=0, event_frames=2, imbalance="none"
    )
    return generate_custom(str(tmp_path_factory.mktemp("custom")), opts, classes=CLASSES)


def _write(path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_csv_reader_classes_and_splits(clips_csv: str) -> None:
    index = custom.read_custom(clips_csv)
    assert index.class_names == tuple(SORTED)
    assert len(index.splits["train"]) == 36 and len(index.splits["test"]) == 9
    ordered = custom.read_custom(clips_csv, classes="Sad,Happy,Angry")
    assert ordered.class_names == ("Sad", "Happy", "Angry")
    record = ordered.splits["train"][0]
    assert ordered.class_names[record.label] in record.clip_id
    assert os.path.isfile(record.video_path) and record.origin.startswith(clips_csv + ":")


def test_folder_per_class_gets_a_stratified_seeded_split(clips_csv: str, tmp_path) -> None:
    root = tmp_path / "root"
    shutil.copytree(os.path.join(os.path.dirname(clips_csv), "videos"), root)
    first = custom.read_custom(str(root), test_fraction=0.2, split_seed=3)
    again = custom.read_custom(str(root), test_fraction=0.2, split_seed=3)
    assert first.class_names == tuple(SORTED)
    assert [r.clip_id for r in first.splits["test"]] == [r.clip_id for r in again.splits["test"]]
    per_class = [sum(r.label == k for r in first.splits["test"]) for k in range(3)]
    assert per_class == [3, 3, 3]  # 15 clips per class, a fifth of each in test


def test_csv_without_split_column(clips_csv: str, tmp_path) -> None:
    rows = open(clips_csv).read().splitlines()[1:]
    videos = os.path.join(os.path.dirname(clips_csv), "videos")
    shutil.copytree(videos, tmp_path / "videos")
    path = _write(tmp_path / "c.csv", "\n".join(r.rsplit(",", 1)[0] for r in rows) + "\n")
    index = custom.read_custom(path)
    assert len(index.splits["test"]) == 9 and len(index.splits["train"]) == 36


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("videos/Happy/00001.mp4", "malformed row"),
        ("videos/Happy/00001.mp4,Happy,train,1,2,3", "malformed row"),
        ("videos/Happy/00001.mp4,Joy,train", "unknown label 'Joy'"),
        ("videos/Happy/00001.mp4,Happy,holdout", "split must be train or test"),
    ],
)
def test_bad_rows_name_the_row(clips_csv: str, tmp_path, row: str, message: str) -> None:
    lines = open(clips_csv).read().splitlines()
    lines.insert(3, row)
    shutil.copytree(os.path.join(os.path.dirname(clips_csv), "videos"), tmp_path / "videos")
    path = _write(tmp_path / "bad.csv", "\n".join(lines) + "\n")
    with pytest.raises(DataError) as e:
        custom.read_custom(path, classes=CLASSES)
    assert f"{path}:4" in str(e.value) and message in str(e.value)


def test_missing_clip_is_a_counted_skip_or_a_named_error(clips_csv: str, tmp_path) -> None:
    lines = open(clips_csv).read().splitlines()
    lines.append("videos/Sad/missing.mp4,Sad,train")
    shutil.copytree(os.path.join(os.path.dirname(clips_csv), "videos"), tmp_path / "videos")
    path = _write(tmp_path / "m.csv", "\n".join(lines) + "\n")
    index = custom.read_custom(path)
    assert len(index.skipped) == 1 and "missing.mp4" in index.skipped.entries[0][1]
    assert f"{path}:{len(lines)}" in index.skipped.entries[0][2]
    with pytest.raises(DataError, match=r"missing\.mp4.*listed at .*m\.csv:47"):
        custom.read_custom(path, on_bad_clip="error")


def test_empty_class_and_empty_data_are_named(clips_csv: str, tmp_path) -> None:
    with pytest.raises(DataError, match="Fear have no usable clips"):
        custom.read_custom(clips_csv, classes="Angry,Happy,Sad,Fear")
    with pytest.raises(DataError, match="lists no clips"):
        custom.read_custom(_write(tmp_path / "e.csv", "path,label\n"))
    with pytest.raises(DataError, match="neither a CSV file nor a folder"):
        custom.read_custom(str(tmp_path / "nothing.csv"))


def _tiny_custom_config(data_dir: str, tmp_path, **overrides):
    config = load_config_file("configs/custom.py")
    config.data_dir = data_dir
    config.data.tfds_data_dir = str(tmp_path / "tfds")
    config.data.num_frames, config.data.image_size = 8, 32
    config.model.width_multiplier = 0.5
    config.batch_size = config.eval_batch_size = 8
    config.num_train_steps = 4
    config.eval_every_epochs = 100
    config.checkpoint_every_steps = 4
    config.log_every_steps = 2
    config.optim.warmup_epochs = 0
    config.compilation_cache_dir = ""
    for key, value in overrides.items():
        config[key] = value
    return config


def test_undecodable_video_is_named(clips_csv: str, tmp_path) -> None:
    from data_pipeline.pipeline import build_datasets  # deferred: TensorFlow

    shutil.copytree(os.path.join(os.path.dirname(clips_csv), "videos"), tmp_path / "videos")
    (tmp_path / "videos" / "Sad" / "broken.mp4").write_bytes(b"not a video at all")
    lines = open(clips_csv).read().splitlines() + ["videos/Sad/broken.mp4,Sad,train"]
    path = _write(tmp_path / "u.csv", "\n".join(lines) + "\n")
    config = _tiny_custom_config(path, tmp_path)
    config.data.data_dir = path
    config.data.on_bad_clip = "error"
    resolve_flavor_defaults(config.data, "paper")  # no jitter, no mixing, the TF crop sampler
    with pytest.raises(DataError, match="broken.mp4"):
        build_datasets(config.data, global_batch_size=8, eval_batch_size=8, seed=0)


def test_train_evaluate_predict_with_class_names(clips_csv: str, tmp_path) -> None:
    from ifdd_jax import evaluate, predict, train  # deferred: TensorFlow and the trainer

    workdir = str(tmp_path / "run")
    config = _tiny_custom_config(clips_csv, tmp_path)
    train.train_and_evaluate(config, workdir)
    results = json.load(open(os.path.join(workdir, "results.json")))
    assert results["class_names"] == SORTED
    saved = json.load(open(os.path.join(workdir, "config.json")))
    assert saved["num_classes"] == 3 and saved["data"]["classes"] == "Angry,Happy,Sad"
    rows = open(os.path.join(workdir, "results_predictions.csv")).read()
    assert "Happy" in rows and "Angry" in rows

    config = _tiny_custom_config(clips_csv, tmp_path)
    evaluated = evaluate.evaluate_checkpoint(config, str(tmp_path / "eval"), workdir)
    assert evaluated["class_names"] == SORTED

    video = os.path.join(os.path.dirname(clips_csv), "videos", "Happy")
    video = os.path.join(video, sorted(os.listdir(video))[0])
    out = str(tmp_path / "pred.json")
    assert predict.main(["--workdir", workdir, "--input", video, "--output", out]) == 0
    predicted = json.dumps(json.load(open(out)))
    assert any(name in predicted for name in SORTED)
    assert "class_0" not in predicted


def test_fine_tune_a_run_into_fewer_classes(clips_csv: str, tmp_path, caplog) -> None:
    """A 3-class run initialises a 2-class one (`init_from=RUN`): everything but the head loads,
    the head is re-initialised and the log says so. (The 7-class default run into a 3-class
    custom set takes the same path.)"""
    from ifdd_jax import train  # deferred: TensorFlow and the trainer

    source = str(tmp_path / "source")
    train.train_and_evaluate(_tiny_custom_config(clips_csv, tmp_path, num_train_steps=2), source)
    rows = [r for r in open(clips_csv).read().splitlines()[1:] if ",Angry," not in r]
    two = os.path.join(os.path.dirname(clips_csv), "two.csv")
    _write_lines(two, rows)
    config = _tiny_custom_config(two, tmp_path, num_train_steps=2, init_from=source)
    with caplog.at_level("INFO"):
        train.train_and_evaluate(config, str(tmp_path / "tuned"))
    assert "Classification head re-initialised" in caplog.text and "(2 classes)" in caplog.text
    assert "Initialised from" in caplog.text
    results = json.load(open(str(tmp_path / "tuned" / "results.json")))
    assert results["class_names"] == ["Happy", "Sad"]
    assert results["initialised_from"] == {
        "source": source,
        "source_num_classes": 3,
        "classification_head": "re-initialised",
    }


def _write_lines(path: str, rows: list[str]) -> None:
    with open(path, "w") as f:
        f.write("path,label,split\n" + "\n".join(rows) + "\n")


def test_make_synthetic_writes_the_custom_form(tmp_path) -> None:
    out = str(tmp_path / "mine")
    args = ["--out", out, "--layout", "custom", "--classes", "Fear,Happy", "--num_clips", "10"]
    make_synthetic.main([*args, "--frames", "8", "--size", "32", "--imbalance", "none"])
    index = custom.read_custom(os.path.join(out, "clips.csv"))
    assert index.class_names == ("Fear", "Happy")
    assert len(index.splits["train"]) + len(index.splits["test"]) == 10


def test_segments_of_a_video(clips_csv: str, tmp_path) -> None:
    """start_s,end_s take a segment: one video gives several clips; a bad segment is named."""
    from data_pipeline.clip_content import load_clip_jpegs

    shutil.copytree(os.path.join(os.path.dirname(clips_csv), "videos"), tmp_path / "videos")
    video = "videos/Happy/" + sorted(os.listdir(tmp_path / "videos" / "Happy"))[0]
    rows = [f"{video},Happy,train,0,0.5", f"{video},Happy,0.5,1.0", f"{video},Happy,test,5,6"]
    path = str(tmp_path / "s.csv")
    _write_lines(path, rows)
    index = custom.read_custom(path)
    first, second = index.splits["train"][:2]
    assert first.clip_id != second.clip_id and first.start_s == 0.0 and second.end_s == 1.0
    assert len(load_clip_jpegs(first)) == 4  # 8 frames at 8 fps: the first half second
    assert len(load_clip_jpegs(second)) == 4
    with pytest.raises(DataError, match=r"segment 5.0-6.0 s holds no frames.*s\.csv:4"):
        load_clip_jpegs(index.splits["test"][0])
    _write_lines(path, [f"{video},Happy,train,2,1"])
    with pytest.raises(DataError, match=r"s\.csv:2: start_s,end_s must satisfy"):
        custom.read_custom(path)
