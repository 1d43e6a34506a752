"""What `optkit benchmark` prints and writes: a table, CSV, and an accuracy-vs-latency plot."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from optkit.io import atomic_open, atomic_write_text
from optkit.report.console import mb, out, pct

CSV_COLUMNS = (
    "path",
    "format",
    "file_bytes",
    "params",
    "gflops",
    "top1",
    "top5",
    "latency_ms",
    "p90_ms",
    "speedup",
    "speedup_vs_float_onnx",  # INT8 ONNX rows: against the first float ONNX row (paired rounds)
    # added with interleaved rounds: the label shown, the timed size, the per-round ratios' range and
    # spread, how many rounds, the flag and the notes
    "label",
    "latency_imgsz",
    "speedup_min",
    "speedup_max",
    "speedup_spread",
    "rounds",
    "unstable",
    "notes",
)
MARK = "†"  # after a speed-up whose rounds disagree (see the footnote)
FORMAT_STYLE = {  # plot colour and marker per artifact format
    "pytorch": ("tab:blue", "o"),
    "pytorch int8": ("tab:purple", "s"),
    "onnx": ("tab:green", "D"),
    "onnx int8": ("tab:orange", "^"),
}


def print_benchmark(r: dict) -> None:
    from rich.table import Table

    table = Table(title=_title(r))
    columns = ("artifact", "format", "size", "params", "GFLOPs", "top-1", "latency", "speed-up", "spread")
    for col in columns:
        table.add_column(col, justify="left" if col in ("artifact", "format") else "right")
    table.add_column("note", justify="left")
    for i, row in enumerate(r["rows"]):
        table.add_row(
            row["label"],
            row["format"],
            mb(row["file_bytes"]),
            f"{row['params']:,}",
            "n/a" if row["gflops"] is None else f"{row['gflops']:.4g}",
            pct(row["top1"]),
            f"{row['latency_ms']:.2f} ms",
            f"{row['speedup']:.2f}x" + (MARK if row["unstable"] else ""),
            "" if i == 0 else _spread_text(row["speedup_spread"]),
            "; ".join(_note_tag(note) for note in row["notes"]),
        )
    out().print(table)
    for line in footnotes(r):
        out().print(line, highlight=False)


def _title(r: dict) -> str:
    threads = f", {r['threads']} threads" if r["threads"] else ""
    if r["latency_imgsz"] == r["imgsz"]:
        size = f"imgsz {r['imgsz']}"
    else:
        size = f"top-1 at {r['imgsz']} px, latency at {r['latency_imgsz']} px"
    return f"optkit benchmark  {size}, batch {r['batch']}, {r['rounds']} rounds x {r['runs']} runs{threads}"


def _note_tag(note: str) -> str:
    """The few words the table shows for a row note (the footnote gives the whole note)."""
    from optkit.workflows.benchmark import FAKE_QUANT_NOTE, NO_GAIN_NOTE

    if note == FAKE_QUANT_NOTE:
        return "fake quant"
    return "no gain" if note.startswith(NO_GAIN_NOTE) else note


def _spread_text(spread: float | None) -> str:
    return "n/a" if spread is None else f"{100 * spread:.0f}%"


def footnotes(r: dict) -> list[str]:
    """How the speed-up was formed and, when a row is marked, why it should not be trusted."""
    first = r["rows"][0]["label"]
    notes = [
        f"speed-up: median over {r['rounds']} interleaved rounds of {first}'s latency / this one's (same "
        "round); spread: their interquartile range / median."
    ]
    shown = {note for row in r["rows"] for note in row["notes"]}
    for note in sorted(shown, key=_note_tag):
        notes.append(f"{_note_tag(note)} = {note}." if _note_tag(note) != note else f"{note}.")
    if any(row["unstable"] for row in r["rows"]):
        notes.append(
            f"{MARK} spread above {100 * r['spread_limit']:.0f}%: the rounds disagree (other load on the "
            "machine); rerun with more --rounds or on a quiet machine."
        )
    return notes


def write_csv(r: dict, path: str | Path) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in r["rows"]:
        extra = {"latency_imgsz": r["latency_imgsz"], "rounds": r["rounds"], "notes": "; ".join(row["notes"])}
        writer.writerow({**row, **extra})
    atomic_write_text(path, buf.getvalue())


def write_plot(r: dict, path: str | Path) -> None:
    """The figure of `benchmark_figure`, written atomically as a PNG."""
    import matplotlib.pyplot as plt

    fig = benchmark_figure(r)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)


def benchmark_figure(r: dict):
    """Two panels sharing a log latency axis. Left: top-1 (else file size) against median latency, marker
    colour/shape = format, marker area = file size, the Pareto front drawn, points numbered (points that
    coincide share one label). Right: one bar per artifact, numbered and labelled by its shortest
    distinguishing path, with its speed-up. A legend for formats, sizes and the front."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    rows = r["rows"]
    have_top1 = all(row["top1"] is not None for row in rows)
    height = max(4.8, 1.6 + 0.32 * len(rows))  # inches: room for one bar label per artifact
    fig, (ax, bars) = plt.subplots(
        1, 2, figsize=(13, height), dpi=120, gridspec_kw={"width_ratios": [1.25, 1]}
    )
    _scatter_panel(ax, rows, have_top1)
    _bar_panel(bars, rows)
    lat = f"median latency, ms (log), batch {r['batch']} at {r['latency_imgsz']} px"
    ax.set_xlabel(lat)
    bars.set_xlabel(lat)
    ax.set_ylabel(f"val top-1, % (at {r['imgsz']} px)" if have_top1 else "file size, MB")
    title = "accuracy vs latency" if have_top1 else "file size vs latency"
    fig.suptitle(f"optkit benchmark: {title}", fontsize=12)
    if any(row["unstable"] for row in rows):
        fig.text(
            0.01,
            0.01,
            f"{MARK} rounds disagree by more than {100 * r.get('spread_limit', 0.1):.0f}%: "
            "other load on the machine",
            fontsize=8,
        )
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


