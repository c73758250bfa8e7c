"""bench/vs_released.py: its pure helpers (modes, MFU, peak table, medians, table cells) and that
it, with the parts of ifdd_jax it uses, imports without TensorFlow (the GPU machine it is meant
for has none). The timing itself needs the authors' code and minutes: it is the bench's own run
(README, "Performance")."""

import importlib.util
import pathlib
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("vs_released", ROOT / "bench" / "vs_released.py")
bench = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = bench  # its dataclasses resolve their annotations through sys.modules
_spec.loader.exec_module(bench)


def test_parse_modes():
    assert bench.parse_modes("", on_gpu=True) == bench.MODES
    assert bench.parse_modes("", on_gpu=False) == ("released_fp32", "ours_fp32")
    # Validated and put in table order whatever the order given.
    assert bench.parse_modes("ours_bf16, released_fp32", on_gpu=False) == (
        "released_fp32",
        "ours_bf16",
    )
    with pytest.raises(SystemExit, match="unknown"):
        bench.parse_modes("ours_fp16", on_gpu=True)


def test_peak_and_mfu():
    assert bench.peak_tflops("NVIDIA H100 80GB HBM3", None) == 989.0
    assert bench.peak_tflops("NVIDIA H200", None) == 989.0
    assert bench.peak_tflops("AMD EPYC, 2 cores", None) is None
    assert bench.peak_tflops("AMD EPYC, 2 cores", 3.5) == 3.5
    # 100 GFLOP per step of 4 clips at 40 clips/s = 1 TFLOP/s, 10 % of a 10 TFLOP/s peak.
    assert bench.mfu(100e9, 40.0, 4, 10.0) == pytest.approx(0.1)
    assert bench.mfu(None, 40.0, 4, 10.0) is None
    assert bench.mfu(100e9, 40.0, 4, None) is None


def test_median_rate_and_cells():
    assert bench.median_rate([1.0, 4.0, 2.0], clips=4) == 2.0  # rates 4, 1, 2
    row = dict(
        mode="ours_fp32",
        train_clips_s=0.5,
        eval_clips_s=3.0,
        peak_mib=None,
        mfu=0.0123,
        step_gflop=295.0,
        compile_s=None,
    )
    base = dict(row, train_clips_s=0.25, eval_clips_s=2.0)
    cells = bench.table_cells(row, base)
    assert cells == ("ours_fp32", "0.500", "2.00", "3.000", "1.50", "n/a", "1.23", "295.0", "n/a")
    assert len(bench.format_row(cells)) == 15 + 12 * (len(cells) - 1)


def test_args():
    args = bench.parse_args(["--released", "x"])
    assert (args.batch, args.reps, args.steps) == (0, 5, 2)
    with pytest.raises(SystemExit):
        bench.parse_args(["--released", "x", "--steps", "0"])


def test_imports_without_tensorflow():
    """The bench and the ifdd_jax modules its train step is built from import with TensorFlow
    made unimportable (a fresh interpreter: this one may have TF loaded already)."""
    script = str(ROOT / "bench" / "vs_released.py")
    code = textwrap.dedent(
        f"""
        import importlib.util, sys
        class NoTF:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("tensorflow", "tensorflow_datasets"):
                    raise ImportError("no TensorFlow here: " + name)
        sys.meta_path.insert(0, NoTF())
        sys.path.insert(0, {str(ROOT)!r})
        spec = importlib.util.spec_from_file_location("vs", {script!r})
        module = importlib.util.module_from_spec(spec)
        sys.modules["vs"] = module
        spec.loader.exec_module(module)
        from ifdd_jax.config_lib import load_config_file
        from ifdd_jax.models import build_model
        from ifdd_jax.models.losses import ifdd_loss, smooth_labels
        from ifdd_jax.optim import make_optimizer
        from ifdd_jax import sharding, train_state, train_step
        build_model(load_config_file({str(ROOT / "configs" / "dfew.py")!r} + ":model=ifdd_3dvit"))
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")
