"""Deployment exports of a trained run: `python -m ifdd_jax.export` (ifdd_jax/export/__main__.py),
the formats and their parity checks (core.py) and the jaxpr-to-ONNX lowering (onnx_lowering.py).
Needs the optional `export` extra (onnx, onnxruntime) for ONNX; TensorFlow is a core dependency."""
