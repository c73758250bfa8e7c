"""The Colab setup (ifdd_jax/colab_install.py): the project beside Colab's preinstalled packages,
one TensorFlow, the accelerator plugin at the installed jax's version. Nothing is installed here."""

import json
import os
import subprocess

import pytest

from ifdd_jax import colab_install

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_colab_tensorflow_is_kept() -> None:
    names = [colab_install._name(d) for d in colab_install.requirements(ROOT, has_tensorflow=True)]
    assert "tensorflow-cpu" not in names and "tensorboard" not in names
    assert {"jax", "flax", "tensorflow-datasets", "pytest"} <= set(names)
    alone = [colab_install._name(d) for d in colab_install.requirements(ROOT, extras=())]
    assert "tensorflow-cpu" in alone and "pytest" not in alone


@pytest.mark.parametrize(
    ("gpu", "tpu", "expected"), [(True, False, "cuda12"), (False, True, "tpu")]
)
def test_plugin_matches_the_installed_jax(monkeypatch, gpu: bool, tpu: bool, expected: str) -> None:
    monkeypatch.setattr(
        subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0 if gpu else 1)
    )
    if tpu:
        monkeypatch.setenv("COLAB_TPU_ADDR", "10.0.0.2:8470")
    else:
        monkeypatch.delenv("COLAB_TPU_ADDR", raising=False)
    assert colab_install.accelerator_package("0.11.2") == f"jax[{expected}]==0.11.2"


@pytest.mark.parametrize("name", ["quickstart", "train_dfew", "inference"])
def test_notebooks_install_through_it(name: str) -> None:
    notebook = json.load(open(os.path.join(ROOT, "colab", f"{name}.ipynb")))
    source = "".join("".join(c["source"]) for c in notebook["cells"])
    assert 'colab_install.install("/content/ifdd_jax")' in source
    assert "jax[cuda12]==0.10.2" not in source  # the plugin follows the installed jax
