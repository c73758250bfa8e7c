"""The main job's log shows progress, ETA and metrics: TensorFlow's C++ banners (oneDNN, CUDA,
"All log messages before absl::InitializeLog()"), its deprecation notices and JAX's backend probing
are hidden unless `--verbosity` (or `-v`) asks for 1 or more.

`configure(sys.argv)` must run before TensorFlow (or XLA) is imported: TF_CPP_MIN_LOG_LEVEL is read
once, when the C++ logging starts. TensorFlow 2.21 logs its import banners through absl's C++
logging before that setting applies, so `native_banners_dropped` also filters what the native code
writes to stderr while TensorFlow and JAX are imported (anything but a banner is written back).
Standard library only, so that importing it starts nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from typing import IO

# 2: C++ INFO and WARNING lines of TensorFlow and XLA are dropped; errors still show.
NATIVE_LOG_LEVEL = "2"
# Python loggers whose INFO/WARNING lines are about the libraries, not about the run.
NOISY_LOGGERS = {
    "tensorflow": logging.ERROR,  # "From ...: deprecated" notices
    "jax._src.xla_bridge": logging.WARNING,  # "Unable to initialize backend 'tpu'" and the like
}
# Modules whose Python warnings (deprecations of their own internals) a user cannot act on.
NOISY_WARNING_MODULES = r"(tensorflow|tensorflow_datasets|tensorboard|keras|tf_keras|absl)(\.|$)"
# Lines the native libraries print while they load: informational, never about the run.
NATIVE_BANNERS = re.compile(
    r"absl::InitializeLog|oneDNN custom operations|TF_ENABLE_ONEDNN_OPTS|Unable to register "
    r"cu(DNN|FFT|BLAS) factory|computation placer already registered|cuda_dnn|cuda_fft|cuda_blas|"
    r"This TensorFlow binary is optimized|rebuild TensorFlow with the appropriate compiler flags"
)
# Library source folders whose deprecation notices reach the absl handler as log records.
NOISY_PATHS = ("/tensorflow/", "/tensorflow_datasets/", "/tensorboard/", "/etils/", "/orbax/")


class DropLibraryDeprecations(logging.Filter):
    """Drops the deprecation notices that TensorFlow and TFDS log (at WARNING) about their own
    internals; the run's own warnings and every error stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR or not any(p in record.pathname for p in NOISY_PATHS):
            return True
        return "deprecat" not in record.getMessage().lower()


def requested_verbosity(argv: Sequence[str]) -> int:
    """The absl verbosity a command line asks for (`--verbosity=N`, `--verbosity N`, `-v N`,
    `-v=N`); 0 when it asks for none or for something unreadable (absl itself reports that)."""
    for i, arg in enumerate(argv):
        for name in ("--verbosity", "-v"):
            if arg == name and i + 1 < len(argv):
                value = argv[i + 1]
            elif arg.startswith(name + "="):
                value = arg[len(name) + 1 :]
            else:
                continue
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def configure(argv: Sequence[str]) -> bool:
    """Quiets the libraries unless argv asks for verbosity >= 1; returns whether it did."""
    if requested_verbosity(argv) >= 1:
        return False
    # setdefault: a TF_CPP_MIN_LOG_LEVEL the user exported wins.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", NATIVE_LOG_LEVEL)
    for name, level in NOISY_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category, module=NOISY_WARNING_MODULES)
    return True


@contextlib.contextmanager
def stderr_fd_to(target: IO) -> Iterator[None]:
    """While the block runs, file descriptor 2 (stderr of Python and of native code alike) writes
    to the open file `target`; restored afterwards, also on error."""
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(target.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def native_banners_dropped(enabled: bool = True) -> Iterator[None]:
    """While the block runs, native writes to stderr (file descriptor 2) go to a file; afterwards
    every line that is not a NATIVE_BANNERS line is written back to stderr."""
    if not enabled:
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as captured:
        try:
            with stderr_fd_to(captured):
                yield
        finally:
            captured.seek(0)
            text = captured.read().decode(errors="replace")
            kept = [line for line in text.splitlines() if not NATIVE_BANNERS.search(line)]
            if kept:
                print("\n".join(kept), file=sys.stderr)
