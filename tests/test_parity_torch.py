"""Numerical parity with PyTorch (CPU), for the optional `torch` extra (pip install '.[torch]').

* the key specs of ifdd_jax.convert.specs equal the real torchvision state dicts;
* one MViT block with q/kv pooling, channel expansion and relative positions, one MobileNetV2
  inverted residual block, and the full torchvision mvit_v2_s trunk at a small input, each
  converted with the importers' key maps, agree with PyTorch within 1e-4 max abs;
* a `.pth` written by torch.save converts through `load_into`.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is the optional extra: pip install '.[torch]'")
torchvision = pytest.importorskip("torchvision", reason="torchvision comes with the torch extra")

from torchvision.models import mobilenet_v2  # noqa: E402
from torchvision.models.mobilenetv2 import InvertedResidual as TorchInvertedResidual  # noqa: E402
from torchvision.models.video import mvit as tv_mvit  # noqa: E402

from ifdd_jax.convert import families, load_into, specs, torchvision_mvit, transform  # noqa: E402
from ifdd_jax.convert.core import _fit, _unflatten  # noqa: E402
from ifdd_jax.models.mobilenet_v2 import InvertedResidual  # noqa: E402
from ifdd_jax.models.mvit import (  # noqa: E402
    MultiscaleBlock,
    MViT,
    MViTBlockConfig,
    mvit_v2_s_blocks,
)

TOL = 1e-4


def _numpy_state(module):
    return {k: v.detach().numpy() for k, v in module.state_dict().items()}


def _randomize(module, seed=0):
    """Non-trivial values everywhere (LayerNorm/BatchNorm affine and running stats included)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            scale = 0.2 if p.ndim > 1 else 0.5
            p.copy_(torch.randn(p.shape, generator=gen) * scale)
        for name, b in module.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=gen) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=gen) + 0.5)
    return module.eval()


def _convert_with(resolver, target_abstract, state):
    """Fills abstract variables through a family resolver (the converter's own key map)."""
    flat = {}

    def visit(prefix, node):
        for k, v in node.items():
            path = f"{prefix}/{k}"
            if isinstance(v, dict):
                visit(path, v)
            else:
                found = resolver(path, len(v.shape))
                assert found is not None, path
                value, _ = _fit(transform(state[found.key], found.kind), tuple(v.shape), found.kind)
                assert value is not None, (path, found.key)
                flat[path] = jnp.asarray(value)

    for collection, tree in target_abstract.items():
        visit(collection, jax.tree.map(lambda x: x, dict(tree)))
    return _unflatten(flat)


