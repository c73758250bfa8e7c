"""MViTv2 trunk and IFDD-3DViT: block configs, the reference tensor-shape table (jax.eval_shape at
full size), parameter counts, relative-position arithmetic and tiny real forward/backward passes."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ifdd_jax.config_lib import load_config_file
from ifdd_jax.models import build_model
from ifdd_jax.models.mvit import (
    DepthwiseConv3d,
    MultiscaleAttention,
    MultiscaleBlock,
    MViT,
    block_configs,
    dense_attention,
    frame_chunked_attention,
    linear_resize_matrix,
    max_pool3d,
    mvit_v2_s_blocks,
    mvit_v2_xs_blocks,
    rel_pos_index,
    stage_starts,
)

RNGS = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
FULL = jax.ShapeDtypeStruct((1, 16, 224, 224, 3), jnp.float32)


def _config(**args):
    arg = ",".join(f"{k}={v}" for k, v in args.items())
    return load_config_file(f"configs/dfew.py:{arg}")


def _count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_mvit_v2_s_block_config_matches_torchvision():
    blocks = mvit_v2_s_blocks()
    assert len(blocks) == 16
    assert [b.num_heads for b in blocks] == [1, 2, 2, 4] + [4] * 10 + [8, 8]
    assert [b.input_channels for b in blocks] == [96, 96, 192, 192] + [384] * 11 + [768]
    assert [b.output_channels for b in blocks] == [96, 192, 192] + [384] * 11 + [768, 768]
    strided = [i for i, b in enumerate(blocks) if b.stride_q != (1, 1, 1)]
    assert strided == [1, 3, 14] and all(blocks[i].stride_q == (1, 2, 2) for i in strided)
    kv = [b.stride_kv for b in blocks]
    assert kv == [(1, 8, 8)] + [(1, 4, 4)] * 2 + [(1, 2, 2)] * 11 + [(1, 1, 1)] * 2
    assert all(b.kernel_q == b.kernel_kv == (3, 3, 3) for b in blocks)
    assert stage_starts(blocks) == [1, 3, 14]


def test_released_10_block_config():
    blocks = mvit_v2_xs_blocks()
    assert [b.num_heads for b in blocks] == [1, 2, 2, 4, 4, 4, 4, 4, 8, 8]
    assert [b.output_channels for b in blocks] == [96, 192, 192, 384, 384, 384, 384, 384, 768, 768]
    assert [b.stride_kv for b in blocks] == [(1, 8, 8), (1, 4, 4), (1, 4, 4)] + [(1, 2, 2)] * 5 + [
        (1, 1, 1)
    ] * 2
    assert stage_starts(blocks) == [1, 3, 8]
    with pytest.raises(ValueError, match="at least one block"):
        block_configs((1, 0))


def test_reference_shape_table():
    """docs/reference-ifdd.md §1: per-block token shapes, stage outputs, IFDD wiring at 16×224²."""
    trunk = MViT(mvit_v2_xs_blocks())
    variables = jax.eval_shape(lambda x: trunk.init(RNGS, x), FULL)
    blocks = []

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if isinstance(context.module, MultiscaleBlock) and context.method_name == "__call__":
            blocks.append((out[0].shape, out[1]))
        return out

    def forward(v, x):
        with nn.intercept_methods(record):
            return trunk.apply(v, x, return_tokens=True)

    levels, tokens = jax.eval_shape(forward, variables, FULL)
    expected_blocks = (
        [((1, 25089, 96), (8, 56, 56))]
        + [((1, 6273, 192), (8, 28, 28))] * 2
        + [((1, 1569, 384), (8, 14, 14))] * 5
        + [((1, 393, 768), (8, 7, 7))] * 2
    )
    assert blocks == expected_blocks
    assert [lv.shape for lv in levels] == [
        (1, 8, 56, 56, 96),
        (1, 8, 28, 28, 192),
        (1, 8, 14, 14, 384),
        (1, 8, 7, 7, 768),
    ]
    assert tokens.shape == (1, 393, 768)

    model = build_model(_config(model="ifdd_3dvit", flavor="reference"))
    variables = jax.eval_shape(lambda x: model.init(RNGS, x), FULL)
    calls = {}

    def record_top(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__" and len(context.module.path) == 1:
            calls[context.module.path[0]] = out
        return out

    def forward_model(v, x):
        with nn.intercept_methods(record_top):
            return model.apply(v, x)

    out = jax.eval_shape(forward_model, variables, FULL)
    assert [lv.shape for lv in calls["trunk"]] == [(1, 8, 14, 14, 384), (1, 8, 7, 7, 768)]
    assert calls["pyramid"].shape == (8, 7, 7, 768)  # (B·T, 7, 7, 768) = X as [1, 392, 768]
    assert out["static"].shape == out["dynamic"].shape == (1, 4, 7, 7, 768)  # 196 tokens each
    assert out["feature"].shape == (1, 768)
    assert out["logits"].shape == (1, 7)
    assert out["pooled_x"].shape == (1, 4, 7, 7, 768)
    p = variables["params"]
    assert p["pyramid"]["level0_conv"]["kernel"].shape == (3, 3, 384, 384)
    assert "level1_conv" not in p["pyramid"]
    assert p["pyramid"]["cat_conv"]["kernel"].shape == (1, 1, 1152, 768)
    assert p["ladm"]["project_compress"].shape == (196, 1)


def test_reference_parameter_counts():
    """The released model has 37.577 M params: embed 0.042, blocks 23.45, PAN 1.327, CatConv 0.885,
    WaveLifts 11.866, head 0.005 (docs/reference-ifdd.md §2)."""
    model = build_model(_config(model="ifdd_3dvit", flavor="reference"))
    p = jax.eval_shape(lambda x: model.init(RNGS, x), FULL)["params"]
    total = _count(p)
    assert abs(total - 37.577e6) / 37.577e6 < 0.001
    trunk = p["trunk"]
    assert _count(trunk["conv_proj"]) == 96 * 3 * 3 * 7 * 7 + 96
    blocks = sum(_count(v) for k, v in trunk.items() if k.startswith("blocks_"))
    assert abs(blocks / 1e6 - 23.45) < 0.01
    assert _count(p["pyramid"]["level0_conv"]) == 384 * 384 * 9
    assert _count(p["pyramid"]["cat_conv"]) == 1152 * 768
    assert abs((_count(p["issm"]) + _count(p["ladm"])) / 1e6 - 11.866) < 0.001
    assert _count(p["head"]) == 768 * 7 + 7
    # Table lengths are those of torchvision/IFDD at 16×224².
    attn0, attn1, attn8 = (trunk[f"blocks_{i}"]["attn"] for i in (0, 1, 8))
    assert attn0["rel_pos_h"].shape == (111, 96) and attn0["rel_pos_t"].shape == (15, 96)
    assert attn1["rel_pos_w"].shape == (55, 96)
    assert attn8["rel_pos_h"].shape == (27, 96)
    assert attn0["pool_q"]["pool"]["kernel"].shape == (3, 3, 3, 1, 96)


def test_baseline_mvit_parameter_count():
    model = build_model(_config(model="baseline_mvit"))
    p = jax.eval_shape(lambda x: model.init(RNGS, x), FULL)["params"]
    assert abs(_count(p) / 1e6 - 23.41) / 23.41 < 0.01
    assert set(p) == {"trunk", "head"}


def _block_token_shapes(model, variables, clips):
    """(tokens shape, grid) after every MultiscaleBlock of `model` (abstractly evaluated)."""
    shapes = []

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if isinstance(context.module, MultiscaleBlock) and context.method_name == "__call__":
            shapes.append((out[0].shape, tuple(out[1])))
        return out

    def forward(v, x):
        with nn.intercept_methods(record):
            return model.apply(v, x)

    jax.eval_shape(forward, variables, clips)
    return shapes


def test_paper_flavor_uses_three_stages_to_14():
    config = _config(model="ifdd_3dvit", flavor="paper")
    model = build_model(config)
    variables = jax.eval_shape(lambda x: model.init(RNGS, x), FULL)
    out = jax.eval_shape(lambda v, x: model.apply(v, x), variables, FULL)
    assert out["static"].shape == (1, 4, 14, 14, 768)  # C_S: the appendix's 768
    p = variables["params"]
    blocks = sorted(k for k in p["trunk"] if k.startswith("blocks_"))
    assert blocks == [f"blocks_{i}" for i in range(8)]
    assert {"level0_conv", "level1_conv", "level2_conv"} <= set(p["pyramid"])
    assert p["pyramid"]["level0_conv"]["kernel"].shape == (3, 3, 96, 96)


@pytest.mark.parametrize("model", ["ifdd_3dvit", "baseline_mvit"])
def test_trunk_stochastic_depth_comes_from_the_config(model):
    """config.model.trunk_drop_path sets the MViT trunk's last-block rate (the released 0.2 by
    default and for configs saved without the field); 0 makes training-mode blocks deterministic."""
    config = _config(model=model, flavor="reference")
    assert build_model(config).trunk.drop_path == 0.2
    del config.model["trunk_drop_path"]
    assert build_model(config).trunk.drop_path == 0.2
    config.model.trunk_drop_path = 0.0
    trunk = build_model(config).trunk
    assert trunk.drop_path == 0.0
    x = jax.random.normal(jax.random.key(0), (2, 4, 32, 32, 3))
    tiny = trunk.clone(blocks=trunk.blocks[:2], stages=None, input_size=(4, 32, 32))
    variables = tiny.init(RNGS, x)
    run = lambda key: tiny.apply(variables, x, train=True, rngs={"dropout": key})[-1]  # noqa: E731
    np.testing.assert_array_equal(run(jax.random.key(1)), run(jax.random.key(2)))


def test_paper_flavor_has_no_class_token():
    """Appendix: "we also remove the class token of MViT-S". No parameter, and every block carries
    exactly the t·h·w grid tokens (8·56², 8·28², 8·14²: no extra row); the reference flavor keeps
    the released class token (1 + t·h·w rows, docs/reference-ifdd.md §1)."""
    paper = build_model(_config(model="ifdd_3dvit", flavor="paper"))
    variables = jax.eval_shape(lambda x: paper.init(RNGS, x), FULL)
    assert "class_token" not in variables["params"]["trunk"]
    shapes = _block_token_shapes(paper, variables, FULL)
    expected = (
        [((1, 8 * 56 * 56, 96), (8, 56, 56))]
        + [((1, 8 * 28 * 28, 192), (8, 28, 28))] * 2
        + [((1, 8 * 14 * 14, 384), (8, 14, 14))] * 5
    )
    assert shapes == expected

    reference = build_model(_config(model="ifdd_3dvit", flavor="reference"))
    variables = jax.eval_shape(lambda x: reference.init(RNGS, x), FULL)
    assert variables["params"]["trunk"]["class_token"].shape == (96,)
    assert _block_token_shapes(reference, variables, FULL)[0][0] == (1, 1 + 8 * 56 * 56, 96)
    # The vanilla baseline keeps MViT's class token in both flavors (see ifdd_3dvit.py).
    baseline = build_model(_config(model="baseline_mvit", flavor="paper"))
    variables = jax.eval_shape(lambda x: baseline.init(RNGS, x), FULL)
    assert variables["params"]["trunk"]["class_token"].shape == (96,)


def _np_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("impl", ["dense", "chunked"])
@pytest.mark.parametrize("class_token", [False, True])
def test_attention_without_pooling_matches_the_formula(class_token, impl):
    """MViTv2 attention with 1×1×1 kernels and strides (no pooling) and zero relative-position
    tables is, per head, softmax(q kᵀ / sqrt(d)) v + q·[grid row] ("residual pooling" adds the
    query to the grid tokens only), then the output Linear. Without a class token the sums run over
    the grid tokens alone; with it, row/column 0 is the class token and it enters every grid
    token's softmax."""
    thw, c, heads = (2, 2, 2), 8, 2
    n = int(np.prod(thw)) + (1 if class_token else 0)
    x = np.asarray(jax.random.normal(jax.random.key(0), (1, n, c)))
    ones = (1, 1, 1)
    attn = MultiscaleAttention(c, heads, ones, ones, ones, ones, (3, 3), class_token, impl)
    params = attn.init(jax.random.key(1), x, thw)["params"]
    assert not any(k.startswith("pool_") for k in params)
    params = {**params, **{k: jnp.zeros_like(params[k]) for k in params if k.startswith("rel_pos")}}
    got, got_thw = attn.apply({"params": params}, x, thw)
    assert tuple(got_thw) == thw

    qkv = x[0] @ np.asarray(params["qkv"]["kernel"]) + np.asarray(params["qkv"]["bias"])
    d = c // heads
    out = np.zeros((n, c))
    for h in range(heads):  # torchvision's qkv layout: [3, heads, head_dim]
        q = qkv[:, h * d : (h + 1) * d]
        k = qkv[:, c + h * d : c + (h + 1) * d]
        v = qkv[:, 2 * c + h * d : 2 * c + (h + 1) * d]
        o = _np_softmax(q @ k.T / np.sqrt(d)) @ v
        first_grid_row = 1 if class_token else 0
        o[first_grid_row:] += q[first_grid_row:]
        out[:, h * d : (h + 1) * d] = o
    expected = out @ np.asarray(params["project"]["kernel"]) + np.asarray(params["project"]["bias"])
    np.testing.assert_allclose(np.asarray(got)[0], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("class_token", [False, True])
def test_frame_chunked_attention_equals_the_dense_form(class_token):
    """The per-frame attention core (CPU) against the one-shot form (accelerators): the same
    outputs and the same gradients for q, k, v and the three tables, on grids where queries and
    keys differ in every axis (so a wrong frame's temporal row or a misplaced class column
    shows), with logits large enough that the softmax's shift matters."""
    q_thw, k_thw, heads, d = (3, 4, 5), (3, 2, 3), 2, 8
    lead = 1 if class_token else 0
    keys = jax.random.split(jax.random.key(0), 6)
    # Logits of std ~30 (grid keys) and ~300 (the class key): exp overflows float32 unless the
    # shift takes the largest logit, the class column's included.
    q = 10.0 * jax.random.normal(keys[0], (2, heads, lead + int(np.prod(q_thw)), d))
    k = 3.0 * jax.random.normal(keys[1], (2, heads, lead + int(np.prod(k_thw)), d))
    k = k.at[:, :, :lead].multiply(10.0)
    v = jax.random.normal(keys[2], k.shape)
    tables = tuple(jax.random.normal(key, (n, d)) for key, n in zip(keys[3:], (5, 9, 9)))
    args = (q, k, v, tables)

    def run(form, q, k, v, tables):
        return form(q, k, v, q_thw, k_thw, tables, class_token)

    dense = jax.jit(lambda *a: run(dense_attention, *a))
    chunked = jax.jit(lambda *a: run(frame_chunked_attention, *a))
    np.testing.assert_allclose(chunked(*args), dense(*args), rtol=1e-5, atol=1e-5)
    cotangent = jax.random.normal(jax.random.key(1), q.shape)
    grads = [jax.vjp(f, *args)[1](cotangent) for f in (dense, chunked)]
    for want, got in zip(*(jax.tree.leaves(g) for g in grads)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    ones = (1, 1, 1)
    unknown = MultiscaleAttention(d, 1, ones, ones, ones, ones, (3, 3), True, "flash")
    with pytest.raises(ValueError, match="attention impl"):
        unknown.init(RNGS, jnp.zeros((1, 5, d)), (1, 2, 2))


def test_rel_pos_index_matches_torchvision_formula():
    def float_formula(q, k):  # torchvision's arithmetic, exact for these power-of-two ratios
        qr, kr = max(k / q, 1.0), max(q / k, 1.0)
        d = np.arange(q)[:, None] * qr - (np.arange(k)[None, :] + (1.0 - k)) * kr
        return d.astype(np.int64)

    for q, k in [(56, 7), (28, 14), (14, 14), (7, 14), (8, 8), (4, 8), (1, 1), (2, 1)]:
        idx = rel_pos_index(q, k)
        np.testing.assert_array_equal(idx, float_formula(q, k))
        assert idx.min() >= 0 and idx.max() <= 2 * max(q, k) - 2
    # A non-power-of-two ratio: the exact value, where float32 arithmetic would truncate 6.999.
    assert rel_pos_index(3, 7)[2, 6] == (2 * 7 + 0 * 3) // 3


def test_linear_resize_matrix_matches_pytorch_rule():
    # Upsampling 3 -> 5 with align_corners=False: source positions (i + 0.5)·0.6 - 0.5.
    m = linear_resize_matrix(3, 5)
    np.testing.assert_allclose(m.sum(axis=1), 1.0)
    table = np.array([0.0, 10.0, 20.0])
    np.testing.assert_allclose(m @ table, [0.0, 4.0, 10.0, 16.0, 20.0], atol=1e-12)
    np.testing.assert_allclose(linear_resize_matrix(4, 4), np.eye(4))


def _tiny_mvit(**kw):
    # Two stages of one and two blocks, 16 channels: every block type (plain, q-stride + widening).
    blocks = block_configs((1, 2), dims=(8, 16), heads=(1, 2), kv_stride=(1, 4, 4))
    return MViT(blocks, **kw)


def test_tiny_mvit_forward_backward_and_other_input_sizes():
    x = jax.random.normal(jax.random.key(0), (2, 8, 32, 32, 3))
    model = _tiny_mvit(input_size=(8, 32, 32))
    variables = jax.jit(lambda x: model.init(RNGS, x))(x)
    levels, tokens = jax.jit(lambda v, x: model.apply(v, x, return_tokens=True))(variables, x)
    assert [lv.shape for lv in levels] == [(2, 4, 8, 8, 8), (2, 4, 4, 4, 16)]
    assert tokens.shape == (2, 1 + 4 * 4 * 4, 16)
    # Stage 0 is not normalised; the last stage is the final LayerNorm's output.
    np.testing.assert_allclose(np.asarray(levels[1]).mean(-1), 0.0, atol=1e-5)

    def loss(p, x):
        out = model.apply({"params": p}, x, train=True, rngs={"dropout": jax.random.key(2)})
        return sum(jnp.sum(lv**2) for lv in out)

    grads = jax.jit(jax.grad(loss))(variables["params"], x)
    flat = jax.tree_util.tree_leaves_with_path(grads)
    zero = [jax.tree_util.keystr(k) for k, g in flat if not np.any(np.asarray(g))]
    assert not zero, f"no gradient reaches {zero}"
    assert all(np.all(np.isfinite(np.asarray(g))) for _, g in flat)
    # The same parameters serve another clip size: the tables are interpolated at run time.
    other = jax.jit(model.apply)(variables, jax.random.normal(jax.random.key(1), (1, 4, 48, 48, 3)))
    assert [lv.shape for lv in other] == [(1, 2, 12, 12, 8), (1, 2, 6, 6, 16)]
    assert all(np.all(np.isfinite(np.asarray(lv))) for lv in other)


def test_class_token_and_rel_pos_change_the_output():
    x = jax.random.normal(jax.random.key(0), (1, 4, 32, 32, 3))
    model = _tiny_mvit()
    v = jax.jit(lambda x: model.init(RNGS, x))(x)
    apply = jax.jit(model.apply)
    base = apply(v, x)[-1]
    zeroed = jax.tree_util.tree_map_with_path(
        lambda path, a: jnp.zeros_like(a) if "rel_pos" in jax.tree_util.keystr(path) else a, v
    )
    assert not np.allclose(apply(zeroed, x)[-1], base)
    # The class token is a key of every attention: moving it moves the grid tokens' output, which
    # is why dropping its output row (reference) is not the same as having none (paper).
    moved = {"params": {**v["params"], "class_token": v["params"]["class_token"] + 1.0}}
    assert not np.allclose(apply(moved, x)[-1], base)
    # The stage selection is only a view: the same parameters for any requested stages.
    last_only = _tiny_mvit(stages=(1,))
    np.testing.assert_allclose(jax.jit(last_only.apply)(v, x)[0], base, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="out of range"):
        _tiny_mvit(stages=(2,)).init(RNGS, x)


@pytest.mark.parametrize("class_token", [False, True])
def test_tiny_mvit_is_the_same_with_either_attention_form(class_token):
    """A whole tiny trunk with pooled queries and keys, run with the dense and the chunked
    attention core on the same parameters: the same stage outputs and parameter gradients."""
    x = jax.random.normal(jax.random.key(0), (2, 4, 32, 32, 3))
    dense = _tiny_mvit(class_token=class_token, attention_impl="dense")
    chunked = _tiny_mvit(class_token=class_token, attention_impl="chunked")
    variables = jax.jit(lambda x: dense.init(RNGS, x))(x)

    def loss(model, p):
        return sum(jnp.sum(jnp.sin(lv)) for lv in model.apply({"params": p}, x))

    for want, got in zip(jax.jit(dense.apply)(variables, x), jax.jit(chunked.apply)(variables, x)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    grad = lambda model: jax.jit(jax.grad(lambda p: loss(model, p)))(variables["params"])  # noqa: E731
    for want, got in zip(jax.tree.leaves(grad(dense)), jax.tree.leaves(grad(chunked))):
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)


def test_tiny_mvit_without_class_token():
    x = jax.random.normal(jax.random.key(0), (2, 4, 32, 32, 3))
    model = _tiny_mvit(class_token=False)
    variables = jax.jit(lambda x: model.init(RNGS, x))(x)
    assert "class_token" not in variables["params"]
    levels, tokens = jax.jit(lambda v, x: model.apply(v, x, return_tokens=True))(variables, x)
    assert [lv.shape for lv in levels] == [(2, 2, 8, 8, 8), (2, 2, 4, 4, 16)]
    assert tokens.shape == (2, 2 * 4 * 4, 16)  # grid tokens only
    np.testing.assert_allclose(np.asarray(levels[1]).reshape(tokens.shape), tokens, atol=1e-6)
    # The clips do not interact: each sample's output is that of the sample alone.
    alone = jax.jit(model.apply)(variables, x[1:])
    np.testing.assert_allclose(alone[-1][0], levels[-1][1], rtol=1e-5, atol=1e-5)


def test_trunk_and_pyramid_init_follow_torchvision_and_pytorch():
    """torchvision's MViT init: Linear weights trunc_normal_(std=0.02) (PyTorch's bounds a=-2,
    b=2 are absolute, i.e. ±100σ: a plain N(0, 0.02²)), zero bias. The convolutions it does not
    re-initialise (patch embedding) and the released pyramid convs keep PyTorch's default
    U(±1/sqrt(fan_in)) for weight and bias, fan_in = in_channels · kernel volume."""
    config = _config(model="ifdd_3dvit", flavor="reference")
    config.input.num_frames, config.input.image_size = 8, 64
    model = build_model(config)
    p = jax.jit(lambda x: model.init(RNGS, x))(jnp.zeros((1, 8, 64, 64, 3)))["params"]
    fc1 = np.asarray(p["trunk"]["blocks_4"]["mlp_fc1"]["kernel"])  # 384 × 1536 values
    np.testing.assert_allclose(fc1.std(), 0.02, rtol=0.02)
    # A normal puts 4.55 % of its mass beyond 2σ; truncating at ±2σ would leave none there.
    np.testing.assert_allclose(np.mean(np.abs(fc1) > 0.04), 0.0455, atol=0.005)
    # 589 824 draws reach past 4σ (P = 6.3e-5 each, ~37 expected) but not past the 5σ cap of
    # trunc_normal_init (layers.py), and in particular never the absolute bound 2 (100σ) itself.
    assert 4 * 0.02 < np.abs(fc1).max() <= 5 * 0.02 * (1 + 1e-6)
    assert not np.any(np.asarray(p["trunk"]["blocks_4"]["mlp_fc1"]["bias"]))
    head = np.asarray(p["head"]["logits"]["kernel"])  # trunc_normal_(std=0.01) in the release
    np.testing.assert_allclose(head.std(), 0.01, rtol=0.15)

    embed_bound = 1.0 / np.sqrt(3 * 3 * 7 * 7)  # Conv3d(3 -> 96, kernel (3, 7, 7))
    for leaf in ("kernel", "bias"):
        value = np.asarray(p["trunk"]["conv_proj"][leaf])
        assert np.abs(value).max() <= embed_bound and np.abs(value).max() > 0.9 * embed_bound
    np.testing.assert_allclose(
        np.asarray(p["trunk"]["conv_proj"]["kernel"]).std(), embed_bound / np.sqrt(3.0), rtol=0.05
    )
    for name, fan_in in (("level0_conv", 9 * 384), ("cat_conv", 1152)):
        kernel = np.asarray(p["pyramid"][name]["kernel"])
        bound = 1.0 / np.sqrt(fan_in)
        assert np.abs(kernel).max() <= bound
        np.testing.assert_allclose(kernel.std(), bound / np.sqrt(3.0), rtol=0.02)
        assert set(p["pyramid"][name]) == {"kernel"}  # bias=False in the release


def test_reference_mafw_32_frames_give_8_token_frames():
    """The released MAFW model (clip_duration 32): embedNet_light strides time by 2 (input_time >
    8): floor((32 + 2·1 - 3) / 2) + 1 = 16 frames, then AvgPool3d((2, 1, 1)) (input_time == 32):
    8. So T_X = 8, the FPN's hard-coded T, and the temporal tables are those of 8 token frames
    (rel_pos_t 2·8 - 1 = 15 rows). The paper flavor keeps torchvision's embedding: T_X = 16."""
    clips = jax.ShapeDtypeStruct((1, 32, 224, 224, 3), jnp.float32)
    config = _config(model="ifdd_3dvit", flavor="reference")
    config.input.num_frames = 32
    model = build_model(config)
    variables = jax.eval_shape(lambda x: model.init(RNGS, x), clips)
    calls = {}

    def record_top(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__" and len(context.module.path) == 1:
            calls[context.module.path[0]] = out
        return out

    def forward(v, x):
        with nn.intercept_methods(record_top):
            return model.apply(v, x)

    out = jax.eval_shape(forward, variables, clips)
    assert [lv.shape for lv in calls["trunk"]] == [(1, 8, 14, 14, 384), (1, 8, 7, 7, 768)]
    assert calls["pyramid"].shape == (8, 7, 7, 768)  # X: T = 8
    assert out["static"].shape == (1, 4, 7, 7, 768)
    p = variables["params"]
    assert p["trunk"]["blocks_0"]["attn"]["rel_pos_t"].shape == (15, 96)
    assert p["ladm"]["project_compress"].shape == (4 * 49, 1)
    # 8 and 16 frames also give 8 token frames (time stride 1 at 8 frames).
    for frames in (8, 16):
        config.input.num_frames = frames
        c = jax.ShapeDtypeStruct((1, frames, 224, 224, 3), jnp.float32)
        m = build_model(config)
        o = jax.eval_shape(lambda x, m=m: m.apply(m.init(RNGS, x), x), c)
        assert o["static"].shape == (1, 4, 7, 7, 768), frames
    paper = _config(model="ifdd_3dvit", flavor="paper")
    paper.input.num_frames = 32
    m = build_model(paper)
    o = jax.eval_shape(lambda x: m.apply(m.init(RNGS, x), x), clips)
    assert o["static"].shape == (1, 8, 14, 14, 768)


def test_reference_32_frame_clips_run_at_tiny_size():
    config = _config(model="ifdd_3dvit", flavor="reference")
    config.input.num_frames, config.input.image_size = 32, 32
    model = build_model(config)
    x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 32, 3))
    variables = jax.jit(lambda x: model.init(RNGS, x))(x)
    out = jax.jit(model.apply)(variables, x)
    assert out["static"].shape == (2, 4, 1, 1, 768)  # T_X = 8 -> 4 per group
    assert out["logits"].shape == (2, 7)
    assert np.all(np.isfinite(np.asarray(out["logits"])))
    # AvgPool3d((2, 1, 1)) after the Conv3d: block 0 receives the class token and then the mean
    # of each pair of the convolution's 16 token frames.
    seen = {}

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__" and context.module.name == "conv_proj":
            seen["conv"] = out
        if context.method_name == "__call__" and context.module.name == "blocks_0":
            seen["tokens"] = args[0]
        return out

    with nn.intercept_methods(record):
        model.apply(variables, x)
    conv = np.asarray(seen["conv"])
    assert conv.shape == (2, 16, 8, 8, 96)
    pairs = 0.5 * (conv[:, 0::2] + conv[:, 1::2])
    tokens = np.asarray(seen["tokens"])
    assert tokens.shape == (2, 1 + 8 * 8 * 8, 96)
    np.testing.assert_allclose(tokens[:, 1:], pairs.reshape(2, -1, 96), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("stride", [(1, 1, 1), (1, 2, 2), (2, 4, 4)])
def test_shifted_depthwise_conv3d_equals_the_grouped_convolution(stride):
    x = jax.random.normal(jax.random.key(0), (2, 5, 9, 8, 6))
    shifted = DepthwiseConv3d((3, 3, 3), stride, impl="shifted")
    v = shifted.init(RNGS, x)
    grouped = DepthwiseConv3d((3, 3, 3), stride, impl="grouped")
    out = shifted.apply(v, x)
    np.testing.assert_allclose(out, grouped.apply(v, x), rtol=1e-5, atol=1e-5)
    expected = tuple((n - 1) // s + 1 for n, s in zip(x.shape[1:4], stride))
    assert out.shape == (2,) + expected + (6,)
    assert v["params"]["kernel"].shape == (3, 3, 3, 1, 6)


def test_auto_depthwise_form_on_cpu_covers_every_pooling_of_a_real_clip():
    """On CPU "auto" must take the shifted form for every pooling of MViT-S at 16x224² even at
    batch 1 (the last block pools [8 heads, 8, 7, 7, 96]: XLA's grouped convolution took 100 ms
    there against 0.45 ms), and keeps the grouped form for the tiny maps of tests."""
    module = DepthwiseConv3d((3, 3, 3), (1, 1, 1))

    def primitives(shape):
        x = jnp.zeros(shape)
        v = jax.eval_shape(lambda: module.init(RNGS, x))
        return {e.primitive.name for e in jax.make_jaxpr(module.apply)(v, x).jaxpr.eqns}

    assert jax.default_backend() == "cpu"
    assert "conv_general_dilated" not in primitives((8, 8, 7, 7, 96))
    assert "conv_general_dilated" in primitives((2, 2, 4, 4, 8))


@pytest.mark.parametrize("kernel,stride", [((1, 3, 3), (1, 2, 2)), ((3, 3, 3), (2, 2, 2))])
def test_max_pool3d_equals_reduce_window_in_values_and_gradients(kernel, stride):
    """The shifted-window max pooling (CPU) against flax's reduce_window max pooling: the same
    values, and the same gradients also where a window holds ties (the first maximum in scan
    order takes the gradient on both sides)."""
    x = jax.random.normal(jax.random.key(0), (2, 5, 9, 8, 6))
    x = x.at[:, :, :4, :4].set(0.5)  # plateaus: every window there is all ties
    pad = tuple((k // 2, k // 2) for k in kernel)

    def reference(x):
        return nn.max_pool(x, kernel, strides=stride, padding=pad)

    def ours(x):
        return max_pool3d(x, kernel, stride)

    cotangent = jax.random.normal(jax.random.key(1), reference(x).shape)
    np.testing.assert_array_equal(ours(x), reference(x))
    grad = lambda f: jax.vjp(f, x)[1](cotangent)[0]  # noqa: E731
    np.testing.assert_array_equal(grad(ours), grad(reference))


@pytest.mark.parametrize("stride", [(1, 1, 1), (1, 2, 2), (2, 4, 4)])
def test_shifted_depthwise_conv3d_gradients_equal_the_grouped_convolution(stride):
    """The shifted form's hand-written gradient (input and kernel) against autodiff of XLA's
    grouped convolution."""
    x = jax.random.normal(jax.random.key(0), (2, 5, 9, 8, 6))
    shifted = DepthwiseConv3d((3, 3, 3), stride, impl="shifted")
    grouped = DepthwiseConv3d((3, 3, 3), stride, impl="grouped")
    v = shifted.init(RNGS, x)
    g = jax.random.normal(jax.random.key(1), shifted.apply(v, x).shape)

    def grads(module):
        _, vjp = jax.vjp(lambda v, x: module.apply(v, x), v, x)
        return vjp(g)

    (dv_s, dx_s), (dv_g, dx_g) = grads(shifted), grads(grouped)
    np.testing.assert_allclose(dx_s, dx_g, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        dv_s["params"]["kernel"], dv_g["params"]["kernel"], rtol=1e-5, atol=1e-4
    )
