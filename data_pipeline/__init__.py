"""Dataset readers, TFDS builders and the tf.data clip pipeline for ifdd_jax."""
