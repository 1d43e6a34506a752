"""`optkit models`: the model registry."""

from __future__ import annotations

from typing import Annotated

import typer

from optkit.cli import options as o


def models(
    all_models: Annotated[bool, typer.Option("--all", help="Include the tiny test models.")] = False,
    num_classes: Annotated[int, typer.Option("--num-classes", help="Classes for the param count.")] = 1000,
    json_out: o.Json = False,
    debug: o.Debug = False,
) -> None:
    """List the registered models: name, params, default imgsz, stride."""
    from optkit.models import count_params, create_model, get_spec, list_models
    from optkit.report.console import emit_json, out

    rows = []
    for name in list_models(include_test=all_models):
        spec = get_spec(name)
        model = create_model(name, num_classes=num_classes)
        rows.append(
            {
                "name": name,
                "params": count_params(model),
                "default_imgsz": spec.default_imgsz,
                "stride": model.stride,
                "description": spec.description,
            }
        )
    if json_out:
        emit_json({"num_classes": num_classes, "models": rows})
        return
    from rich.table import Table

    table = Table(title=f"optkit models (params at {num_classes} classes)")
    for col in ("name", "params", "imgsz", "stride", "description"):
        table.add_column(col, justify="right" if col in ("params", "imgsz", "stride") else "left")
    for r in rows:
        table.add_row(
            r["name"], f"{r['params']:,}", str(r["default_imgsz"]), str(r["stride"]), r["description"]
        )
    out().print(table)
