"""What `optkit benchmark` prints and writes: a table, CSV, and an accuracy-vs-latency plot.

A row's accuracy figures are its task's (the flow's `tasks` facts: top-1 and top-5 for a classifier,
mAP50-95 and mAP50 for a detector), so one table holds classifiers and detectors; the plot has one
accuracy panel per task.
"""

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
    # added with detectors: the row's task, its accuracy size and the reference of its speed-up; then
    # the metric keys of the table's other tasks (e.g. map, map50, precision, recall), see csv_columns
    "task",
    "imgsz",
    "reference",
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
    mixed = len(r["tasks"]) > 1
    sized = any(n is None for _, n in _task_sizes(r))  # rows of a task at different sizes: a px column
    accuracy = accuracy_columns(r)
    columns = (
        "artifact", "format", *(["task"] if mixed else []), *(["px"] if sized else []), "size", "params",
        "GFLOPs", *(header for header, _ in accuracy), "latency", "speed-up", "spread",
    )  # fmt: skip
    longest = max(len(row["label"]) for row in r["rows"])
    for col in columns:
        if col == "artifact":  # never shortened: the label is the shortest path ending that tells files apart
            table.add_column(col, justify="left", no_wrap=True, min_width=longest)
        else:
            table.add_column(col, justify="left" if col in ("format", "task") else "right")
    table.add_column("note", justify="left")
    for row in r["rows"]:
        first = row["label"] == row.get("reference", row["label"])
        table.add_row(
            row["label"],
            row["format"],
            *([row["task"]] if mixed else []),
            *([_px_text(row)] if sized else []),
            mb(row["file_bytes"]),
            f"{row['params']:,}",
            "n/a" if row["gflops"] is None else f"{row['gflops']:.4g}",
            *(figure(row, picks(row)) for _, picks in accuracy),
            f"{row['latency_ms']:.2f} ms",
            f"{row['speedup']:.2f}x" + (MARK if row["unstable"] else ""),
            "" if first else _spread_text(row["speedup_spread"]),
            "; ".join(_note_tag(note) for note in row["notes"]),
        )
    out().print(table)
    for line in footnotes(r):
        out().print(line, highlight=False)


def accuracy_columns(r: dict) -> list[tuple[str, object]]:
    """(header, row -> metric facts or None) per accuracy column: column j shows the j-th figure each
    task's rows show ("top-1", or "top-1 / mAP50-95" when classifiers and detectors share the table)."""
    shown = {name: [_metric(facts, key) for key in facts["shown"]] for name, facts in r["tasks"].items()}
    width = max((len(metrics) for metrics in shown.values()), default=0)
    columns = []
    for j in range(width):
        labels = [metrics[j]["label"] for metrics in shown.values() if len(metrics) > j]
        header = " / ".join(dict.fromkeys(labels))

        def pick(row, j=j):
            metrics = shown.get(row["task"], [])
            return metrics[j] if len(metrics) > j else None

        columns.append((header, pick))
    return columns


def _metric(facts: dict, key: str) -> dict:
    return next(m for m in facts["metrics"] if m["key"] == key)


def figure(row: dict, metric: dict | None) -> str:
    """A metric of a row as the table shows it: a percentage, a fraction (mAP) or n/a; "" for a metric
    its task does not have."""
    if metric is None:
        return ""
    value = row.get(metric["key"])
    if value is None:
        return "n/a"
    return pct(value) if metric["percent"] else f"{value:.3f}"


def _px_text(row: dict) -> str:
    """The row's accuracy size, and its timed size when that differs ("64 / 224")."""
    if row["imgsz"] == row["latency_imgsz"]:
        return str(row["imgsz"])
    return f"{row['imgsz']} / {row['latency_imgsz']}"


def _task_sizes(r: dict) -> list[tuple[str, int | None]]:
    """(fitness label, the accuracy size its rows share or None) per task: ("top-1", 64)."""
    sizes = []
    for name, facts in r["tasks"].items():
        label = _metric(facts, facts["fitness_key"])["label"] if facts["fitness_key"] else "accuracy"
        shared = {row["imgsz"] for row in r["rows"] if row["task"] == name}
        sizes.append((label, shared.pop() if len(shared) == 1 else None))
    return sizes