def _scatter_panel(ax, rows: list[dict], have_top1: bool) -> None:
    xs = [row["latency_ms"] for row in rows]
    ys = [100 * row["top1"] if have_top1 else row["file_bytes"] / 1e6 for row in rows]  # % or MB
    biggest = max(row["file_bytes"] for row in rows) or 1
    area = [40 + 360 * row["file_bytes"] / biggest for row in rows]  # points^2, by file size
    front = pareto_front(list(zip(xs, ys if have_top1 else [-y for y in ys], strict=True)))
    floor = _y_floor(ys) if have_top1 else None
    shown = [y if floor is None else max(y, floor) for y in ys]  # far below the best: on the floor
    ax.step([xs[i] for i in front], [shown[i] for i in front], where="post", color="0.35", ls="--", lw=1.2)
    for i, row in enumerate(rows):
        color, marker = FORMAT_STYLE.get(row["format"], ("tab:gray", "o"))
        if shown[i] != ys[i]:
            marker = "v"  # off the axis: drawn on its floor, its value written beside it
        edge = "black" if i in front else "white"
        ax.scatter(
            xs[i], shown[i], s=area[i], c=color, marker=marker, edgecolors=edge, linewidths=1, zorder=3
        )
    ax.set_xscale("log")
    ax.set_xlim(min(xs) / 1.6, max(xs) * 1.6)  # room for the labels at both ends
    ax.grid(True, which="both", alpha=0.25)
    _pad_y(ax, shown)
    labels = []
    for members in _coincident(xs, shown):
        text = ",".join(str(i + 1) + (MARK if rows[i]["unstable"] else "") for i in members)
        first = members[0]
        if shown[first] != ys[first]:
            text += f" ({ys[first]:.1f}%, below the axis)"
        labels.append(((xs[first], shown[first]), text))
    _place_labels(ax, labels)
    ax.legend(
        handles=_legend_handles(rows, biggest),
        fontsize=8,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.16),  # below the axis label, clear of the points
        ncol=4,
        frameon=False,
        labelspacing=1.2,
    )


LABEL_SPOTS = ((7, 6, "left"), (7, -16, "left"), (-7, 6, "right"), (-7, -16, "right"), (7, 18, "left"))


