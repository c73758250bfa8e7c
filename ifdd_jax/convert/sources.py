"""Reading checkpoints as flat `{key: numpy array}` state dicts, without PyTorch where possible.

* `.safetensors`: parsed directly (8-byte little-endian header length, a JSON header of
  `{name: {dtype, shape, data_offsets}}`, then the raw little-endian data), no extra package.
* `.npz`: `numpy.load`; keys are the state-dict names (e.g. a `np.savez(f, **state_dict)` export).
* `.pth` / `.pt` / `.pyth` / `.bin`: `torch.load` (the optional `torch` extra), weights only.
* a directory: a checkpoint written by `python -m ifdd_jax.convert` (Orbax), whose keys are
  already Flax paths `params/trunk/conv_proj/kernel`.

Training checkpoints often nest the weights (`{"model_state": ...}` in PySlowFast, `{"model": ...}`
or `{"state_dict": ...}` elsewhere) and DataParallel prefixes every key with `module.`; both are
undone here.
"""

from __future__ import annotations

import json
import os
import pathlib
import struct
from collections.abc import Mapping
from typing import Any

import ml_dtypes  # shipped with JAX
import numpy as np
import orbax.checkpoint as ocp

StateDict = dict[str, np.ndarray]

TORCH_SUFFIXES = (".pth", ".pt", ".pyth", ".bin", ".ckpt")
NESTED_KEYS = ("model_state", "state_dict", "model", "module", "net")

_SAFETENSORS_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


class SourceError(ValueError):
    """A checkpoint that cannot be read."""


def read_safetensors(path: str) -> StateDict:
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise SourceError(f"{path}: too short for a safetensors file")
    (header_len,) = struct.unpack("<Q", data[:8])
    try:
        header = json.loads(data[8 : 8 + header_len])
    except ValueError as e:
        raise SourceError(f"{path}: unreadable safetensors header ({e})") from None
    body = memoryview(data)[8 + header_len :]
    out: StateDict = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype_name = info["dtype"]
        if dtype_name == "BF16":
            dtype = np.dtype(ml_dtypes.bfloat16)
        elif dtype_name in _SAFETENSORS_DTYPES:
            dtype = np.dtype(_SAFETENSORS_DTYPES[dtype_name])
        else:
            raise SourceError(f"{path}: tensor {name!r} has unsupported dtype {dtype_name}")
        start, end = info["data_offsets"]
        array = np.frombuffer(body[start:end], dtype=dtype.newbyteorder("<"))
        out[name] = array.reshape(info["shape"]).astype(dtype, copy=True)
    return out


def write_safetensors(path: str, tensors: Mapping[str, np.ndarray]) -> None:
    """Writes float32/int arrays as a safetensors file (used by tests and for exports)."""
    inverse = {np.dtype(v): k for k, v in _SAFETENSORS_DTYPES.items()}
    header: dict[str, Any] = {}
    chunks = []
    offset = 0
    for name, value in tensors.items():
        value = np.ascontiguousarray(value)
        raw = value.astype(value.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = dict(
            dtype=inverse[value.dtype],
            shape=list(value.shape),
            data_offsets=[offset, offset + len(raw)],
        )
        chunks.append(raw)
        offset += len(raw)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)  # the format aligns the data to 8 bytes
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for raw in chunks:
            f.write(raw)


def _read_torch(path: str) -> dict[str, Any]:
    try:
        import torch  # deferred: torch is an optional extra (only .pth/.pt need it)
    except ImportError:
        raise SourceError(
            f"{path}: reading PyTorch pickles needs the optional extra (pip install '.[torch]'); "
            "export the state dict to .safetensors or .npz to convert without torch"
        ) from None
    obj = torch.load(path, map_location="cpu", weights_only=True)
    return obj


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        return value.numpy()
    return np.asarray(value)


def unwrap(obj: Any, where: str) -> StateDict:
    """The flat state dict inside a loaded checkpoint object (nesting and `module.` undone)."""
    while isinstance(obj, Mapping) and not any(hasattr(v, "shape") for v in obj.values()):
        nested = [k for k in NESTED_KEYS if k in obj]
        if not nested:
            raise SourceError(
                f"{where}: no tensors at the top level and none of the keys {NESTED_KEYS}; "
                f"found {sorted(obj)[:10]}"
            )
        obj = obj[nested[0]]
    if not isinstance(obj, Mapping):
        raise SourceError(f"{where}: expected a state dict, got {type(obj).__name__}")
    out = {str(k): _to_numpy(v) for k, v in obj.items() if hasattr(v, "shape")}
    if out and all(k.startswith("module.") for k in out):
        out = {k[len("module.") :]: v for k, v in out.items()}
    return out


def read_flax_checkpoint(path: str) -> StateDict:
    """A converter output directory (Orbax) as `{"params/a/b/kernel": array}`."""
    tree = ocp.StandardCheckpointer().restore(os.path.abspath(path))

    out: StateDict = {}

    def visit(prefix: str, node: Any) -> None:
        if isinstance(node, Mapping):
            for k, v in node.items():
                visit(f"{prefix}/{k}" if prefix else str(k), v)
        else:
            out[prefix] = np.asarray(node)

    visit("", tree)
    return out


def read_state_dict(path: str) -> StateDict:
    """Reads `path` (see the module docstring) into a flat `{key: array}` dict."""
    p = pathlib.Path(path)
    if not p.exists():
        raise SourceError(f"checkpoint {path!r} does not exist")
    if p.is_dir():
        return read_flax_checkpoint(path)
    suffix = p.suffix.lower()
    if suffix == ".safetensors":
        return read_safetensors(path)
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            return unwrap({k: data[k] for k in data.files}, path)
    if suffix in TORCH_SUFFIXES:
        return unwrap(_read_torch(path), path)
    raise SourceError(
        f"{path}: unknown checkpoint type {suffix!r}; expected .safetensors, .npz, "
        f"{', '.join(TORCH_SUFFIXES)} or a converter output directory"
    )
