"""Test setup: 8 virtual CPU devices (set before JAX initialises its backend) so that sharding
tests can compare 1 and 8 devices."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The test programs are tiny, so XLA's compile time dominates: skip its backend optimisations.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
).strip()

# torchvision (the optional torch extra, used by the converter and parity tests) loads triton
# through torch._dynamo, which segfaults when TensorFlow was imported first in the same process.
# The product never imports torchvision; the tests load it before anything imports TensorFlow.
try:
    import torch  # noqa: E402, F401
    import torchvision  # noqa: E402, F401
except ImportError:
    pass

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)

import tempfile  # noqa: E402

# Identical programs (the same train step in several end-to-end tests) compile once per session,
# also across pytest-xdist's workers: they share one cache folder, named by the run's id.
_RUN_ID = os.environ.get("PYTEST_XDIST_TESTRUNUID")
if _RUN_ID:
    _CACHE = os.path.join(tempfile.gettempdir(), f"ifdd_jax_xla_cache_{_RUN_ID}")
    os.makedirs(_CACHE, exist_ok=True)
else:
    _CACHE = tempfile.mkdtemp(prefix="ifdd_jax_xla_cache_")
jax.config.update("jax_compilation_cache_dir", _CACHE)
# The command-line tools the tests start (ifdd_jax.main, ifdd_jax.predict) use it too, rather than
# the user's ~/.cache (ifdd_jax/compile_cache.py lets this variable win).
os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


import pytest  # noqa: E402

from tests.tiny_runs import tiny_run  # noqa: E402


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    """The session's shared 6-step tiny run (tests/tiny_runs.py), trained once."""
    return tiny_run(tmp_path_factory)


@pytest.fixture(scope="module")
def trained(run_dir):
    """The tiny run loaded for inference (ifdd_jax.trained_run.TrainedModel)."""
    from ifdd_jax import trained_run

    return trained_run.load_trained(run_dir)
