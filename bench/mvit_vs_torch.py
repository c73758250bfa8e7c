"""Our MViTv2-S against torchvision's `mvit_v2_s` on the same device: numerical agreement of the
trunk with converted weights, then the training-step and inference throughput of both.

    python bench/mvit_vs_torch.py --batch=8 --dtype=bfloat16

Both sides run the same network (16 blocks, 16x224x224 clips, cls-token head to `--classes`),
the same loss (cross entropy) and the same optimizer (AdamW); PyTorch runs eager, as the authors'
code does (`--torch_compile` adds a `torch.compile` row). `--dtype=bfloat16` is autocast on the
PyTorch side and, as in our trainer, bf16 compute with float32 master parameters on ours. Prints
`parity max abs:` (float32, TF32 off on both sides, batch 1), then one `train clips/s` and
`eval clips/s` line per framework and the ratio. Needs the optional torch extra.
"""

from __future__ import annotations

import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
from absl import app, flags

from ifdd_jax.convert import torchvision_mvit
from ifdd_jax.models.mvit import MViT, mvit_v2_s_blocks

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch", 8, "Batch size of the timed steps.")
flags.DEFINE_integer("steps", 10, "Timed steps (after two warm-up steps).")
flags.DEFINE_integer("frames", 16, "Clip length T.")
flags.DEFINE_integer("size", 224, "Clip height and width.")
flags.DEFINE_integer("classes", 7, "Classes of the head.")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
flags.DEFINE_bool("torch_compile", False, "Also time torch.compile(model).")
flags.DEFINE_bool("parity", True, "Check the converted trunk against torchvision first.")


class MViTClassifier(nn.Module):
    """torchvision's MViT layout: trunk -> final LayerNorm -> cls token -> Dropout -> Linear."""

    num_classes: int
    input_size: tuple

    @nn.compact
    def __call__(self, clips: jax.Array, *, train: bool) -> jax.Array:
        trunk = MViT(mvit_v2_s_blocks(), input_size=self.input_size, name="trunk")
        _, tokens = trunk(clips, train=train, return_tokens=True)
        x = nn.Dropout(0.5, deterministic=not train)(tokens[:, 0])
        return nn.Dense(self.num_classes, name="head")(x).astype(jnp.float32)


def timed(fn, steps: int, sync) -> float:
    fn(), fn()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    sync()
    return time.perf_counter() - start