def _place_labels(ax, labels: list[tuple[tuple[float, float], str]], fontsize: int = 9) -> None:
    """Annotate each point beside it, at the first of LABEL_SPOTS (offsets in points) where the text
    overlaps no label placed before it (text boxes estimated from the font size)."""
    fig = ax.figure
    px = fig.dpi / 72  # pixels per point
    placed = []  # (x0, y0, x1, y1) in pixels
    for (x, y), text in sorted(labels):
        ax_x, ax_y = ax.transData.transform((x, y))
        width, height = 0.62 * fontsize * px * len(text), fontsize * px  # bold digits, estimated
        for dx, dy, ha in LABEL_SPOTS:
            x0 = ax_x + dx * px - (width if ha == "right" else 0)
            box = (x0, ax_y + dy * px, x0 + width, ax_y + dy * px + height)
            if not any(_overlap(box, other) for other in placed):
                break
        else:
            dx, dy, ha = LABEL_SPOTS[0]
            x0 = ax_x + dx * px
            box = (x0, ax_y + dy * px, x0 + width, ax_y + dy * px + height)
        placed.append(box)
        ax.annotate(
            text,
            (x, y),
            textcoords="offset points",
            xytext=(dx, dy),
            ha=ha,
            fontsize=fontsize,
            fontweight="bold",
        )


def _overlap(a: tuple, b: tuple) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _y_floor(top1_pct: list[float]) -> float | None:
    """The lowest top-1 (%) the axis shows: 10 points under the best, so that one artifact far below
    (e.g. pruned without fine-tuning) does not squash the differences among the rest; None if none is."""
    floor = max(top1_pct) - 10.0  # percentage points
    return floor if min(top1_pct) < floor else None


def _legend_handles(rows: list[dict], biggest: int) -> list:
    from matplotlib.lines import Line2D

    formats = [f for f in FORMAT_STYLE if any(row["format"] == f for row in rows)]
    handles = [
        Line2D([], [], ls="", marker=FORMAT_STYLE[f][1], color=FORMAT_STYLE[f][0], markersize=8, label=f)
        for f in formats
    ]
    handles.append(Line2D([], [], color="0.35", ls="--", label="Pareto front (nothing faster and better)"))
    for size in _size_keys(biggest):
        s = 40 + 360 * size / biggest  # the scatter's area rule
        handles.append(
            Line2D(
                [], [], ls="", marker="o", color="0.6", markersize=s**0.5, label=f"{size / 1e6:.2g} MB file"
            )
        )
    return handles


def _bar_panel(ax, rows: list[dict]) -> None:
    n = len(rows)
    ys = list(range(n))[::-1]  # first artifact at the top
    for y, row in zip(ys, rows, strict=True):
        color, _ = FORMAT_STYLE.get(row["format"], ("tab:gray", "o"))
        ax.barh(y, row["latency_ms"], color=color, alpha=0.85)
        mark = MARK if row["unstable"] else ""
        ax.annotate(
            f" {row['latency_ms']:.3g} ms  {row['speedup']:.2f}x{mark}",
            (row["latency_ms"], y),
            va="center",
            fontsize=8,
        )
    ax.set_yticks(ys, [f"{i + 1}  {row['label']}" for i, row in enumerate(rows)], fontsize=8)
    ax.axvline(rows[0]["latency_ms"], color="0.3", ls=":", lw=1)  # the reference of the speed-ups
    ax.set_xscale("log")
    low, high = min(row["latency_ms"] for row in rows), max(row["latency_ms"] for row in rows)
    ax.set_xlim(low / 2, high * 6)  # room for the text after the longest bar
    ax.grid(True, axis="x", which="both", alpha=0.25)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the (latency, score) points that no other point beats on both (lower latency, higher
    score, one of them strictly), sorted by latency."""

    def beaten(p: tuple[float, float]) -> bool:
        return any(q[0] <= p[0] and q[1] >= p[1] and q != p for q in points)

    return sorted((i for i, p in enumerate(points) if not beaten(p)), key=lambda i: points[i])


def _coincident(xs: list[float], ys: list[float]) -> list[list[int]]:
    """Groups of point indices that would sit on top of each other (within 3% of the log-x span and of
    the y span), so each group gets one label."""
    import math

    lx = [math.log10(x) for x in xs]
    span_x = max(max(lx) - min(lx), 0.1)
    span_y = max(max(ys) - min(ys), 1e-9)
    groups: list[list[int]] = []
    for i in range(len(xs)):
        for group in groups:
            j = group[0]
            if abs(lx[i] - lx[j]) < 0.03 * span_x and abs(ys[i] - ys[j]) < 0.03 * span_y:
                group.append(i)
                break
        else:
            groups.append([i])
    return groups


def _pad_y(ax, ys: list[float]) -> None:
    low, high = min(ys), max(ys)
    pad = max(0.15 * (high - low), 0.5)
    ax.set_ylim(low - pad, high + pad)


def _size_keys(biggest: int) -> list[float]:
    """Two file sizes (bytes) for the marker-size legend: the largest and a quarter of it."""
    return [biggest / 4, biggest]
