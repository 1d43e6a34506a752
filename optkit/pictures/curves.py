"""Curves drawn with matplotlib into PNG files: a run's results.png and a detector's PR_curve.png.

`plot_results` draws one small panel per column of a results.csv (optkit/train/results.py), epochs across:
the train and val values of one loss share a panel (`train_box_loss` with `val_box_loss`), each metric has
its own (precision, recall, mAP50, mAP50-95 of a detector; top-1, top-5 of a classifier); epoch, time and
the learning rates are left out. Losses fill the first row(s), metrics the next. Each value is a point on a
line; past SMOOTH_AFTER epochs a light smoothed line shows the trend through the noise. Empty or NaN cells
are gaps. `plot_pr_curve` draws precision against recall for each class at IoU 0.5 and their mean.

matplotlib is imported inside the functions with the Agg backend (files only, never a window), so
importing this module costs nothing; files are written atomically (optkit.io).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence

import numpy as np

from optkit.io import atomic_open

TITLES = {  # results.csv names -> how the panels call them (the tables' labels, optkit.tasks)
    "map": "mAP50-95",
    "map50": "mAP50",
    "top1": "top-1",
    "top5": "top-5",
}
NOT_PLOTTED = ("epoch", "time")  # and every learning rate, lr_*
SMOOTH_AFTER = 10  # epochs: fewer and a smoothed line says nothing the points do not
MAX_COLS = 5  # panels side by side
TRAIN_COLOR, VAL_COLOR = "tab:blue", "tab:orange"
PR_LEGEND_MAX = 10  # classes named in the PR curve's legend; more and they are drawn grey, unnamed
DPI = 120


def plot_results(csv_path: str | os.PathLike, png_path: str | os.PathLike) -> None:
    """results.png from a results.csv of any task (see the module docstring)."""
    epochs, series = read_results_columns(csv_path)
    fig = results_figure(epochs, series)
    _save(fig, png_path)


def read_results_columns(csv_path: str | os.PathLike) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(epochs [n], {column: values [n]}) of the plotted columns, cells that are not numbers as NaN.
    Without an epoch column the rows count 1, 2, ..."""
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        columns = [c.strip() for c in reader.fieldnames or []]
    rows = [{(k or "").strip(): v for k, v in row.items()} for row in rows]
    if "epoch" in columns:
        epochs = np.array([_number(row.get("epoch")) for row in rows])
    else:
        epochs = np.arange(1, len(rows) + 1, dtype=np.float64)
    plotted = [c for c in columns if c and c not in NOT_PLOTTED and not c.startswith("lr_")]
    return epochs, {c: np.array([_number(row.get(c)) for row in rows]) for c in plotted}


def _number(cell) -> float:
    try:
        return float(cell)
    except (TypeError, ValueError):  # an empty cell, a missing one (None), text
        return math.nan


def results_panels(columns: Sequence[str]) -> tuple[list[tuple[str, list[str]]], list[tuple[str, list[str]]]]:
    """(loss panels, metric panels), each a (title, [columns]) in the columns' order: `train_X` and
    `val_X` share the panel "X"; a column without its partner, and every other column, has its own."""
    losses, metrics = [], []
    for c in columns:
        split, _, base = c.partition("_")
        if split in ("train", "val") and base:
            partner = f"{'val' if split == 'train' else 'train'}_{base}"
            if partner not in columns:
                losses.append((f"{split} {_title(base)}", [c]))
            elif split == "train":
                losses.append((_title(base), [c, partner]))
        else:
            metrics.append((_title(c), [c]))
    return losses, metrics


def _title(name: str) -> str:
    return TITLES.get(name, name.replace("_", " "))


def panel_layout(n_losses: int, n_metrics: int) -> tuple[int, int, list[int]]:
    """(rows, cols, flat index of each panel: losses then metrics). Up to 4 panels: one row. More: the
    losses fill the first row(s) and the metrics start a new one, at most MAX_COLS across."""
    n = n_losses + n_metrics
    if n <= 4:
        return 1, max(n, 1), list(range(n))
    cols = min(MAX_COLS, max(n_losses, n_metrics))
    loss_rows = math.ceil(n_losses / cols)
    places = list(range(n_losses)) + [loss_rows * cols + j for j in range(n_metrics)]
    return loss_rows + math.ceil(n_metrics / cols), cols, places


