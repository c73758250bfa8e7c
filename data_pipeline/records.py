"""The clip record every reader returns, and the index of one dataset fold."""

from __future__ import annotations

import dataclasses

from data_pipeline.errors import SkipReport


@dataclasses.dataclass(frozen=True)
class ClipRecord:
    """One labelled clip: either a folder of numbered frames or a video file.

    clip_id: the dataset's own id (DFEW "00012", FERV39k relative path, MAFW file stem).
    label: class index in the documented order (labels.py).
    frames_dir / video_path: exactly one is set.
    origin: "<split file>:<line>" the record came from, for error messages.
    """

    clip_id: str
    label: int
    frames_dir: str | None = None
    video_path: str | None = None
    origin: str = ""
    # A segment of the video, in seconds (custom CSVs' start_s,end_s); None: the whole clip.
    start_s: float | None = None
    end_s: float | None = None

    @property
    def path(self) -> str:
        return self.frames_dir if self.frames_dir is not None else str(self.video_path)


@dataclasses.dataclass
class DatasetIndex:
    """Clips of one fold of one dataset, per official split ("train", "test")."""

    dataset: str
    class_names: tuple[str, ...]
    splits: dict[str, list[ClipRecord]]
    skipped: SkipReport = dataclasses.field(default_factory=SkipReport)
    # Clips left out by the protocol itself (DFEW's non-single-label clips), not bad input.
    excluded: dict[str, int] = dataclasses.field(default_factory=dict)
