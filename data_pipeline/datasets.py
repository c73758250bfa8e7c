"""One description per dataset: its name, class names, folds, reader, the TFDS builder that stores
it and its default clip size, read by the pipeline (`pipeline.py`), the raw-tree source
(`sources.read_index`) and the data configs, so that adding a dataset is one entry here plus its
reader (and builder class in tfds_builders.py).

`custom` (your own videos) has no fixed classes: they come from its CSV or folders
(data_pipeline/custom.py), so its `class_names` is None.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from data_pipeline import custom, dfew, ferv39k, mafw
from data_pipeline import labels as labels_lib
from data_pipeline.records import DatasetIndex

# (root, fold, options) -> index; options: frame_version, prefer, on_bad_clip, custom_options.
Reader = Callable[[str, int, dict], DatasetIndex]


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    name: str
    class_names: tuple[str, ...] | None  # None: from the data (custom)
    num_folds: int  # 0: one official train/test split (no folds)
    reader: Reader
    tfds_name: str  # the TFDS builder (tfds_builders.BUILDERS) that prepares it
    num_frames: int  # default T of its configs
    image_size: int  # default S of its configs

    @property
    def has_folds(self) -> bool:
        return self.num_folds > 0


def _dfew(root: str, fold: int, o: dict) -> DatasetIndex:
    return dfew.read_dfew(
        root, fold, frame_version=o["frame_version"], on_bad_clip=o["on_bad_clip"]
    )


def _ferv39k(root: str, fold: int, o: dict) -> DatasetIndex:
    del fold  # one official split
    return ferv39k.read_ferv39k(root, on_bad_clip=o["on_bad_clip"])


def _mafw(root: str, fold: int, o: dict) -> DatasetIndex:
    return mafw.read_mafw(root, fold, prefer=o["prefer"], on_bad_clip=o["on_bad_clip"])


def _custom(root: str, fold: int, o: dict) -> DatasetIndex:
    del fold  # train/test come from the CSV or a stratified split
    return custom.read_custom(root, on_bad_clip=o["on_bad_clip"], **(o.get("custom_options") or {}))


DATASETS = {
    spec.name: spec
    for spec in (
        DatasetSpec("dfew", labels_lib.DFEW_CLASSES, dfew.NUM_FOLDS, _dfew, "dfew", 16, 224),
        DatasetSpec("ferv39k", labels_lib.FERV39K_CLASSES, 0, _ferv39k, "ferv39k", 16, 224),
        DatasetSpec("mafw", labels_lib.MAFW_CLASSES, mafw.NUM_FOLDS, _mafw, "mafw", 32, 224),
        # The synthetic set is written in DFEW's exact layout and read as DFEW.
        DatasetSpec("synthetic", labels_lib.DFEW_CLASSES, dfew.NUM_FOLDS, _dfew, "dfew", 16, 64),
        DatasetSpec("custom", None, 0, _custom, "custom", 16, 112),
    )
}


def get(name: str) -> DatasetSpec:
    """The description of dataset `name`; a ValueError naming the known ones otherwise."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}") from None
