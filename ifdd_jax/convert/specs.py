"""The key names and shapes of each PyTorch checkpoint family, derived from the architecture.

These let the converters be tested (and checkpoints be checked) without PyTorch: a random state
dict with exactly these keys and shapes converts as a real one does. With torch installed, the
tests compare every spec against the state dict of the real torchvision module.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ifdd_jax.convert.families import mobilenet_feature_index
from ifdd_jax.models.ifdd_3dvit import reference_temporal_embedding
from ifdd_jax.models.mobilenet_v2 import MOBILENET_V2_GROUPS
from ifdd_jax.models.mvit import MViT, MViTBlockConfig, mvit_v2_s_blocks, mvit_v2_xs_blocks

Spec = dict[str, tuple[int, ...]]


def _linear(spec: Spec, name: str, n_in: int, n_out: int, bias: bool = True) -> None:
    spec[f"{name}.weight"] = (n_out, n_in)
    if bias:
        spec[f"{name}.bias"] = (n_out,)


def _norm(spec: Spec, name: str, width: int) -> None:
    spec[f"{name}.weight"] = (width,)
    spec[f"{name}.bias"] = (width,)


def _bn(spec: Spec, name: str, width: int) -> None:
    _norm(spec, name, width)
    spec[f"{name}.running_mean"] = (width,)
    spec[f"{name}.running_var"] = (width,)
    spec[f"{name}.num_batches_tracked"] = ()


def torchvision_mvit_spec(
    blocks: Sequence[MViTBlockConfig] = None,
    clip: tuple[int, int, int] = (16, 224, 224),
    num_classes: int = 400,
    head: bool = True,
    temporal_stride: int = 2,
    temporal_pool: int = 1,
) -> Spec:
    """torchvision `MViT` (default: `mvit_v2_s`) built for clips of (T, H, W); the released IFDD
    backbone passes its patch embedding's time stride and pooling (tables sized accordingly)."""
    blocks = tuple(blocks or mvit_v2_s_blocks())
    trunk = MViT(blocks, patch_stride=(temporal_stride, 4, 4), temporal_pool=temporal_pool)
    rows = trunk.rel_pos_rows(clip)
    spec: Spec = {}
    c0 = blocks[0].input_channels
    spec["conv_proj.weight"] = (c0, 3, 3, 7, 7)
    spec["conv_proj.bias"] = (c0,)
    spec["pos_encoding.class_token"] = (c0,)
    for i, cnf in enumerate(blocks):
        p = f"blocks.{i}."
        out, hd = cnf.output_channels, cnf.output_channels // cnf.num_heads
        _norm(spec, p + "norm1", cnf.input_channels)
        _norm(spec, p + "norm2", out)
        _linear(spec, p + "attn.qkv", cnf.input_channels, 3 * out)
        _linear(spec, p + "attn.project.0", out, out)
        pools = []
        if np.prod(cnf.kernel_q) > 1 or np.prod(cnf.stride_q) > 1:
            pools.append(("q", cnf.kernel_q))
        if np.prod(cnf.kernel_kv) > 1 or np.prod(cnf.stride_kv) > 1:
            pools += [("k", cnf.kernel_kv), ("v", cnf.kernel_kv)]
        for which, kernel in pools:
            spec[f"{p}attn.pool_{which}.pool.weight"] = (hd, 1) + tuple(kernel)
            _norm(spec, f"{p}attn.pool_{which}.norm_act.0", hd)
        t_rows, s_rows = rows[i]
        spec[p + "attn.rel_pos_h"] = (s_rows, hd)
        spec[p + "attn.rel_pos_w"] = (s_rows, hd)
        spec[p + "attn.rel_pos_t"] = (t_rows, hd)
        _linear(spec, p + "mlp.0", out, 4 * out)
        _linear(spec, p + "mlp.3", 4 * out, out)
        if cnf.input_channels != out:
            _linear(spec, p + "project", cnf.input_channels, out)
    _norm(spec, "norm", blocks[-1].output_channels)
    if head:
        _linear(spec, "head.1", blocks[-1].output_channels, num_classes)
    return spec


_TO_SLOWFAST = (
    ("conv_proj.", "patch_embed.proj."),
    ("pos_encoding.class_token", "cls_token"),
    (".attn.project.0.", ".attn.proj."),
    (".mlp.0.", ".mlp.fc1."),
    (".mlp.3.", ".mlp.fc2."),
    ("head.1.", "head.projection."),
)


def slowfast_mvit_spec(clip: tuple[int, int, int] = (16, 224, 224), num_classes: int = 400) -> Spec:
    """PySlowFast MViTv2-S (the same network under PySlowFast's names; cls_token is [1, 1, C])."""
    spec: Spec = {}
    for key, shape in torchvision_mvit_spec(clip=clip, num_classes=num_classes).items():
        name = key
        for a, b in _TO_SLOWFAST:
            name = name.replace(a, b)
        for which in "qkv":
            name = name.replace(f".attn.pool_{which}.pool.weight", f".attn.pool_{which}.weight")
            name = name.replace(f".attn.pool_{which}.norm_act.0.", f".attn.norm_{which}.")
        if name.endswith(".project.weight") or name.endswith(".project.bias"):
            name = name.replace(".project.", ".proj.")
        if name == "cls_token":
            shape = (1, 1) + shape
        spec[name] = shape
    return spec


