"""The `optkit models` flow: every registered model built once, with its parameter count at the
requested number of classes, its default input size and its stride."""

from __future__ import annotations

from dataclasses import dataclass

from optkit.limits import NUM_CLASSES


@dataclass
class ModelsRequest:
    include_test: bool = False  # also the tiny models the test suite uses
    num_classes: int = 1000  # classes of the head the parameters are counted with

    def __post_init__(self) -> None:
        NUM_CLASSES.check("--num-classes", self.num_classes)


def run_models(req: ModelsRequest, progress=None) -> dict:
    """{"num_classes", "models": [{name, params, default_imgsz, stride, description}, ...]} in registry
    order. `progress`: an optkit.report.progress display (default: quiet)."""
    from optkit.models import count_params, create_model, get_spec, list_models
    from optkit.report.progress import Quiet

    progress = progress or Quiet()
    names = list_models(include_test=req.include_test)
    rows = []
    with progress.step("building the registered models", total=len(names), line=False) as step:
        for name in names:
            spec = get_spec(name)
            model = create_model(name, num_classes=req.num_classes)
            rows.append(
                {
                    "name": name,
                    "params": count_params(model),
                    "default_imgsz": spec.default_imgsz,
                    "stride": model.stride,
                    "description": spec.description,
                }
            )
            step.advance(1)
    return {"num_classes": req.num_classes, "models": rows}
