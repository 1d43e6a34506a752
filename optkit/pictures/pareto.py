"""`pareto.png` of an `optkit deploy` work folder: accuracy against latency of every measured candidate.

Each point is an exported file: its task's fitness metric on val (y) against its latency relative to the
fp32 file (x: 1 / the paired speed-up, so every point is a ratio measured in the same rounds as fp32; the
fp32 file is 1.0 and its ms are in the axis label). The fp32 baseline is a black square, the lowest accuracy
within the budget a dashed line, the Pareto front (nothing both faster and at least as accurate) a grey
step line, the chosen candidate a red star. Points are numbered (points that coincide share one label) and
the numbers are listed beside the plot. matplotlib is imported inside the function (Agg backend); the file
is written atomically (optkit.io).
"""

from __future__ import annotations

import os

DPI = 120
NEAR = 0.02  # points closer than this share of both axes' spans share one label


def plot_pareto(points: list[dict], chosen: str | None, metric: dict, max_drop: float, png_path) -> None:
    """`points`: measured candidate results (label, key, fitness, speedup, latency_ms, within), the fp32
    baseline first; `chosen`: the chosen one's key or None; `metric`: {"label", "percent"}; `max_drop` in
    points (hundredths of the metric)."""
    from optkit.pictures.curves import _pyplot, _save

    plt = _pyplot()
    scale = 100 if metric.get("percent") else 1  # top-1 in %, mAP as the fraction it is
    xs = [1.0] + [1 / p["speedup"] for p in points[1:]]  # latency / fp32's, per-round pairs
    ys = [p["fitness"] * scale for p in points]
    fig, ax = plt.subplots(figsize=(10, 5), dpi=DPI)
    ax.axhline(ys[0] - max_drop / 100 * scale, color="tab:red", linestyle="--", linewidth=1,
               label=f"budget: {max_drop:g} point{'' if max_drop == 1 else 's'} below fp32")  # fmt: skip
    front = _front(xs, ys)
    ax.step([xs[i] for i in front], [ys[i] for i in front], where="post", color="0.6", label="Pareto front")
    ax.scatter(xs[:1], ys[:1], marker="s", s=60, color="black", zorder=3, label="fp32 baseline")
    colors = ["tab:blue" if p.get("within") else "tab:gray" for p in points[1:]]
    ax.scatter(xs[1:], ys[1:], s=40, color=colors, zorder=3, label="candidates (grey: over budget)")
    picked = next((i for i, p in enumerate(points) if p["key"] == chosen), None)
    if picked is not None:
        ax.scatter([xs[picked]], [ys[picked]], marker="*", s=280, color="tab:red", edgecolor="black",
                   zorder=4, label=f"chosen: {picked}")  # fmt: skip
    for (x, y), members in _coincident(xs, ys).items():
        ax.annotate(
            ",".join(map(str, members)), (x, y), textcoords="offset points", xytext=(6, 5), fontsize=8
        )
    listing = "\n".join(f"{i}  {p['label']}" for i, p in enumerate(points))
    fig.text(0.72, 0.95, listing, fontsize=8, va="top", family="monospace")
    ax.set_xlabel(f"latency relative to fp32 (paired rounds; fp32 = {points[0]['latency_ms']:.3g} ms)")
    ax.set_ylabel(f"{metric['label']} on val" + (" (%)" if metric.get("percent") else ""))
    ax.set_title("optkit deploy: accuracy vs latency of the exported files", fontsize=11)
    ax.grid(True, alpha=0.3)
    fig.tight_layout(rect=(0, 0, 0.7, 1))
    fig.legend(*ax.get_legend_handles_labels(), fontsize=8, loc="lower left", bbox_to_anchor=(0.71, 0.08))
    _save(fig, os.fspath(png_path))


def _front(xs: list[float], ys: list[float]) -> list[int]:
    """Indices of the points no other point beats on both axes (faster and at least as accurate)."""
    order = sorted(range(len(xs)), key=lambda i: (xs[i], -ys[i]))
    front, best = [], float("-inf")
    for i in order:
        if ys[i] > best:
            front.append(i)
            best = ys[i]
    return front


def _coincident(xs: list[float], ys: list[float]) -> dict[tuple[float, float], list[int]]:
    """Point indices grouped with the first point within NEAR of each axis' span (one label each)."""
    span_x = (max(xs) - min(xs)) or 1.0
    span_y = (max(ys) - min(ys)) or 1.0
    groups: dict[tuple[float, float], list[int]] = {}
    for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
        near = next(
            ((gx, gy) for gx, gy in groups if abs(gx - x) < NEAR * span_x and abs(gy - y) < NEAR * span_y),
            (x, y),
        )
        groups.setdefault(near, []).append(i)
    return groups