def _title(r: dict) -> str:
    """The sizes (one, or per task: "top-1 at 64 px, mAP50-95 at 128 px, latency at 224 px"), batch,
    rounds and threads."""
    threads = f", {r['threads']} threads" if r["threads"] else ""
    if r["imgsz"] is not None and r["latency_imgsz"] == r["imgsz"]:
        size = f"imgsz {r['imgsz']}"
    else:
        accuracy = ", ".join(
            f"{label} at {n} px" if n else f"{label} at each artifact's size (px)"
            for label, n in _task_sizes(r)
        )
        latency = r["latency_imgsz"]
        size = f"{accuracy}, latency at " + (f"{latency} px" if latency else "the same sizes")
    return f"optkit benchmark  {size}, batch {r['batch']}, {r['rounds']} rounds x {r['runs']} runs{threads}"


def _note_tag(note: str) -> str:
    """The few words the table shows for a row note (the footnote gives the whole note)."""
    from optkit.workflows.benchmark import FAKE_QUANT_NOTE, NO_GAIN_NOTE, PAIRED_NOTE, SIZE_NOTE

    if note == FAKE_QUANT_NOTE:
        return "fake quant"
    if note.startswith(PAIRED_NOTE):  # "8 vs 14 images, p 0.29": the discordant counts and McNemar's p
        return paired_tag(note)
    if SIZE_NOTE in note:
        return "other size"
    return "no gain" if note.startswith(NO_GAIN_NOTE) else note


def paired_tag(note: str) -> str:
    """The table's words for a paired top-1 note (optkit.workflows.benchmark.paired_note): the images only
    this row gets right "vs" those only the reference gets right, and McNemar's p."""
    import re

    mine, theirs, p = re.search(
        r": (\d+) of \d+ images only this one .*?, (\d+) only .* McNemar p ([0-9.]+):", note
    ).groups()
    return f"{mine} vs {theirs} images, p {p}"


def _spread_text(spread: float | None) -> str:
    return "n/a" if spread is None else f"{100 * spread:.0f}%"


def footnotes(r: dict) -> list[str]:
    """How the speed-up was formed and, when a row is marked, why it should not be trusted."""
    if len(r["tasks"]) == 1:
        reference = f"{r['rows'][0]['label']}'s latency"
    else:
        firsts = ", ".join(f"{facts['reference']} for {name}" for name, facts in r["tasks"].items())
        reference = f"the latency of the first artifact of the same task ({firsts})"
    notes = [
        f"speed-up: median over {r['rounds']} interleaved rounds of {reference} / this one's (same "
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


def csv_columns(r: dict) -> list[str]:
    """CSV_COLUMNS, then the metric keys of the table's tasks that it lacks (a detector's map, map50,
    precision, recall)."""
    keys = [m["key"] for facts in r["tasks"].values() for m in facts["metrics"]]
    return list(CSV_COLUMNS) + [k for k in dict.fromkeys(keys) if k not in CSV_COLUMNS]


def write_csv(r: dict, path: str | Path) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=csv_columns(r), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in r["rows"]:
        writer.writerow({**row, "rounds": r["rounds"], "notes": "; ".join(row["notes"])})
    atomic_write_text(path, buf.getvalue())


def write_plot(r: dict, path: str | Path) -> None:
    """The figure of `benchmark_figure`, written atomically as a PNG."""
    import matplotlib.pyplot as plt

    fig = benchmark_figure(r)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)


