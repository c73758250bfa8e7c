"""Installs a clone of this repository into a Colab runtime (Python 3.12) beside the packages Colab
preinstalls, without a second TensorFlow: the notebooks' setup cell runs

    sys.path.insert(0, "/content/ifdd_jax")
    from ifdd_jax import colab_install
    colab_install.install("/content/ifdd_jax")

The project goes in with `--no-deps`; its declared ranges (pyproject.toml) are installed next,
except TensorFlow and TensorBoard when Colab already has a `tensorflow` (tensorflow-cpu would be a
second copy of the same module); then `jax[cuda12]` (GPU runtime) or `jax[tpu]` (TPU runtime) at
exactly the jax version that resolved, so the plugin matches it. Standard library only: it runs
before anything is installed.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Sequence

# Declared dependencies that Colab's own TensorFlow replaces (one TensorFlow in the runtime).
TENSORFLOW_DEPS = ("tensorflow-cpu", "tensorboard")


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].strip().lower().replace("_", "-")


def installed(name: str) -> str | None:
    """The installed version of distribution `name`, or None."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def requirements(
    repo: str, extras: Sequence[str] = ("test",), has_tensorflow: bool = False
) -> list[str]:
    """The project's declared dependencies (and `extras`') to install beside the runtime's
    packages: without TENSORFLOW_DEPS when the runtime has its own TensorFlow."""
    with open(os.path.join(repo, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    deps = list(project["dependencies"])
    for extra in extras:
        deps += project["optional-dependencies"][extra]
    if has_tensorflow:
        deps = [d for d in deps if _name(d) not in TENSORFLOW_DEPS]
    return deps


def accelerator_package(jax_version: str) -> str | None:
    """`jax[cuda12]` or `jax[tpu]` pinned to the installed jax, for the runtime's accelerator."""
    gpu = subprocess.run(["nvidia-smi"], capture_output=True).returncode == 0
    if gpu:
        return f"jax[cuda12]=={jax_version}"
    if "COLAB_TPU_ADDR" in os.environ or os.path.exists("/dev/accel0"):
        return f"jax[tpu]=={jax_version}"
    return None


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *args], check=True)


def install(repo: str, extras: Sequence[str] = ("test",)) -> None:
    """Installs the clone at `repo` as described in the module docstring."""
    has_tensorflow = installed("tensorflow") is not None
    _pip("--no-deps", "-e", repo)
    _pip(*requirements(repo, extras, has_tensorflow))
    jax_version = installed("jax")
    plugin = accelerator_package(jax_version) if jax_version else None
    if plugin:
        _pip(plugin)
    print(
        f"installed {repo}: jax {installed('jax')}, tensorflow "
        f"{installed('tensorflow') or installed('tensorflow-cpu')}"
        + (f", {plugin}" if plugin else "")
    )
