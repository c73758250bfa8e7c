"""Importers from PyTorch checkpoints into our Flax models.

    variables, report = load_into(variables, "mvit_v2_s.pth", "ifdd_3dvit")

fills an initialised model's {"params", "batch_stats"} from torchvision `mvit_v2_s` or
`mobilenet_v2`, PySlowFast MViTv2-S, the authors' full IFDD state dict, or a converter output,
and lists every loaded, resized, missing, wrong-shaped, unexpected, skipped and not-loaded key
(see core.py). `python -m ifdd_jax.convert --source FILE --model NAME --out DIR` writes the
converted variables as an Orbax checkpoint that `load_into` (and so `config.init_from`) accepts.

PyTorch is needed only to read `.pth`/`.pt` pickles (the optional `torch` extra); `.safetensors` and
`.npz` exports convert without it.
"""

from ifdd_jax.convert.core import ConversionError, ConversionReport, load_into, transform
from ifdd_jax.convert.families import detect_family
from ifdd_jax.convert.sources import SourceError, read_state_dict, write_safetensors

__all__ = [
    "ConversionError",
    "ConversionReport",
    "SourceError",
    "detect_family",
    "load_into",
    "read_state_dict",
    "transform",
    "write_safetensors",
]
