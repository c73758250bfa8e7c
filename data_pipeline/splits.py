"""Deterministic, stratified train/validation split of a training fold.

The paper splits each training fold 4:1 into train/val; the authors' code has no split logic, so
this is ours: per class, clips are sorted by id, permuted with a generator seeded by (seed, class)
and the first round(val_fraction * n) go to validation. The result depends only on the clip ids,
labels, fraction and seed (not on file order), so every run and host gets the same split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from data_pipeline.records import ClipRecord


def _class_seed(seed: int, label: int) -> int:
    digest = hashlib.sha256(f"ifdd-split/{seed}/{label}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def stratified_split(
    records: Sequence[ClipRecord], val_fraction: float, seed: int
) -> tuple[list[ClipRecord], list[ClipRecord]]:
    """Splits records into (train, val) with about val_fraction of each class in val.

    Both outputs keep the input order. With val_fraction 0 everything is train.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    by_label: dict[int, list[int]] = {}
    for i, r in enumerate(records):
        by_label.setdefault(r.label, []).append(i)
    val_positions = set()
    for label, positions in by_label.items():
        positions = sorted(positions, key=lambda i: records[i].clip_id)
        n_val = int(np.floor(val_fraction * len(positions) + 0.5))
        order = np.random.default_rng(_class_seed(seed, label)).permutation(len(positions))
        val_positions.update(positions[j] for j in order[:n_val])
    train = [r for i, r in enumerate(records) if i not in val_positions]
    val = [r for i, r in enumerate(records) if i in val_positions]
    return train, val
