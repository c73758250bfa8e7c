"""The PyTorch side of the MViT parity checks (tests/test_parity_torch.py, bench/mvit_vs_torch.py):
torchvision's MViTv2 built from our block list for any clip size, the final tokens of its trunk,
and our trunk filled from it through the converter. Needs the optional torch extra.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np

from ifdd_jax.convert.core import ConversionReport, load_into
from ifdd_jax.models.mvit import MViT, MViTBlockConfig


def block_setting(blocks: Sequence[MViTBlockConfig]) -> list:
    """Our block configs as torchvision's `MSBlockConfig` list."""
    from torchvision.models.video import mvit as tv_mvit  # deferred: torch (an optional extra)

    return [
        tv_mvit.MSBlockConfig(
            num_heads=b.num_heads,
            input_channels=b.input_channels,
            output_channels=b.output_channels,
            kernel_q=list(b.kernel_q),
            kernel_kv=list(b.kernel_kv),
            stride_q=list(b.stride_q),
            stride_kv=list(b.stride_kv),
        )
        for b in blocks
    ]


def build(blocks: Sequence[MViTBlockConfig], clip: tuple[int, int, int], num_classes: int = 400):
    """torchvision's MViT with `mvit_v2_s`'s options (residual pooling, decomposed relative
    positions, projection after attention, stochastic depth 0.2), sized for clips (T, H, W)."""
    from torchvision.models.video import mvit as tv_mvit  # deferred: torch (an optional extra)

    t, h, w = clip
    return tv_mvit.MViT(
        spatial_size=(h, w),
        temporal_size=t,
        block_setting=block_setting(blocks),
        residual_pool=True,
        residual_with_cls_embed=False,
        rel_pos_embed=True,
        proj_after_attn=True,
        stochastic_depth_prob=0.2,
        num_classes=num_classes,
    )


def trunk_tokens(model, clips: np.ndarray) -> np.ndarray:
    """The final normalised tokens `[B, 1 + t·h·w, C]` (class token first) of torchvision's MViT
    `model` (eval mode, no head) for float32 clips `[B, 3, T, H, W]`, on the model's device."""
    import torch  # deferred: torch is an optional extra

    device = next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        tokens = model.conv_proj(torch.from_numpy(clips).to(device)).flatten(2).transpose(1, 2)
        tokens = model.pos_encoding(tokens)
        thw = (model.pos_encoding.temporal_size,) + model.pos_encoding.spatial_size
        for block in model.blocks:
            tokens, thw = block(tokens, thw)
        return model.norm(tokens).float().cpu().numpy()


def converted_trunk(
    model, blocks: Sequence[MViTBlockConfig], clip: tuple[int, int, int]
) -> tuple[MViT, dict, ConversionReport]:
    """Our MViT trunk for clips (T, H, W), its {"params"} converted from torchvision's `model`
    with the importer's `baseline_mvit` key map, and the conversion report."""
    ours = MViT(blocks, input_size=clip)
    abstract = jax.eval_shape(
        lambda c: ours.init(jax.random.key(0), c),
        jax.ShapeDtypeStruct((1,) + tuple(clip) + (3,), np.float32),
    )
    zeros = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), abstract["params"])
    state = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    variables, report = load_into({"params": {"trunk": zeros}}, state, "baseline_mvit")
    return ours, {"params": variables["params"]["trunk"]}, report
