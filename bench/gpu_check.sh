#!/usr/bin/env bash
# Issue 13's GPU rows in one command, for a machine lent for a few minutes (no network, PyTorch
# and JAX installed, no TensorFlow):
#
#   bash bench/gpu_check.sh RELEASED_DIR [extra bench/vs_released.py arguments]
#
# RELEASED_DIR is a checkout of the authors' repository (CyberPegasus/IFDD), carried as plain
# files. Pure-Python packages the machine lacks go in .whl/ beside this checkout (on the lent
# machines: ml-collections and clu), fetched where pip works with
#   pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl ml-collections clu
# and installed here into /tmp/site. Everything written lands in $OUT (or ./gpu_check_out):
# device.txt (GPU, driver, versions), vs_released.json and vs_released.log (the four-row table:
# released fp32 / bf16 autocast, ours fp32 / bf16, batch 16, with our first-compile seconds).
set -euo pipefail

released=$(realpath "${1:?usage: bash bench/gpu_check.sh RELEASED_DIR [vs_released.py arguments]}")
shift
out=$(realpath -m "${OUT:-gpu_check_out}")
mkdir -p "$out"
cd "$(dirname "$0")/.."

if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  python3 - <<'EOF'
import flax, jax, optax, torch
print("jax", jax.__version__, jax.devices(), "| flax", flax.__version__, "| optax", optax.__version__)
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())
EOF
} 2>&1 | tee "$out/device.txt"

python3 bench/vs_released.py --released "$released" --json "$out/vs_released.json" "$@" 2>&1 |
  tee "$out/vs_released.log"