def parity(model: torch.nn.Module, t: int, s: int) -> float:
    """Max abs difference of the trunks' final normalised tokens, float32 (TF32 off), batch 1."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    x = np.random.default_rng(0).uniform(0, 1, (1, 3, t, s, s)).astype(np.float32)
    expected = torchvision_mvit.trunk_tokens(model, x)
    ours, params, _ = torchvision_mvit.converted_trunk(model, mvit_v2_s_blocks(), (t, s, s))
    with jax.default_matmul_precision("highest"):
        _, got = jax.jit(lambda v, c: ours.apply(v, c, return_tokens=True))(
            params, x.transpose(0, 2, 3, 4, 1)
        )
    return float(np.max(np.abs(np.asarray(got) - expected)))


def bench_jax(b: int, t: int, s: int, k: int, dtype: str, steps: int):
    model = MViTClassifier(k, (t, s, s))
    compute = jnp.dtype(dtype)

    def apply(p, c, **kwargs):
        # As the trainer computes in bf16: float32 parameters cast per step, bf16 activations
        # (flax promotes mixed inputs to float32, so casting the clips alone is not enough).
        p = jax.tree.map(lambda x: x.astype(compute), p)
        return model.apply({"params": p}, c.astype(compute), **kwargs)

    rng = np.random.default_rng(0)
    clips = jnp.asarray(rng.random((b, t, s, s, 3), dtype=np.float32))
    labels = jnp.asarray(rng.integers(0, k, b))
    params = jax.jit(lambda c: model.init(jax.random.key(0), c, train=False))(clips[:1])["params"]
    tx = optax.adamw(1e-4, weight_decay=0.05)
    opt = tx.init(params)

    @jax.jit
    def eval_step(p, c):
        return apply(p, c, train=False)

    def loss_fn(p, c, y, key):
        logits = apply(p, c, train=True, rngs={"dropout": key})
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def train_step(p, o, c, y, key):
        key, sub = jax.random.split(key)
        loss, grads = jax.value_and_grad(loss_fn)(p, c, y, sub)
        updates, o = tx.update(grads, o, p)
        return optax.apply_updates(p, updates), o, key, loss

    train_step = jax.jit(train_step, donate_argnums=(0, 1))
    state = [params, opt, jax.random.key(1)]

    def one_train():
        state[0], state[1], state[2], _ = train_step(state[0], state[1], clips, labels, state[2])

    start = time.perf_counter()
    one_train()
    jax.block_until_ready(state)
    compile_s = time.perf_counter() - start
    train_s = timed(one_train, steps, lambda: jax.block_until_ready(state))
    out = []
    eval_s = timed(
        lambda: out.append(eval_step(state[0], clips)), steps, lambda: jax.block_until_ready(out)
    )
    return compile_s, b * steps / train_s, b * steps / eval_s


def bench_torch(
    model: torch.nn.Module, b: int, t: int, s: int, k: int, dtype: str, steps: int, device: str
):
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    clips = torch.rand(b, 3, t, s, s, device=device)
    labels = torch.randint(0, k, (b,), device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    autocast = torch.autocast(
        device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=dtype == "bfloat16"
    )
    sync = (lambda: torch.cuda.synchronize()) if device.startswith("cuda") else (lambda: None)

    def one_train():
        model.train()
        with autocast:
            loss = torch.nn.functional.cross_entropy(model(clips), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def one_eval():
        model.eval()
        with torch.no_grad(), autocast:
            model(clips)

    start = time.perf_counter()
    one_train()
    sync()
    first_s = time.perf_counter() - start
    return (
        first_s,
        b * steps / timed(one_train, steps, sync),
        b * steps / timed(one_eval, steps, sync),
    )


def main(argv) -> None:
    del argv
    b, t, s, k = FLAGS.batch, FLAGS.frames, FLAGS.size, FLAGS.classes
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(
        f"jax {jax.__version__} on {jax.devices()[0].device_kind}; torch {torch.__version__} on "
        f"{torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}",
        flush=True,
    )
    print(f"MViTv2-S, input [{b}, {t}, {s}, {s}, 3], {k} classes, {FLAGS.dtype}", flush=True)
    model = torchvision_mvit.build(mvit_v2_s_blocks(), (t, s, s), num_classes=k).to(device)
    if FLAGS.parity:
        print(f"parity max abs: {parity(model, t, s):.2e}", flush=True)
    rows = {}
    compile_s, tr, ev = bench_jax(b, t, s, k, FLAGS.dtype, FLAGS.steps)
    rows["jax"] = (tr, ev)
    print(
        f"jax:   first step {compile_s:.1f} s, train clips/s: {tr:.2f}, eval clips/s: {ev:.2f}",
        flush=True,
    )
    first_s, tr, ev = bench_torch(model, b, t, s, k, FLAGS.dtype, FLAGS.steps, device)
    rows["torch"] = (tr, ev)
    print(
        f"torch: first step {first_s:.1f} s, train clips/s: {tr:.2f}, eval clips/s: {ev:.2f}",
        flush=True,
    )
    if FLAGS.torch_compile:
        first_s, tr, ev = bench_torch(
            torch.compile(model), b, t, s, k, FLAGS.dtype, FLAGS.steps, device
        )
        rows["torch.compile"] = (tr, ev)
        print(
            f"torch.compile: first step {first_s:.1f} s, train clips/s: {tr:.2f}, "
            f"eval clips/s: {ev:.2f}",
            flush=True,
        )
    for name, (tr, ev) in rows.items():
        if name != "jax":
            jax_train, jax_eval = rows["jax"]
            print(f"jax / {name}: train {jax_train / tr:.2f}x, eval {jax_eval / ev:.2f}x")


if __name__ == "__main__":
    app.run(main)
