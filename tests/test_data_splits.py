"""The stratified 4:1 train/validation split of a training fold."""

import collections

from data_pipeline.records import ClipRecord
from data_pipeline.splits import stratified_split


def _records(n_per_class):
    out, i = [], 0
    for label, n in enumerate(n_per_class):
        for _ in range(n):
            out.append(ClipRecord(f"{i:05d}", label, frames_dir="x"))
            i += 1
    return out


def test_split_is_stratified_4_to_1():
    records = _records([50, 30, 20, 10, 5])
    train, val = stratified_split(records, 0.2, seed=0)
    val_counts = collections.Counter(r.label for r in val)
    assert dict(val_counts) == {0: 10, 1: 6, 2: 4, 3: 2, 4: 1}
    assert len(train) + len(val) == len(records)
    assert not {r.clip_id for r in train} & {r.clip_id for r in val}


def test_split_is_reproducible_and_seeded():
    records = _records([40, 40, 40])
    a = stratified_split(records, 0.2, seed=7)
    b = stratified_split(list(reversed(records)), 0.2, seed=7)  # order of the CSV does not matter
    assert {r.clip_id for r in a[1]} == {r.clip_id for r in b[1]}
    c = stratified_split(records, 0.2, seed=8)
    assert {r.clip_id for r in a[1]} != {r.clip_id for r in c[1]}
