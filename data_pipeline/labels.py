"""Class names and label orders of the three benchmarks (see docs/datasets.md).

DFEW's order (Happy, Sad, Neutral, Angry, Surprise, Disgust, Fear) is also used for FERV39k, so
that per-class tables line up across datasets; the authors' FERV39k loader sorts alphabetically
instead.
"""

from __future__ import annotations

DFEW_CLASSES = ("Happy", "Sad", "Neutral", "Angry", "Surprise", "Disgust", "Fear")
FERV39K_CLASSES = DFEW_CLASSES
MAFW_CLASSES = (
    "anger",
    "disgust",
    "fear",
    "happiness",
    "neutral",
    "sadness",
    "surprise",
    "contempt",
    "anxiety",
    "helplessness",
    "disappointment",
)

CLASS_NAMES = {
    "dfew": DFEW_CLASSES,
    "ferv39k": FERV39K_CLASSES,
    "mafw": MAFW_CLASSES,
    "synthetic": DFEW_CLASSES,
}


def class_names(dataset: str) -> tuple[str, ...]:
    try:
        return CLASS_NAMES[dataset]
    except KeyError:
        raise ValueError(f"unknown dataset {dataset!r}; known: {sorted(CLASS_NAMES)}") from None


def ferv39k_label(name: str) -> int | None:
    """FERV39k class name (any case) -> index in DFEW order, or None when unknown."""
    lookup = {c.lower(): i for i, c in enumerate(FERV39K_CLASSES)}
    return lookup.get(name.strip().lower())
