"""What `optkit train` shows: a progress bar per epoch on stderr, an epoch line, a final summary."""

from __future__ import annotations

import time

from optkit.report.console import err, out, pct
from optkit.report.progress import StepDisplay


class TrainDisplay(StepDisplay):
    """A StepDisplay that also shows the Trainer's events (`display(event, **info)`): a bar per epoch on
    a terminal, and a line per epoch everywhere."""

    epoch_step = None  # the bar of the epoch being trained
    metrics = ()  # the task's metrics (optkit.tasks.Metric), shown on each epoch line

    def __call__(self, event: str, **info) -> None:
        getattr(self, f"_on_{event}")(**info)

    def _on_log(self, line: str) -> None:
        self.line(line)

    def _on_start(
        self, save_dir, start_epoch: int, notes: list[str], metrics=(), loss_names=("loss",)
    ) -> None:
        self.metrics, self.loss_names = metrics, loss_names
        for note in notes:
            self.note(note)
        resumed = f" (resuming at epoch {start_epoch + 1})" if start_epoch else ""
        self.line(f"training -> {save_dir}{resumed}")

    def _on_batch(self, epoch: int, i: int, nb: int, loss: float, seen: int, lr: float) -> None:
        if self.epoch_step is None:  # a bar only: the epoch line below follows
            self.epoch_step = self.step(f"epoch {epoch + 1}", total=nb, line=False)
            self.t0 = time.perf_counter()
        speed = seen / max(time.perf_counter() - self.t0, 1e-9)  # images per second this epoch
        self.epoch_step.advance(info=f"loss {loss:.4f}  lr {lr:.2e}  {speed:,.0f} img/s")

    def _on_epoch(self, row: dict, improved: bool, images_per_s: float) -> None:
        if self.epoch_step is not None:
            self.epoch_step.close()
            self.epoch_step = None
        star = " *" if improved else ""
        self.line(
            f"epoch {row['epoch']:>3}  {_loss_text(self.loss_names, row)}  "
            f"{_metric_text(self.metrics, row)}  lr {row['lr_weights']:.2e}  "
            f"{images_per_s:,.0f} img/s  {row['time']:.1f}s{star}"
        )


def _loss_text(loss_names, row: dict) -> str:
    """'loss 0.4321  val_loss 0.5012' for one loss; the parts of several ('box 1.20/1.31  cls ...',
    train/val) otherwise."""
    if tuple(loss_names) == ("loss",):
        return f"loss {row['train_loss']:.4f}  val_loss {row['val_loss']:.4f}"
    return "  ".join(
        f"{n.removesuffix('_loss')} {row[f'train_{n}']:.3f}/{_maybe(row[f'val_{n}'])}" for n in loss_names
    )


def _maybe(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _metric_text(metrics, values: dict, label: bool = False) -> str:
    """'top1 96.00%  top5 100.00%' (keys; labels with `label`), as each metric is shown."""
    return "  ".join(
        f"{m.label if label else m.key} {pct(values[m.key]) if m.percent else format(values[m.key], '.4f')}"
        for m in metrics
    )


def print_summary(result) -> None:
    from rich.table import Table

    from optkit.tasks import get_task

    task = get_task(result.task)
    best = next(m for m in task.metrics if m.key == result.fitness_key)
    best_text = (
        f"{task.fitness_label} {result.best_fitness:.4f}"
        if task.fitness_label
        else _metric_text([best], {best.key: result.best_fitness}, True)
    )

    for note in result.notes:
        err().print(f"note: {note}")
    table = Table(title="optkit train", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    table.add_row("run", str(result.save_dir))
    table.add_row("epochs", f"{result.epoch}" + (" (stopped early)" if result.stopped_early else ""))
    table.add_row("best epoch", f"{result.best_epoch}  {best_text}")
    if result.final:
        table.add_row("last epoch", _metric_text(task.metrics, result.final, label=True))
    table.add_row("throughput", f"{result.images_per_s:,.0f} img/s (training)")
    table.add_row("time", f"{result.seconds:.1f} s")
    table.add_row("best.pt", str(result.best))
    table.add_row("last.pt", str(result.last))
    out().print(table)