def _max_abs(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


def test_specs_equal_the_torchvision_state_dicts():
    def shapes(module):
        return {k: tuple(v.shape) for k, v in module.state_dict().items()}

    assert shapes(tv_mvit.mvit_v2_s()) == specs.torchvision_mvit_spec()
    assert shapes(mobilenet_v2()) == specs.torchvision_mobilenet_v2_spec()
    small = torchvision_mvit.build(mvit_v2_s_blocks(), (8, 64, 64))
    assert shapes(small) == specs.torchvision_mvit_spec(clip=(8, 64, 64))


def test_one_mvit_block_with_pooling_and_rel_pos():
    # A stage-opening block: q stride (1, 2, 2), kv stride (1, 2, 2), 16 -> 32 channels, 2 heads.
    cnf = MViTBlockConfig(2, 16, 32, stride_q=(1, 2, 2), stride_kv=(1, 2, 2))
    thw = (4, 8, 8)
    norm = functools.partial(torch.nn.LayerNorm, eps=1e-6)
    block = _randomize(
        tv_mvit.MultiscaleBlock(
            input_size=list(thw),
            cnf=torchvision_mvit.block_setting([cnf])[0],
            residual_pool=True,
            residual_with_cls_embed=False,
            rel_pos_embed=True,
            proj_after_attn=True,
            norm_layer=norm,
        ),
        seed=1,
    )
    x = np.random.default_rng(0).standard_normal((2, 1 + 4 * 8 * 8, 16)).astype(np.float32)
    with torch.no_grad():
        expected, expected_thw = block(torch.from_numpy(x), thw)

    # Clips of 8×32² give the grid (4, 8, 8) after the patch stride.
    rows = MViT([cnf]).rel_pos_rows((8, 32, 32))[0]
    ours = MultiscaleBlock(cnf, rows)
    abstract = jax.eval_shape(lambda x: ours.init(jax.random.key(0), x, thw, train=False), x)
    state = {f"blocks.0.{k}": v for k, v in _numpy_state(block).items()}
    variables = _convert_with(
        families.mvit_resolver({0: 0}, prefix="params/"),
        {"params": {"blocks_0": abstract["params"]}},
        state,
    )
    got, got_thw = ours.apply({"params": variables["params"]["blocks_0"]}, x, thw, train=False)
    assert tuple(got_thw) == tuple(expected_thw) == (4, 4, 4)
    assert _max_abs(got, expected.numpy()) < TOL


@pytest.mark.parametrize("inp,oup,stride,t", [(24, 24, 1, 6), (16, 24, 2, 6), (32, 16, 1, 1)])
def test_one_inverted_residual_block(inp, oup, stride, t):
    block = _randomize(TorchInvertedResidual(inp, oup, stride, t), seed=2)
    x = np.random.default_rng(1).standard_normal((2, inp, 12, 12)).astype(np.float32)
    with torch.no_grad():
        expected = block(torch.from_numpy(x)).numpy().transpose(0, 2, 3, 1)

    ours = InvertedResidual(oup, stride=stride, expand_ratio=t)
    x_nhwc = x.transpose(0, 2, 3, 1)
    abstract = jax.eval_shape(lambda x: ours.init(jax.random.key(0), x, train=False), x_nhwc)
    group = 1 if t == 1 else 2  # group 1 is the only one without expansion
    prefix = f"trunk/groups/group{group}_block0"
    index = families.mobilenet_feature_index(group, 0)
    state = {f"features.{index}.{k}": v for k, v in _numpy_state(block).items()}
    wrapped = {
        c: {"trunk": {"groups": {f"group{group}_block0": tree}}} for c, tree in abstract.items()
    }
    variables = _convert_with(families.mobilenet_resolver, wrapped, state)
    unwrapped = {c: _get_path(tree, prefix) for c, tree in variables.items()}
    got = ours.apply(unwrapped, x_nhwc, train=False)
    assert _max_abs(got, expected) < TOL


def _get_path(tree, path):
    for p in path.split("/"):
        tree = tree[p]
    return tree


@pytest.mark.parametrize("clip", [(8, 64, 64), (4, 48, 48)])
def test_full_mvit_v2_s_trunk_at_a_small_input(clip):
    """torchvision mvit_v2_s built for a small clip; 48 px makes torchvision interpolate its
    relative-position tables at run time (its grid bookkeeping floors 3/2 to 1)."""
    t, h, w = clip
    model = _randomize(torchvision_mvit.build(mvit_v2_s_blocks(), clip), seed=3)
    x = np.random.default_rng(2).uniform(0, 1, (2, 3, t, h, w)).astype(np.float32)
    expected = torchvision_mvit.trunk_tokens(model, x)

    ours, params, report = torchvision_mvit.converted_trunk(model, mvit_v2_s_blocks(), clip)
    assert not report.not_loaded and not report.resized
    assert [s for s, _ in report.skipped] == ["head.1.weight", "head.1.bias"]
    clips = x.transpose(0, 2, 3, 4, 1)
    levels, got = jax.jit(lambda v, c: ours.apply(v, c, return_tokens=True))(params, clips)
    assert got.shape == expected.shape
    assert _max_abs(got, expected) < TOL


def test_pth_files_convert(tmp_path):
    model = mobilenet_v2()
    path = tmp_path / "mobilenet_v2.pth"
    torch.save({"state_dict": model.state_dict()}, path)
    stem = {"conv": {"kernel": np.zeros((3, 3, 3, 32), np.float32)}}
    variables = {"params": {"trunk": {"stem": stem}}}
    new, report = load_into(variables, str(path), "baseline_mobilenet_v2", strict=False)
    assert report.loaded == [("features.0.0.weight", "params/trunk/stem/conv/kernel")]
    np.testing.assert_array_equal(
        new["params"]["trunk"]["stem"]["conv"]["kernel"],
        model.state_dict()["features.0.0.weight"].numpy().transpose(2, 3, 1, 0),
    )