def torchvision_mobilenet_v2_spec(num_classes: int = 1000) -> Spec:
    spec: Spec = {"features.0.0.weight": (32, 3, 3, 3)}
    _bn(spec, "features.0.1", 32)
    c_in = 32
    for g, (t, c, n, _) in enumerate(MOBILENET_V2_GROUPS, start=1):
        for i in range(n):
            p = f"features.{mobilenet_feature_index(g, i)}.conv."
            hidden = c_in * t
            if t == 1:
                spec[p + "0.0.weight"] = (hidden, 1, 3, 3)
                _bn(spec, p + "0.1", hidden)
                spec[p + "1.weight"] = (c, hidden, 1, 1)
                _bn(spec, p + "2", c)
            else:
                spec[p + "0.0.weight"] = (hidden, c_in, 1, 1)
                _bn(spec, p + "0.1", hidden)
                spec[p + "1.0.weight"] = (hidden, 1, 3, 3)
                _bn(spec, p + "1.1", hidden)
                spec[p + "2.weight"] = (c, hidden, 1, 1)
                _bn(spec, p + "3", c)
            c_in = c
    spec["features.18.0.weight"] = (1280, c_in, 1, 1)
    _bn(spec, "features.18.1", 1280)
    _linear(spec, "classifier.1", 1280, num_classes)
    return spec


def ifdd_spec(num_classes: int = 7, clip: tuple[int, int, int] = (16, 224, 224)) -> Spec:
    """The authors' released IFDD-3DViT state dict (MFViT_Main with MFViT_FPN, use_stage [2, 3],
    WaveSF_trans_CLS with AdaptSplit, headNet), read from their code. Its patch embedding brings
    8, 16 and 32 frames to 8 token frames (reference_temporal_embedding), so the temporal shapes
    (rel_pos_t, temporal_pos, ISSM's Linears, project_compress) are those of T_X = 8 for all three
    (e.g. MAFW's 32-frame model)."""
    stride, pool = reference_temporal_embedding(clip[0])
    spec: Spec = {}
    backbone = torchvision_mvit_spec(
        mvit_v2_xs_blocks(), clip, head=False, temporal_stride=stride, temporal_pool=pool
    )
    for key, shape in backbone.items():
        spec[("embed." if key.startswith("conv_proj") else "backbone.backbone.") + key] = shape
    t = clip[0] // stride // pool
    h = w = clip[1] // 32
    c, stage2 = 768, 384
    spec["backbone.PANLayer.0.weight"] = (stage2, stage2, 3, 3)
    spec["backbone.CatConv.weight"] = (c, stage2 + c, 1, 1)
    wl = "backbone.WaveLifts."
    for name in ("q_d", "q_a"):
        _linear(spec, wl + name, c, c)
    for name in ("kv_a", "kv_d"):
        _linear(spec, wl + name, c, 2 * c)
    spec[wl + "spatial_pos"] = (h * w, c)
    spec[wl + "temporal_pos"] = (t, c)
    spec[wl + "class_pos"] = (c,)
    _linear(spec, wl + "project_d.0", c, c)
    _linear(spec, wl + "project_a.0", c, c)
    a = wl + "adapt_split."
    spec[a + "dim_project.0.weight"] = (7, c, 1, 1)
    spec[a + "dim_project.0.bias"] = (7,)
    _linear(spec, a + "time_project.0", t, t)
    _linear(spec, a + "time_project.2", t, 1)
    _linear(spec, a + "offset_project_approx.0", t * t, t // 2, bias=False)
    _linear(spec, a + "offset_project_detail.0", t * t, t // 2, bias=False)
    spec[a + "index_even"] = (t // 2,)
    spec[a + "index_odd"] = (t // 2,)
    for name in ("xa_norm", "xd_norm", "out_norm1", "out_norm2"):
        _norm(spec, wl + name, c)
    _linear(spec, wl + "qkv", c, 3 * c)
    _linear(spec, wl + "project.0", c, c)
    _linear(spec, wl + "mlp.0", c, 4 * c)
    _linear(spec, wl + "mlp.3", 4 * c, c)
    _linear(spec, wl + "project_compress", t // 2 * h * w, 1, bias=False)
    _linear(spec, "head.head.1", c, num_classes)
    return spec


def random_state_dict(spec: Spec, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 tensors for `spec` (int64 for counters and index buffers)."""
    rng = np.random.default_rng(seed)
    out = {}
    for key, shape in spec.items():
        if key.endswith("num_batches_tracked") or key.endswith(("index_even", "index_odd")):
            out[key] = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
        elif key.endswith("running_var"):
            out[key] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        else:
            out[key] = rng.standard_normal(shape).astype(np.float32)
    return out
