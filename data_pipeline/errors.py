"""Errors and skip accounting for bad input.

Bad input is either a `DataError` (raised at once, naming the file and the fault) or a counted
skip (`SkipReport`), which preparation prints at the end so that nothing is silently dropped.
"""

from __future__ import annotations

import collections
import dataclasses
import logging


class DataError(ValueError):
    """A problem with the input data; the message names the file and the problem."""

    def __init__(self, path: str, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@dataclasses.dataclass
class SkipReport:
    """Clips left out on purpose, each with the file at fault and the reason."""

    entries: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)

    def add(self, clip_id: str, path: str, reason: str) -> None:
        self.entries.append((str(clip_id), str(path), reason))

    def extend(self, other: SkipReport) -> None:
        self.entries.extend(other.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def counts(self) -> dict[str, int]:
        """Number of skipped clips per kind of problem (the reason without its details)."""
        return dict(collections.Counter(reason.split(" (")[0] for _, _, reason in self.entries))

    def summary(self, max_listed: int = 20) -> str:
        if not self.entries:
            return "no clips skipped"
        lines = [
            f"{len(self.entries)} clip(s) skipped: "
            + ", ".join(f"{n} {reason}" for reason, n in sorted(self.counts().items()))
        ]
        for clip_id, path, reason in self.entries[:max_listed]:
            lines.append(f"  clip {clip_id}: {reason} ({path})")
        if len(self.entries) > max_listed:
            lines.append(f"  ... and {len(self.entries) - max_listed} more")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"counts": self.counts(), "entries": [list(e) for e in self.entries]}

    def log(self, logger: logging.Logger, what: str) -> None:
        if self.entries:
            logger.warning("%s: %s", what, self.summary())
        else:
            logger.info("%s: no clips skipped", what)


def handle_bad_clip(report: SkipReport, on_bad: str, clip_id: str, path: str, reason: str) -> None:
    """Counts a bad clip as skipped, or raises when the user asked for strict checking."""
    if on_bad == "error":
        raise DataError(path, f"clip {clip_id}: {reason}")
    if on_bad != "skip":
        raise ValueError(f"on_bad_clip must be 'skip' or 'error', got {on_bad!r}")
    report.add(clip_id, path, reason)
