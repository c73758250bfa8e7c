"""The main job's log: progress and metrics, no TensorFlow/XLA banners or deprecation notices
unless --verbosity asks (ifdd_jax/quiet_logs.py)."""

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ifdd_jax import quiet_logs

ROOT = Path(__file__).resolve().parents[1]
BANNERS = re.compile(r"deprecat|onednn|cuda|absl::InitializeLog|libtpu", re.IGNORECASE)
# The tiny run of tests/tiny_runs.py, as command-line overrides of configs/default.py.
TINY = [
    "--config.data.num_frames=8",
    "--config.data.image_size=32",
    "--config.data.synthetic.num_clips=60",
    "--config.data.synthetic.size=32",
    "--config.data.synthetic.event_frames=2",
    "--config.batch_size=8",
    "--config.eval_batch_size=8",
    "--config.num_epochs=1",
    "--config.num_train_steps=4",
    "--config.eval_every_epochs=100",
    "--config.checkpoint_every_steps=2",
    "--config.log_every_steps=2",
    "--config.optim.warmup_epochs=0",
]


@pytest.mark.parametrize(
    ("argv", "verbosity"),
    [
        ([], 0),
        (["--verbosity=1"], 1),
        (["--verbosity", "2"], 2),
        (["-v", "1"], 1),
        (["-v=3"], 3),
        (["--verbosity=x"], 0),
        (["--workdir=v"], 0),
    ],
)
def test_requested_verbosity(argv: list[str], verbosity: int) -> None:
    assert quiet_logs.requested_verbosity(["prog", *argv]) == verbosity


def test_configure_keeps_a_user_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    assert quiet_logs.configure(["prog"])
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"
    assert not quiet_logs.configure(["prog", "--verbosity=1"])


def _main(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run(
        [sys.executable, "-m", "ifdd_jax.main", "--config=configs/default.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_stderr_fd_goes_to_a_file_and_comes_back(tmp_path: Path) -> None:
    """stderr_fd_to catches what native code writes to descriptor 2 (here os.write) and restores
    the descriptor afterwards, also when the block raises; native_banners_dropped built on it
    writes back everything but the banners."""
    before = os.fstat(2)
    path = tmp_path / "native.log"
    with pytest.raises(RuntimeError), open(path, "w") as f, quiet_logs.stderr_fd_to(f):
        os.write(2, b"converter: op failed at loc(...)\n")
        raise RuntimeError("conversion failed")
    assert path.read_text() == "converter: op failed at loc(...)\n"
    after = os.fstat(2)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)

    def dropped(payload: bytes) -> bytes:
        code = (
            "import os; from ifdd_jax import quiet_logs\n"
            "with quiet_logs.native_banners_dropped():\n"
            f"    os.write(2, {payload!r})\n"
        )
        run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True)
        assert run.returncode == 0, run.stderr
        return run.stderr

    banner = b"oneDNN custom operations are on. You may see slightly different numbers.\n"
    assert dropped(banner) == b""
    assert dropped(b"a real error\n") == b"a real error\n"


def test_library_deprecations_are_dropped() -> None:
    keep = quiet_logs.DropLibraryDeprecations()

    def record(path: str, level: int, message: str) -> logging.LogRecord:
        return logging.LogRecord("x", level, path, 1, message, None, None)

    site = "/venv/lib/python3.11/site-packages"
    assert not keep.filter(
        record(f"{site}/tensorflow/python/util/deprecation.py", 30, "x is deprecated")
    )
    assert not keep.filter(record(f"{site}/tensorflow_datasets/core/feature.py", 30, "Deprecated."))
    assert keep.filter(record(f"{site}/tensorflow/python/x.py", 40, "deprecated, and failed"))
    own_module = str(Path(__file__).resolve().parents[1] / "ifdd_jax" / "train.py")
    assert keep.filter(record(own_module, 30, "deprecated option"))
    assert keep.filter(record(f"{site}/tensorflow/python/x.py", 30, "out of memory"))


def test_main_job_log_has_no_banners(tmp_path: Path) -> None:
    """Everything the main job does before it compiles (imports, JAX start-up, the synthetic set,
    TFDS preparation, the tf.data pipeline), then a refused checkpoint: a training run would only
    add the compile (minutes on 2 CPU cores) and the progress lines."""
    cache = f"--config.compilation_cache_dir={tmp_path / 'xla'}"
    args = ["--mode=eval", f"--checkpoint={tmp_path / 'none'}", cache, *TINY]
    proc = _main(tmp_path, f"--workdir={tmp_path / 'run'}", *args)
    log = proc.stderr
    assert proc.returncode == 1 and "error:" in log, log[-3000:]
    assert "JAX process 0 of 1" in log
    banners = [line for line in log.splitlines() if BANNERS.search(line)]
    assert not banners, "library banners in the main job's log:\n" + "\n".join(banners)
    verbose = _main(tmp_path, f"--workdir={tmp_path / 'run'}", *args, "--verbosity=1")
    assert "Config:" in verbose.stderr  # --verbosity=1 shows the whole config again
