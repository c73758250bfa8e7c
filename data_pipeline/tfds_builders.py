"""TFDS builders (manual_dir) that store each clip once as its JPEG frame sequence.

Preparation reads the official layout with our readers, checks every frame (or decodes every
video with decord and re-encodes the frames as JPEG), and writes TFRecords, so training reads
TFRecords and never touches the raw tree. Splits of every config:

  train  the training fold minus the held-out validation part
  val    a deterministic, stratified `val_fraction` of the training fold (splits.py, `split_seed`)
  test   the official test fold

"train+val" is the whole official training fold, used when validating on test (val_protocol
"test"). Bad clips are counted skips (or DataErrors with on_bad_clip="error"); the report is
stored in the dataset's metadata (`skipped`) and logged at the end of preparation.

Example features: frames (sequence of JPEG images [n, h, w, 3]), label (ClassLabel), clip_id
(text), num_frames (int32).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os

import numpy as np
import tensorflow_datasets as tfds

from data_pipeline import custom, datasets, dfew, mafw
from data_pipeline.clip_content import load_clip_jpegs
from data_pipeline.errors import DataError, SkipReport, handle_bad_clip
from data_pipeline.records import ClipRecord, DatasetIndex
from data_pipeline.sources import read_index
from data_pipeline.splits import stratified_split

log = logging.getLogger(__name__)


@dataclasses.dataclass(eq=False)
class ClipBuilderConfig(tfds.core.BuilderConfig):
    """Options that change what is stored. The name encodes them (see `config_name`)."""

    fold: int = 1
    frame_version: str = "16f"  # DFEW only: "16f", "all" or "video"
    prefer: str = "frames"  # MAFW: frames folder or video when both exist
    val_fraction: float = 0.2
    split_seed: int = 0
    max_frames: int = 0  # > 0: keep that many frames spread over long clips
    on_bad_clip: str = "skip"  # "skip" (counted) or "error"
    validate_frames: bool = True  # decode every JPEG once at preparation
    # custom only: the CSV or folder read, its class names, its test fraction and fingerprint
    source_path: str = ""
    class_names: tuple[str, ...] = ()
    test_fraction: float = 0.2
    fingerprint: str = ""


def config_name(
    fold: int | None,
    *,
    frame_version: str = "16f",
    prefer: str = "frames",
    val_fraction: float = 0.2,
    split_seed: int = 0,
    max_frames: int = 0,
    on_bad_clip: str = "skip",
    validate_frames: bool = True,
    source_path: str = "",
    class_names: tuple[str, ...] = (),
    test_fraction: float = 0.2,
    fingerprint: str = "",
) -> str:
    del source_path, class_names  # custom: both are in the fingerprint
    parts = [f"fold{fold}" if fold else "all"]
    parts += [f"custom{fingerprint}", f"test{round(test_fraction * 100)}"] if fingerprint else []
    parts += [frame_version] if frame_version != "16f" else []
    parts += [f"prefer_{prefer}"] if prefer != "frames" else []
    parts += [f"val{round(val_fraction * 100)}", f"seed{split_seed}"]
    parts += [f"max{max_frames}"] if max_frames else []
    parts += ["strict"] if on_bad_clip == "error" else []
    parts += ["novalidate"] if not validate_frames else []
    return "-".join(parts)


def make_config(fold: int | None, **options) -> ClipBuilderConfig:
    return ClipBuilderConfig(name=config_name(fold, **options), fold=fold or 0, **options)


class _ClipBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared preparation; subclasses name the dataset (its reader and class names) and its
    configs."""

    VERSION = tfds.core.Version("1.0.0")
    DATASET_NAME = ""

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
        # TFDS locates a builder's source to find download checksums; manual-dir builders have
        # none, and the lookup imports `importlib_resources`, which tensorflow-datasets 4.9.10 does
        # not install. Returning None skips both.
        return None

    def _read_index(self, root: str) -> DatasetIndex:
        """The official layout under `root`, read with this config's options by the same reader
        dispatch the pipeline's `source="files"` uses."""
        cfg = self.builder_config
        return read_index(
            self.DATASET_NAME,
            root,
            fold=cfg.fold,
            frame_version=cfg.frame_version,
            prefer=cfg.prefer,
            on_bad_clip=cfg.on_bad_clip,
        )

    def _class_names(self) -> tuple[str, ...]:
        return datasets.get(self.DATASET_NAME).class_names

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "frames": tfds.features.Sequence(
                        tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg")
                    ),
                    "label": tfds.features.ClassLabel(names=list(self._class_names())),
                    "clip_id": tfds.features.Text(),
                    "num_frames": tfds.features.Scalar(dtype=np.int32),
                }
            ),
            metadata=tfds.core.MetadataDict(),
            supervised_keys=None,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        cfg = self.builder_config
        index = self._read_index(os.fspath(dl_manager.manual_dir))
        train, val = stratified_split(index.splits["train"], cfg.val_fraction, cfg.split_seed)
        report = SkipReport()
        report.extend(index.skipped)
        meta = self.info.metadata
        meta["skipped"] = report
        meta["excluded"] = dict(index.excluded)
        meta["num_frames_hist"] = {}
        splits = {"train": train, "val": val, "test": index.splits["test"]}
        if not val:
            # TFDS cannot store an empty split; tiny classes round to zero validation clips.
            log.warning(
                "%s/%s: the held-out validation split is empty (too few clips per class); "
                "only val_protocol='test' can be used",
                self.name,
                cfg.name,
            )
            del splits["val"]
        return {name: self._generate_examples(recs, name) for name, recs in splits.items()}

    def _generate_examples(self, records: list[ClipRecord], split: str):
        cfg = self.builder_config
        report: SkipReport = self.info.metadata["skipped"]
        hist = collections.Counter()
        for record in records:
            try:
                jpegs = load_clip_jpegs(
                    record, validate=cfg.validate_frames, max_frames=cfg.max_frames
                )
            except DataError as e:
                handle_bad_clip(report, cfg.on_bad_clip, record.clip_id, e.path, e.problem)
                continue
            hist[len(jpegs)] += 1
            yield (
                record.clip_id,
                {
                    "frames": jpegs,
                    "label": record.label,
                    "clip_id": record.clip_id,
                    "num_frames": len(jpegs),
                },
            )
        self.info.metadata["num_frames_hist"][split] = {str(k): v for k, v in sorted(hist.items())}

    def _download_and_prepare(self, dl_manager, download_config=None):
        super()._download_and_prepare(dl_manager, download_config)
        # Metadata must be JSON: turn the live report into its serialisable form before TFDS writes.
        report = self.info.metadata["skipped"]
        if isinstance(report, SkipReport):
            report.log(log, f"preparing {self.name}/{self.builder_config.name}")
            self.info.metadata["skipped"] = report.to_json()


