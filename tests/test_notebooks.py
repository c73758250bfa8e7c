"""The Colab notebooks execute top to bottom on CPU in tiny mode (IFDD_NOTEBOOK_TINY=1), in a
scratch working directory, with nothing downloaded or installed (the install cell is Colab-only)."""

import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = ("quickstart", "train_dfew", "inference")


def _execute(name: str, cwd: str) -> None:
    import nbformat
    from nbclient import NotebookClient

    path = os.path.join(ROOT, "colab", f"{name}.ipynb")
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook, kernel_name="python3", timeout=240, resources={"metadata": {"path": cwd}}
    )
    client.execute()  # raises CellExecutionError naming the failing cell
    nbformat.write(notebook, os.path.join(cwd, f"{name}.executed.ipynb"))


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_structure(name):
    notebook = json.load(open(os.path.join(ROOT, "colab", f"{name}.ipynb")))
    first_code = next(c for c in notebook["cells"] if c["cell_type"] == "code")
    assert "parameters" in first_code["metadata"].get("tags", [])  # papermill can override it
    source = "".join("".join(c["source"]) for c in notebook["cells"])
    assert "IN_COLAB and not os.path.isdir" in source  # installs only inside Colab
    assert "notebook.accelerator()" in source
    assert all(c.get("outputs", []) == [] for c in notebook["cells"] if c["cell_type"] == "code")


def test_notebooks_execute_in_tiny_mode(tmp_path, monkeypatch):
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    monkeypatch.setenv("IFDD_NOTEBOOK_TINY", "1")
    monkeypatch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    # The kernels compile the tiny model of tests/test_predict.py's run: they share this session's
    # persistent compilation cache (JAX_COMPILATION_CACHE_DIR, exported by conftest) and its 8 CPU
    # devices, so identical programs compile once whichever process meets them first.
    import jax

    assert os.environ["JAX_COMPILATION_CACHE_DIR"] == jax.config.jax_compilation_cache_dir
    monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
    monkeypatch.setenv("JAX_NUM_CPU_DEVICES", str(len(jax.devices("cpu"))))
    # The inference notebook uses the quickstart's run instead of training its own.
    monkeypatch.setenv("IFDD_NOTEBOOK_RUN", str(tmp_path / "runs" / "colab_quickstart"))
    for name in NOTEBOOKS:
        _execute(name, str(tmp_path))
    figures = tmp_path / "runs" / "colab_quickstart" / "figures"
    for png in ("curves.png", "issm_indices.png", "tsne.png", "efficiency.png"):
        assert (figures / png).stat().st_size > 0
    predictions = json.load(open(tmp_path / "runs" / "colab_quickstart" / "predictions.json"))
    assert predictions["results"] and not predictions["errors"]
    assert (tmp_path / "runs" / "colab_dfew" / "dfew_ifdd_2dcnn_f1" / "results.json").is_file()
    assert (tmp_path / "runs" / "colab_timeline.png").stat().st_size > 0
    assert not (tmp_path / "runs" / "colab_inference").exists()  # reused the quickstart's run
