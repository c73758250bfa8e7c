"""IFDD-3DViT (MViTv2 trunk) and the vanilla MViT baseline: constructors for the model registry.

Both flavors use the released 10-block backbone ("MFViT_XS": MViTv2-S with stage 3 shortened from
11 to 5 blocks; stage depths [1, 2, 5, 2], widths [96, 192, 384, 768], heads [1, 2, 4, 8]); see
mvit.py for the blocks. The relative-position tables are sized for the config's clip
(config.input.num_frames × image_size²); other clip sizes interpolate them as torchvision does.

reference flavor (the released network, docs/reference-ifdd.md §1-§4)
---------------------------------------------------------------------
All 10 blocks run. The pyramid takes stage 2 (the output of block 7: 384 channels at 14², *not*
layer-normalised) and stage 3 (the final LayerNorm's output: 768 channels at 7²). Stage 2 is
compressed by a dilated 3×3 conv (stride = dilation = padding = 2); stage 3 passes through; a 1×1
conv maps the 1152 concatenated channels to 768. X is [B, 8, 7, 7, 768] = [B, 392, 768] as tokens.
ISSM and LADM are the released `WaveSF_trans_CLS` (flavor "reference" in issm.py / ladm.py), and
the head is Dropout(0.5) -> Linear(768 -> classes). The class token is carried through the blocks
and discarded before the pyramid. Params 37.58 M at 16×224².
Time in the patch embedding follows the released `embedNet_light` (`reference_temporal_embedding`):
the Conv3d strides time by 2 only for clips of more than 8 frames, and 32-frame clips (MAFW) get
an AvgPool3d((2, 1, 1)) after it, so T_X = 8 for the 8, 16 and 32 frames the released code accepts
(its FPN and WaveLift are built for T = 8; other lengths raise there). Other lengths follow the
same two rules here (T_X = T for T <= 8, T / 2 for 8 < T != 32) so that small test clips run.
The relative-position tables are sized for the pooled grid (rel_pos_t: 15 rows at 8, 16 and 32
frames), as the released backbone's fixed [8, 56, 56] grid sizes them.

paper flavor (the paper's description)
--------------------------------------
"Only the first three MViT-S stages": blocks 0-7 of the same backbone (MViT stage 4, the two
768-wide blocks, is dropped), ending in the final LayerNorm at 384 channels. The pyramid has three
levels, stages 0/1/2 at 56²/28²/14² (96/192/384 channels), each compressed by a dilated 3×3 conv to
14² (ratios 4/2/1; the paper compresses the coarsest level too), concatenated and mixed by a 1×1
conv; X is [B, 8, 14, 14, C_S]. "We also remove the class token of MViT-S" (appendix): the trunk
has no class token at all (no parameter, no extra row in any attention or pooling LayerNorm), so
the grid tokens attend only to each other. The patch embedding is torchvision's (time stride 2,
no temporal pooling): T_X = T / 2, i.e. 16 for MAFW's 32 frames. C_S = 768: the appendix extracts
"768-dimension feature vectors" from IFDD-3DViT (config_lib.TRUNK_DEFAULTS says why).
ISSM uses d_T = 128 and D_c = 4 (the paper's value for 3DViT), LADM the paper's single-head
lifting.
This network is smaller (20.58 M params; 34.6 GMACs counting Linear/conv layers; C_S = 384 would
give 14.3 M / 30.4 G) than the 37.44 M the paper reports, which is the released (reference)
network's size: the paper's cost figures describe the released model, not its own architecture
description.

Vanilla baseline (`baseline_mvit`)
----------------------------------
The full 10-block backbone, mean over the T'×H'×W' tokens of the final LayerNorm's output (the
class token's own output is not used), Dropout(0.5) -> Linear(768 -> classes): 23.50 M params
against the paper's 23.41 M. The same for both flavors, and it keeps the class token in both:
the paper removes it as part of building IFDD-3DViT, while the baseline is the unmodified
("vanilla") MViT, i.e. torchvision's network whose Kinetics checkpoints carry a class token, so
`baseline_mvit` is what a torchvision / PySlowFast MViTv2 checkpoint fills completely. Its patch
embedding is torchvision's too (T / 2 token frames).

Costs: the paper's GFLOPs (36.01 IFDD-3DViT / 32.83 baseline) are the MACs of the Linear and
convolution layers only: counted that way our networks give 35.88 / 32.70 at 16×224² (-0.4 %
each). XLA's count in `model_summary` also includes the attention matmuls (q·kᵀ and
attention·v, about 12 GMACs for this backbone) and elementwise work: 49.2 / 45.9.
"""