class Dfew(_ClipBuilder):
    """DFEW, one config per fold (manual_dir = the official DFEW root)."""

    DATASET_NAME = "dfew"
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Request DFEW from its authors and pass the extracted root (holding Clip/ and "
        "EmoLabel_DataSplit/) as manual_dir."
    )
    BUILDER_CONFIGS = [make_config(k) for k in range(1, dfew.NUM_FOLDS + 1)]


class Ferv39k(_ClipBuilder):
    """FERV39k, its single official train/test split (manual_dir = the FERV39k root)."""

    DATASET_NAME = "ferv39k"
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Request FERV39k from its authors and pass the root holding 2_ClipsforFaceCrop/ and "
        "4_setups/ as manual_dir."
    )
    BUILDER_CONFIGS = [make_config(None)]


class Mafw(_ClipBuilder):
    """MAFW single-label 11 classes, one config per fold (manual_dir = the MAFW root)."""

    DATASET_NAME = "mafw"
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Request MAFW from its authors and pass the root holding data/ and 'Train & Test Set/' "
        "as manual_dir."
    )
    BUILDER_CONFIGS = [make_config(k) for k in range(1, mafw.NUM_FOLDS + 1)]


class Custom(_ClipBuilder):
    """Your own videos (data_pipeline/custom.py): one config per CSV or folder, named by its
    fingerprint, so an edited CSV is prepared again (manual_dir = the folder clip paths start
    from)."""

    DATASET_NAME = "custom"
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Pass a CSV 'path,label[,split]' or a folder <root>/<label>/<clip>."
    )
    BUILDER_CONFIGS = [make_config(None)]

    def _class_names(self) -> tuple[str, ...]:
        return tuple(self.builder_config.class_names)

    def _read_index(self, root: str) -> DatasetIndex:
        cfg = self.builder_config
        return custom.read_custom(
            cfg.source_path,
            classes=cfg.class_names,
            test_fraction=cfg.test_fraction,
            split_seed=cfg.split_seed,
            on_bad_clip=cfg.on_bad_clip,
        )


BUILDERS = {"dfew": Dfew, "synthetic": Dfew, "ferv39k": Ferv39k, "mafw": Mafw, "custom": Custom}


def prepare(
    dataset: str, manual_dir: str, data_dir: str, *, fold: int | None, **options
) -> tfds.core.DatasetBuilder:
    """Builds (once) and returns the TFDS builder for a dataset fold.

    A later call with the same options reuses the prepared TFRecords.
    """
    if dataset not in BUILDERS:
        raise ValueError(f"unknown dataset {dataset!r}; known: {sorted(BUILDERS)}")
    cls = BUILDERS[dataset]
    config = make_config(fold, **options)
    # A registered config must be passed by name (TFDS refuses an equal-named custom object).
    registered = {c.name for c in cls.BUILDER_CONFIGS}
    builder = cls(config=config.name if config.name in registered else config, data_dir=data_dir)
    if not builder.is_prepared():
        if not os.path.isdir(manual_dir):
            raise DataError(manual_dir, f"{dataset} root folder (manual_dir) is missing")
        try:
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
            )
        except AssertionError as e:
            # TFDS asserts when every clip of a split was skipped; say which and why.
            raise DataError(
                manual_dir,
                f"{dataset} fold {fold}: a split has no usable clips ({e}); "
                "see the skip report in the log",
            ) from e
    return builder


def skipped_from_metadata(builder: tfds.core.DatasetBuilder) -> dict:
    """The skip report stored at preparation: {"counts": {reason: n}, "entries": [...]}."""
    report = builder.info.metadata.get("skipped", {}) if builder.info.metadata else {}
    return report if isinstance(report, dict) else report.to_json()