def benchmark_figure(r: dict):
    """One scatter panel per task, then a bar panel, all on a log latency axis. A task's panel: its
    fitness metric (top-1, mAP50-95; else file size) against median latency, marker colour/shape =
    format, marker area = file size, that task's Pareto front drawn, points numbered as the bars (points
    that coincide share one label). Bars: one per artifact, numbered and labelled by its shortest
    distinguishing path, with its speed-up against the first artifact of its task (dotted line)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    rows = r["rows"]
    groups = [(name, facts, [i for i, row in enumerate(rows) if row["task"] == name])
              for name, facts in r["tasks"].items()]  # fmt: skip
    height = max(4.8, 1.6 + 0.32 * len(rows))  # inches: room for one bar label per artifact
    fig, axes = plt.subplots(
        1,
        len(groups) + 1,
        figsize=(7 * len(groups) + 6, height),
        dpi=120,
        gridspec_kw={"width_ratios": [1.25] * len(groups) + [1]},
    )
    lat = f"median latency, ms (log), batch {r['batch']}" + _at(r["latency_imgsz"])
    biggest = max(row["file_bytes"] for row in rows) or 1
    scored = False
    for ax, (name, facts, members) in zip(axes[:-1], groups, strict=True):
        metric = _plotted_metric(facts, [rows[i] for i in members])
        scored = scored or metric is not None
        _scatter_panel(ax, rows, members, metric, biggest)
        ax.set_xlabel(lat)
        ax.set_ylabel(_y_label(metric, [rows[i] for i in members]))
        if len(groups) > 1:
            ax.set_title(f"{name} ({len(members)} artifact{'s' if len(members) > 1 else ''})", fontsize=10)
    bars = axes[-1]
    _bar_panel(bars, rows, mixed=len(groups) > 1)
    bars.set_xlabel(lat)
    title = "accuracy vs latency" if scored else "file size vs latency"
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


def _at(size: int | None) -> str:
    return f" at {size} px" if size is not None else " at each artifact's size"


def _plotted_metric(facts: dict, rows: list[dict]) -> dict | None:
    """The task's fitness metric when every row of the panel has it, else None (file size is plotted)."""
    key = facts["fitness_key"]
    if key is None or any(row.get(key) is None for row in rows):
        return None
    return _metric(facts, key)


def _y_label(metric: dict | None, rows: list[dict]) -> str:
    if metric is None:
        return "file size, MB"
    sizes = {row["imgsz"] for row in rows}
    at = f"at {sizes.pop()} px" if len(sizes) == 1 else "at each artifact's trained size"
    return f"val {metric['label']}" + (", %" if metric["percent"] else "") + f" ({at})"


def _scatter_panel(ax, rows: list[dict], members: list[int], metric: dict | None, biggest: int) -> None:
    """The points of the rows at `members` (indices into `rows`, numbered i + 1 as the bars)."""
    panel = [rows[i] for i in members]
    xs = [row["latency_ms"] for row in panel]
    ys = [_y_value(row, metric) for row in panel]  # %, a fraction, or MB
    area = [40 + 360 * row["file_bytes"] / biggest for row in panel]  # points^2, by file size
    front = pareto_front(list(zip(xs, ys if metric else [-y for y in ys], strict=True)))
    full = 100.0 if metric is None or metric["percent"] else 1.0  # the scale's full range
    floor = _y_floor(ys, full) if metric else None
    low, high = _pad_y(ax, [y for y in ys if floor is None or y >= floor], least=0.005 * full)
    bottom = low + 0.04 * (high - low)  # where a point under the axis is drawn, its marker inside it
    shown = [y if y >= low else bottom for y in ys]
    ax.step([xs[i] for i in front], [shown[i] for i in front], where="post", color="0.35", ls="--", lw=1.2)
    for i, row in enumerate(panel):
        color, marker = FORMAT_STYLE.get(row["format"], ("tab:gray", "o"))
        if shown[i] != ys[i]:
            marker = "v"  # off the axis: drawn on its floor, its value written beside it
        edge = "black" if i in front else "white"
        ax.scatter(
            xs[i], shown[i], s=area[i], c=color, marker=marker, edgecolors=edge, linewidths=1, zorder=3
        )
    _log_latency_axis(ax)
    ax.set_xlim(min(xs) / 1.6, max(xs) * 1.6)  # room for the labels at both ends
    ax.grid(True, which="both", alpha=0.25)
    labels = []
    for group in _coincident(xs, shown, [y < low for y in ys]):
        text = ",".join(str(members[i] + 1) + (MARK if panel[i]["unstable"] else "") for i in group)
        first = group[0]
        if shown[first] != ys[first]:
            value = f"{ys[first]:.1f}%" if full == 100 else f"{ys[first]:.3f}"
            text += f" ({value}, below the axis)"
        labels.append(((xs[first], shown[first]), text))
    _place_labels(ax, labels)
    ax.legend(
        handles=_legend_handles(panel, biggest),
        fontsize=8,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.16),  # below the axis label, clear of the points
        ncol=4,
        frameon=False,
        labelspacing=1.2,
    )