from __future__ import annotations

import flax.linen as nn
import ml_collections

from ifdd_jax.config_lib import model_setting
from ifdd_jax.models import builders
from ifdd_jax.models.ifdd import IFDD, Baseline
from ifdd_jax.models.mvit import MViT, Triple, mvit_v2_xs_blocks
from ifdd_jax.models.pyramid import PyramidAggregation

# Stage outputs the pyramid takes, per flavor, and the number of leading blocks kept.
REFERENCE_STAGES: tuple[int, ...] = (2, 3)
PAPER_STAGES: tuple[int, ...] = (0, 1, 2)
PAPER_NUM_BLOCKS = 8  # stages 0-2 of the 10-block backbone: depths [1, 2, 5]
TRUNK = "mvit"  # the trunk family of config_lib.TRUNK_DEFAULTS (C_S 768, D_c 4)
# The released backbone's stochastic depth: config.model.trunk_drop_path's default, and the
# value for configs saved before that field existed.
RELEASED_TRUNK_DROP_PATH = 0.2


def clip_size(config: ml_collections.ConfigDict) -> Triple:
    """(T, H, W) of the config's clips, which the relative-position tables are sized for."""
    size = config.input.image_size
    return (config.input.num_frames, size, size)


def reference_temporal_embedding(num_frames: int) -> tuple[int, int]:
    """(time stride of the patch Conv3d, temporal average pooling after it) of the released
    `embedNet_light` for clips of `num_frames`: stride 2 above 8 frames, pooling by 2 at 32 frames,
    so 8, 16 and 32 frames all give 8 token frames."""
    if num_frames < 1:
        raise ValueError(f"clips need at least one frame, got {num_frames}")
    stride = 2 if num_frames > 8 else 1
    pool = 2 if num_frames == 32 else 1
    return stride, pool


def mvit_trunk(
    config: ml_collections.ConfigDict,
    *,
    stages: tuple[int, ...] | None,
    num_blocks: int | None = None,
    class_token: bool = True,
    released_time_embedding: bool = False,
) -> MViT:
    """The 10-block backbone (or its first `num_blocks`) for the config's clips.
    `released_time_embedding`: the released patch embedding's time handling (see
    reference_temporal_embedding) instead of torchvision's fixed time stride 2."""
    blocks = mvit_v2_xs_blocks()
    if num_blocks is not None:
        blocks = blocks[:num_blocks]
    kwargs = {}
    if released_time_embedding:
        stride, pool = reference_temporal_embedding(config.input.num_frames)
        kwargs = dict(patch_stride=(stride, 4, 4), temporal_pool=pool)
    return MViT(
        blocks=blocks,
        input_size=clip_size(config),
        stages=stages,
        drop_path=float(config.model.get("trunk_drop_path", RELEASED_TRUNK_DROP_PATH)),
        class_token=class_token,
        **kwargs,
    )


def ifdd_3dvit(config: ml_collections.ConfigDict) -> nn.Module:
    """IFDD-3DViT: MViTv2 trunk -> pyramid -> ISSM -> LADM -> head (see the module docstring)."""
    reference = config.flavor == "reference"
    if reference:
        trunk = mvit_trunk(config, stages=REFERENCE_STAGES, released_time_embedding=True)
    else:
        trunk = mvit_trunk(
            config, stages=PAPER_STAGES, num_blocks=PAPER_NUM_BLOCKS, class_token=False
        )
    return IFDD(
        trunk=trunk,
        pyramid=PyramidAggregation(
            features=model_setting(config, "features", TRUNK),
            pass_through_last=reference,
        ),
        issm=builders.issm(config, TRUNK),
        ladm=builders.ladm(config),
        num_classes=config.num_classes,
        head_dropout=config.model.head_dropout,
    )


def baseline_mvit(config: ml_collections.ConfigDict) -> nn.Module:
    """The vanilla 10-block MViT: mean of the final tokens -> Dropout -> Linear."""
    return Baseline(
        trunk=mvit_trunk(config, stages=(3,)),
        num_classes=config.num_classes,
        head_dropout=config.model.head_dropout,
    )
