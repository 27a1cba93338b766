"""Learning, plotted: the loss per reported epoch on a log scale and, for a model with two
inputs, its decision surface over the inputs' range with the training points on it.

    history = list(client.train("xor", X, Y, epochs=5000, learning_rate=0.5, report_every=25))
    write_training_plot("train.svg", history, X, Y,
                        predict=lambda grid: client.predict("xor", grid))

matplotlib draws it (an optional dependency: `pip install 'jitnet[plot]'`), imported only when
a plot is made; without it, MissingDependency says what to install. SVG, or PNG when the file
name ends in .png. The same history and predictions give the same bytes: no date or version in
the file's metadata, and matplotlib's SVG ids come from a fixed salt.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np

from .draw import MissingDependency, picture_format
from .explain import fmt
from .results import Progress

GRID_STEPS = 101  # the decision surface is the model's output at GRID_STEPS^2 points
# Progress messages `jitnet train --plot` asks for over the epochs: each is also a commit, so
# not many more than a smooth curve needs (a 3000-epoch XOR took 4.8 s with 200, 0.4 s with 1).
PLOT_POINTS = 100
MAX_ANNOTATED = 16  # training points labelled with their targets, when there are no more
# rcParams for the file: fixed ids in the SVG, text left as text (searchable, smaller).
_RC = {"svg.hashsalt": "jitnet", "svg.fonttype": "none", "font.size": 10}
_METADATA = {"svg": {"Date": None, "Creator": None}, "png": {"Software": None}}


def require() -> None:
    """Raises MissingDependency, saying how to install it, unless matplotlib imports."""
    _matplotlib()


def _matplotlib():
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingDependency("the training plot needs matplotlib: pip install "
                                "'jitnet[plot]'") from None
    return matplotlib, Figure


def report_every(epochs: int) -> int:
    """Epochs between progress messages for a curve of about PLOT_POINTS points."""
    return max(1, epochs // PLOT_POINTS)


def surface_grid(inputs: np.ndarray, steps: int = GRID_STEPS):
    """(x1 [steps, steps], x2 [steps, steps], points [steps^2, 2]) over the inputs' range
    and 15% more on each side (half a unit where a column is constant)."""
    low, high = inputs.min(axis=0), inputs.max(axis=0)
    pad = np.where(high > low, 0.15 * (high - low), 0.5)
    x1, x2 = np.meshgrid(np.linspace(low[0] - pad[0], high[0] + pad[0], steps),
                         np.linspace(low[1] - pad[1], high[1] + pad[1], steps))
    return x1, x2, np.column_stack([x1.ravel(), x2.ravel()])


def training_figure(history: Sequence[Progress], inputs=None, targets=None,
                    predict: Callable[[np.ndarray], np.ndarray] | None = None,
                    title: str = ""):
    """The matplotlib Figure (no pyplot, no global state). The decision surface is drawn when
    the inputs have two columns and `predict` (points [m, 2] -> outputs [m, n_out]) is given."""
    _, Figure = _matplotlib()
    if not history:
        raise ValueError("no progress to plot: the training reported nothing")
    surface = (inputs is not None and predict is not None and np.ndim(inputs) == 2
               and np.shape(inputs)[1] == 2)
    fig = Figure(figsize=(11, 4.4) if surface else (6.2, 4.4), layout="constrained")
    loss_axes = fig.add_subplot(1, 2 if surface else 1, 1)
    _loss_curve(loss_axes, history)
    if surface:
        _decision_surface(fig, fig.add_subplot(1, 2, 2), np.asarray(inputs, dtype=np.float64),
                          None if targets is None else np.asarray(targets, dtype=np.float64),
                          predict)
    if title:
        fig.suptitle(title, fontweight="bold")
    return fig


def write_training_plot(path, history: Sequence[Progress], inputs=None, targets=None,
                        predict: Callable[[np.ndarray], np.ndarray] | None = None,
                        title: str = "") -> None:
    """training_figure saved to `path`: SVG, or PNG when the name ends in .png."""
    kind = picture_format(path)
    matplotlib, _ = _matplotlib()
    fig = training_figure(history, inputs, targets, predict, title)
    with matplotlib.rc_context(_RC):
        fig.savefig(os.fspath(path), format=kind, dpi=100, metadata=_METADATA[kind])


def _loss_curve(axes, history: Sequence[Progress]) -> None:
    epochs = np.array([p.epoch for p in history], dtype=np.float64)
    losses = np.array([p.loss for p in history], dtype=np.float64)
    (line,) = axes.plot(epochs, losses, color="#2166ac", linewidth=1.6,
                        marker="." if len(history) <= 60 else None)
    line.set_gid("loss-curve")
    if (losses > 0).all():
        axes.set_yscale("log")
    axes.set_xlabel("epoch")
    axes.set_ylabel("mean loss per sample" + (" (log scale)" if (losses > 0).all() else ""))
    axes.grid(True, which="both", alpha=0.25)
    last = history[-1]
    axes.set_title(f"loss {fmt(last.loss, 4)} after {last.epoch} epochs")


def _decision_surface(fig, axes, inputs: np.ndarray, targets: np.ndarray | None,
                      predict: Callable[[np.ndarray], np.ndarray]) -> None:
    x1, x2, points = surface_grid(inputs)
    outputs = np.asarray(predict(points), dtype=np.float64).reshape(points.shape[0], -1)
    if outputs.shape[1] == 1:  # one output: its value, and where it crosses 0.5
        z = outputs[:, 0].reshape(x1.shape)
        low, high = min(0.0, float(z.min())), max(1.0, float(z.max()))
        filled = axes.contourf(x1, x2, z, levels=np.linspace(low, high, 11), cmap="RdBu_r",
                               alpha=0.85)
        fig.colorbar(filled, ax=axes, label="output")
        if z.min() < 0.5 < z.max():
            boundary = axes.contour(x1, x2, z, levels=[0.5], colors="#222222", linewidths=1.4)
            boundary.set_gid("decision-boundary")
        colour = {} if targets is None else dict(c=targets[:, 0], cmap="RdBu_r", vmin=low,
                                                  vmax=high)
        axes.set_title("output over the inputs; the line is 0.5")
    else:  # several outputs: the class each point would get (the largest output)
        classes = outputs.argmax(axis=1).reshape(x1.shape)
        k = outputs.shape[1]
        filled = axes.contourf(x1, x2, classes, levels=np.arange(k + 1) - 0.5, cmap="tab10",
                               vmin=-0.5, vmax=9.5, alpha=0.45)
        colour = {} if targets is None else dict(c=targets.argmax(axis=1), cmap="tab10",
                                                  vmin=-0.5, vmax=9.5)
        axes.set_title("class by the largest output")
    filled.set_gid("decision-surface")
    points_drawn = axes.scatter(inputs[:, 0], inputs[:, 1], s=90, edgecolors="#ffffff",
                                linewidths=2.0, zorder=3, **colour)
    points_drawn.set_gid("training-points")
    if targets is not None and len(inputs) <= MAX_ANNOTATED:
        for (a, b), t in zip(inputs, targets, strict=True):
            axes.annotate(f"target {', '.join(fmt(v, 3) for v in t)}", (a, b),
                          xytext=(0, 10), textcoords="offset points", ha="center",
                          fontsize=9, color="#111111", zorder=4,
                          bbox=dict(boxstyle="round,pad=0.2", fc="#ffffff", ec="none",
                                    alpha=0.8))
    axes.set_xlabel("input 1")
    axes.set_ylabel("input 2")