def _y_value(row: dict, metric: dict | None) -> float:
    if metric is None:
        return row["file_bytes"] / 1e6  # bytes to MB
    value = row[metric["key"]]
    return 100 * value if metric["percent"] else value


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


def _y_floor(ys: list[float], full: float = 100.0) -> float | None:
    """The lowest value the axis is fitted to: a tenth of the scale (10 points of top-1, 0.1 of mAP) under
    the best, so that one artifact far below (e.g. pruned without fine-tuning) does not squash the
    differences among the rest; None if none is."""
    floor = max(ys) - 0.1 * full
    return floor if min(ys) < floor else None


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


def _bar_panel(ax, rows: list[dict], mixed: bool = False) -> None:
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
    task = (lambda row: f" ({row['task']})") if mixed else (lambda row: "")
    ax.set_yticks(ys, [f"{i + 1}  {row['label']}{task(row)}" for i, row in enumerate(rows)], fontsize=8)
    for name in dict.fromkeys(row["task"] for row in rows):  # each task's reference of its speed-ups
        members = [y for y, row in zip(ys, rows, strict=True) if row["task"] == name]
        first = rows[n - 1 - max(members)]
        ax.vlines(first["latency_ms"], min(members) - 0.45, max(members) + 0.45, color="0.3", ls=":", lw=1)
    _log_latency_axis(ax)
    low, high = min(row["latency_ms"] for row in rows), max(row["latency_ms"] for row in rows)
    ax.set_xlim(low / 2, high * 6)  # room for the text after the longest bar
    ax.grid(True, axis="x", which="both", alpha=0.25)


def _log_latency_axis(ax) -> None:
    """A log x axis ticked 1-2-5 (…, 0.5, 1, 2, 5, 10, …) with plain numbers, so a range narrower than a
    decade still reads, and no minor labels crowd it."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the (latency, score) points that no other point beats on both (lower latency, higher
    score, one of them strictly), sorted by latency."""

    def beaten(p: tuple[float, float]) -> bool:
        return any(q[0] <= p[0] and q[1] >= p[1] and q != p for q in points)

    return sorted((i for i, p in enumerate(points) if not beaten(p)), key=lambda i: points[i])


def _coincident(xs: list[float], ys: list[float], kinds: list | None = None) -> list[list[int]]:
    """Groups of point indices that would sit on top of each other (within 3% of the log-x span and of
    the y span), so each group gets one label; points of different `kinds` (e.g. drawn under the axis
    or at their value) never share one."""
    import math

    lx = [math.log10(x) for x in xs]
    span_x = max(max(lx) - min(lx), 0.1)
    span_y = max(max(ys) - min(ys), 1e-9)
    groups: list[list[int]] = []
    for i in range(len(xs)):
        for group in groups:
            j = group[0]
            same_kind = kinds is None or kinds[i] == kinds[j]
            if same_kind and abs(lx[i] - lx[j]) < 0.03 * span_x and abs(ys[i] - ys[j]) < 0.03 * span_y:
                group.append(i)
                break
        else:
            groups.append([i])
    return groups


def _pad_y(ax, ys: list[float], least: float = 0.5) -> tuple[float, float]:
    """Room above and below the points: 15% of their range, at least `least` (axis units). Returns the
    axis limits (low, high)."""
    low, high = min(ys), max(ys)
    pad = max(0.15 * (high - low), least)
    ax.set_ylim(low - pad, high + pad)
    return low - pad, high + pad


def _size_keys(biggest: int) -> list[float]:
    """Two file sizes (bytes) for the marker-size legend: the largest and a quarter of it."""
    return [biggest / 4, biggest]
