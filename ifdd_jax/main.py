"""Entry point: `python -m ifdd_jax.main --config=configs/dfew.py --workdir=DIR [--mode=eval]`.

Run the same command on every host of a multi-host job: `jax.distributed` is initialised from the
cluster environment (SLURM, TPU pods, ...) or from --coordinator_address/--num_processes/
--process_id.
"""

from __future__ import annotations

import logging as logging_std
import sys

from ifdd_jax import quiet_logs

# Before TensorFlow and XLA start logging: their C++ banners are read off the environment once.
_QUIET = quiet_logs.configure(sys.argv)

with quiet_logs.native_banners_dropped(_QUIET):  # the banners TensorFlow prints while it loads
    import jax  # noqa: E402
    import tensorflow as tf  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from ifdd_jax import compile_cache, evaluate, input_pipeline, train  # noqa: E402
from ifdd_jax.checkpointing import CheckpointMismatchError  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config",
    None,
    "Config file, optionally with arguments: configs/dfew.py:fold=2,model=...",
    lock_config=True,
)
flags.DEFINE_string("workdir", None, "Where checkpoints, TensorBoard events and results go.")
flags.DEFINE_enum("mode", "train", ["train", "eval"], "train (and test), or eval a checkpoint.")
flags.DEFINE_string(
    "checkpoint",
    None,
    "--mode=eval: a run's workdir, checkpoint folder or step folder (default: --workdir).",
)
flags.DEFINE_enum("split", "test", ["val", "test"], "--mode=eval: the split to evaluate.")
flags.DEFINE_string("coordinator_address", None, "Multi-process: host:port of process 0.")
flags.DEFINE_integer("num_processes", None, "Multi-process: number of processes.")
flags.DEFINE_integer("process_id", None, "Multi-process: this process's index.")
flags.mark_flags_as_required(["config", "workdir"])


class _QuietLibraries(logging_std.Filter):
    """Drops INFO chatter of Orbax and TFDS (one line per file they touch); keeps warnings."""

    def filter(self, record: logging_std.LogRecord) -> bool:
        noisy = ("/orbax/", "/tensorflow_datasets/", "/etils/")
        return record.levelno >= logging_std.WARNING or not any(
            part in record.pathname for part in noisy
        )


def _init_distributed() -> None:
    if FLAGS.coordinator_address or FLAGS.num_processes:
        jax.distributed.initialize(
            coordinator_address=FLAGS.coordinator_address,
            num_processes=FLAGS.num_processes,
            process_id=FLAGS.process_id,
        )
        return
    try:  # SLURM / TPU pod / other cluster environments JAX detects by itself
        jax.distributed.initialize()
    except (ValueError, RuntimeError):
        pass  # a single process


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.get_absl_handler().addFilter(_QuietLibraries())
    if _QUIET:
        logging.get_absl_handler().addFilter(quiet_logs.DropLibraryDeprecations())
    # TensorFlow only feeds data: keep it off the GPUs (its GPU build next to JAX breaks NCCL).
    tf.config.set_visible_devices([], "GPU")
    _init_distributed()
    logging.info(
        "JAX process %d of %d, %d local / %d global devices (%s).",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
        jax.devices()[0].platform,
    )
    config = FLAGS.config
    cache = compile_cache.enable(config.compilation_cache_dir)
    logging.info("XLA compilation cache: %s", cache or "off")
    input_pipeline.resolve_classes(config, FLAGS.workdir)  # custom data: classes into config.json
    logging.info("Config written to %s.", train.write_config(config, FLAGS.workdir))
    logging.vlog(1, "Config:\n%s", config)  # the whole config with --verbosity=1
    try:
        if FLAGS.mode == "train":
            train.train_and_evaluate(config, FLAGS.workdir)
        else:
            evaluate.evaluate_checkpoint(config, FLAGS.workdir, FLAGS.checkpoint, FLAGS.split)
    except (CheckpointMismatchError, FileNotFoundError, train.NonFiniteLossError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except ValueError as e:
        # Configuration and data errors carry a message meant for the user.
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
