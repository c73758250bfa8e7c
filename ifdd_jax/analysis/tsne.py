"""t-SNE of the features before the last Linear layer, coloured by class, one panel per run.

    python -m ifdd_jax.analysis.tsne --workdirs runs/baseline runs/ifdd --out figs/tsne.png

Each run's clips of `--split` are read as evaluation reads them and the vector the classifier's
last Linear receives is embedded (for IFDD the compressed Y_D; for the MobileNetV2 baseline the
output of its MLP's hidden layer). scikit-learn's TSNE with the paper's settings: perplexity 50
(clamped below the number of clips), 1000 iterations, PCA initialisation, a fixed seed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from sklearn.manifold import TSNE

from ifdd_jax import compile_cache
from ifdd_jax.analysis import figures
from ifdd_jax.analysis.outputs import HEAD_INPUT, split_outputs
from ifdd_jax.trained_run import load_trained

PERPLEXITY = 50.0
ITERATIONS = 1000


def embed(
    features: np.ndarray,
    *,
    perplexity: float = PERPLEXITY,
    iterations: int = ITERATIONS,
    seed: int = 0,
) -> np.ndarray:
    """features [N, D] -> 2-D t-SNE coordinates [N, 2]."""
    n = features.shape[0]
    if n < 3:
        raise ValueError(f"t-SNE needs at least 3 clips, got {n}")
    # scikit-learn requires perplexity < n_samples.
    perplexity = float(min(perplexity, n - 1))
    tsne = TSNE(
        n_components=2, perplexity=perplexity, max_iter=iterations, init="pca", random_state=seed
    )
    return tsne.fit_transform(np.asarray(features, np.float64))


def plot_embeddings(
    panels: Sequence[tuple], class_names: Sequence[str], path: str, dpi: int | None = None
) -> str:
    """panels: (title, coordinates [N, 2], labels [N]) side by side, one colour per class."""
    fig, axes = figures.new_figure(1, len(panels), figsize=(3.6 * len(panels), 3.6), squeeze=False)
    colours = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    for ax, (title, coords, labels) in zip(axes[0], panels):
        for k, name in enumerate(class_names):
            chosen = labels == k
            if chosen.any():
                ax.scatter(
                    coords[chosen, 0],
                    coords[chosen, 1],
                    s=6,
                    color=colours(k),
                    label=name,
                    alpha=0.8,
                    linewidths=0,
                )
        ax.set_title(f"{title} (n = {len(labels)})")
        ax.set_xlabel("t-SNE dimension 1")
        ax.set_ylabel("t-SNE dimension 2")
        ax.set_xticks([])
        ax.set_yticks([])
    handles, names = axes[0, -1].get_legend_handles_labels()
    fig.legend(
        handles, names, loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=2.5, title="class"
    )
    fig.tight_layout()
    return figures.save(fig, path, dpi or figures.DPI)


def tsne_figure(
    workdirs: Sequence[str],
    path: str,
    *,
    titles: Sequence[str] | None = None,
    split: str = "test",
    max_clips: int | None = 2000,
    dpi: int | None = None,
) -> str:
    """Loads every run, embeds its features and writes the side-by-side figure."""
    if titles and len(titles) != len(workdirs):
        raise ValueError(f"{len(titles)} titles for {len(workdirs)} runs")
    panels: list[tuple] = []
    class_names = None
    for i, workdir in enumerate(workdirs):
        trained = load_trained(workdir)
        if class_names is not None and list(class_names) != list(trained.class_names):
            raise ValueError(
                f"{workdir}: classes {trained.class_names} differ from the first "
                f"run's {class_names}"
            )
        class_names = trained.class_names
        outputs = split_outputs(trained, workdir, [HEAD_INPUT], split=split, max_clips=max_clips)
        run_name = os.path.basename(workdir.rstrip("/"))
        title = titles[i] if titles else f"{trained.config.model_name} ({run_name})"
        panels.append((title, embed(outputs[HEAD_INPUT]), outputs["label"]))
    return plot_embeddings(panels, class_names, path, dpi)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ifdd_jax.analysis.tsne", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--workdirs",
        nargs="+",
        required=True,
        help="runs to compare, one panel each (e.g. a baseline and IFDD)",
    )
    parser.add_argument("--titles", nargs="*", default=None, help="panel titles, one per run")
    parser.add_argument("--split", default="test", choices=["val", "test"])
    parser.add_argument("--max_clips", type=int, default=2000, help="clips embedded per run")
    figures.add_output_args(parser, "tsne.png")
    parser.add_argument("--dpi", type=int, default=None)
    args = parser.parse_args(argv)
    out = figures.output_path(args, "tsne.png")
    return figures.run_command(
        lambda: tsne_figure(
            args.workdirs,
            out,
            titles=args.titles,
            split=args.split,
            max_clips=args.max_clips,
            dpi=args.dpi,
        ),
        errors=(OSError, ValueError, ImportError),
    )


if __name__ == "__main__":
    compile_cache.enable()  # a rerun on the same run does not compile the model again
    sys.exit(main())