def results_figure(epochs: np.ndarray, series: Mapping[str, np.ndarray]):
    """The matplotlib figure of `plot_results`."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    losses, metrics = results_panels(list(series))
    panels = losses + metrics
    rows, cols, places = panel_layout(len(losses), len(metrics))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), dpi=DPI, squeeze=False)
    axes = axes.ravel()
    for ax in axes[[p for p in range(rows * cols) if p not in places]]:
        ax.set_visible(False)  # the end of a short row
    if not panels:
        axes[0].set_visible(True)
        _say(axes[0], "no columns to plot")
    for (title, names), place in zip(panels, places, strict=True):
        ax = axes[place]
        _draw_series(ax, epochs, {name: series[name] for name in names})
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        _widen_short_runs(ax, epochs)
        ax.tick_params(labelsize=8)
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


def _widen_short_runs(ax, epochs: np.ndarray) -> None:
    """At least 2 epochs of axis around the points: matplotlib would span one epoch with fractions."""
    finite = epochs[np.isfinite(epochs)]
    if len(finite) and finite.max() - finite.min() < 2:
        ax.set_xlim(finite.min() - 1, finite.max() + 1)


def _draw_series(ax, epochs: np.ndarray, columns: dict[str, np.ndarray]) -> None:
    paired = len(columns) > 1
    drawn = False
    for name, values in columns.items():
        color = VAL_COLOR if name.startswith("val_") else TRAIN_COLOR
        finite = np.isfinite(values) & np.isfinite(epochs)
        if not finite.any():
            continue
        label = name.partition("_")[0] if paired else None  # "train" / "val"
        ax.plot(epochs, values, marker="o", markersize=3, lw=1.2, color=color, label=label)  # NaN: a gap
        if finite.sum() > SMOOTH_AFTER:
            x = epochs[finite]
            ax.plot(x, smoothed(values[finite]), lw=3, alpha=0.3, color=color)
        drawn = True
    if not drawn:
        _say(ax, "no values")
    elif paired:
        ax.legend(fontsize=7, frameon=False)


def smoothed(values: np.ndarray) -> np.ndarray:
    """A Gaussian-weighted moving average (sigma: 2 epochs, or 4 % of the run when longer), renormalised
    at the ends so they are not pulled towards zero."""
    n = len(values)
    sigma = max(2.0, 0.04 * n)  # epochs
    d = np.arange(n)[:, None] - np.arange(n)[None, :]
    weights = np.exp(-0.5 * (d / sigma) ** 2)
    return weights @ values / weights.sum(axis=1)


def _say(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.5", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_pr_curve(
    recall,
    precision_per_class,
    names: Sequence[str] | Mapping[int, str] | None,
    ap50_per_class,
    png_path: str | os.PathLike,
) -> None:
    """PR_curve.png: precision [K, R] against recall [R] (COCO's 101 points) at IoU 0.5, one thin line per
    class labelled "name AP50" (named in the legend up to PR_LEGEND_MAX classes) and a thick line, their
    mean, labelled with the mean AP50. A class without ground truth (its AP or every precision NaN or -1,
    as COCO marks it) is left out of both."""
    fig = pr_figure(recall, precision_per_class, names, ap50_per_class)
    _save(fig, png_path)


def pr_figure(recall, precision_per_class, names, ap50_per_class):
    """The matplotlib figure of `plot_pr_curve`."""
    from optkit.pictures.boxes import PALETTE, class_name

    recall = np.asarray(recall, dtype=np.float64).reshape(-1)
    precision = np.asarray(precision_per_class, dtype=np.float64)
    ap = np.asarray(ap50_per_class, dtype=np.float64).reshape(-1)
    if precision.shape != (len(ap), len(recall)):
        raise ValueError(
            f"plot_pr_curve: precision has shape {list(precision.shape)}, expected "
            f"[{len(ap)} classes, {len(recall)} recall points]"
        )
    precision = np.where(precision < 0, np.nan, precision)  # COCO's -1: no ground truth
    has_gt = np.isfinite(ap) & (ap >= 0) & np.isfinite(precision).any(axis=1)
    valid = [int(k) for k in np.flatnonzero(has_gt)]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 6), dpi=DPI)  # inches: the square axes and the legend beside
    named = len(valid) <= PR_LEGEND_MAX
    for k in valid:
        color = PALETTE[k % len(PALETTE)] if named else "0.65"
        label = f"{class_name(names, k)} {ap[k]:.3f}" if named else None
        ax.plot(recall, precision[k], lw=1, color=color, label=label)
    if valid:
        mean = _mean_over_classes(precision[valid])
        ax.plot(recall, mean, lw=3, color="black", label=f"all classes {ap[valid].mean():.3f} mAP@0.5")
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=9, frameon=False)
    else:
        _say(ax, "no class has ground truth boxes")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="Recall", ylabel="Precision", aspect="equal", anchor="W")
    ax.set_title("Precision-Recall curve (IoU 0.5)", fontsize=11)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


def _mean_over_classes(precision: np.ndarray) -> np.ndarray:
    """Mean precision at each recall point over the classes that have a value there (NaN where none)."""
    finite = np.isfinite(precision)
    count = finite.sum(axis=0)
    total = np.where(finite, precision, 0.0).sum(axis=0)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _save(fig, png_path: str | os.PathLike) -> None:
    """Write the figure as a PNG atomically, and free it (pyplot keeps every open figure)."""
    plt = _pyplot()
    try:
        with atomic_open(png_path, "wb") as f:
            fig.savefig(f, format="png")
    finally:
        plt.close(fig)
