"""The two consoles: results to stdout, progress and logs to stderr (so `--json` stdout stays clean)."""

from __future__ import annotations

import functools
import json
import os
import sys

PIPE_WIDTH = 140  # columns for tables when stdout is a file or pipe (Rich would assume 80)


@functools.cache
def out():
    from rich.console import Console

    console = Console(soft_wrap=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = PIPE_WIDTH
    return console


@functools.cache
def err():
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)  # log lines are never wrapped mid-line


def emit_json(obj: dict) -> None:
    """One JSON object on stdout, nothing else."""
    sys.stdout.write(json.dumps(obj, default=_jsonable) + "\n")
    sys.stdout.flush()


def _jsonable(obj):
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def pct(x: float | None, digits: int = 2) -> str:
    """Fraction -> percent text; None -> 'n/a'."""
    return "n/a" if x is None else f"{100 * x:.{digits}f}%"


def mb(num_bytes: int) -> str:
    return f"{num_bytes / 1e6:.2f} MB"  # bytes to MB (10^6, as file managers show)


def kv_table(title: str, rows: list[tuple[str, str]]):
    """A two-column key/value Rich table (the summary every stage command prints)."""
    from rich.table import Table

    table = Table(title=title, show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    for key, value in rows:
        table.add_row(key, value)
    return table
