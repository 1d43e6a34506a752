"""Long work, shown on stderr: a Rich progress bar on a terminal, one line per step otherwise.

Library code never prints; a flow that may run for more than a moment takes a `progress` object and
reports its steps through it:

    with progress.step("calibrating (mse) on 512 images", total=512) as step:
        for x in batches:
            model(x)
            step.advance(len(x))
    progress.warn("calibrating on 1 image: ...")

`Quiet` (the default of every flow) shows nothing. `StepDisplay` (what the CLI passes) draws on the
stderr console, so `--json` on stdout stays clean: on a terminal each step is a transient Rich bar (a
pulsing bar and the elapsed time when the step has no count); on a pipe, a file or a CI log each step
is one line, printed when it starts. `optkit.report.train.TrainDisplay` is a StepDisplay that also
shows the trainer's events (`progress(event, **info)`: a bar per epoch, a line per epoch).

A flow checks its inputs before its first step that prints a line (`line=False` steps show only on a
terminal), so bad input still gives exactly one `error: ...` line.
"""

from __future__ import annotations


class Step:
    """One step of long work (a context manager); `advance` moves its bar. This one shows nothing."""

    def __enter__(self) -> Step:
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False

    def advance(self, amount: float = 1, info: str | None = None) -> None:
        """`amount` more units done; `info` replaces the text shown after the count."""

    def close(self) -> None:
        """The step is over (its bar goes away)."""


class Quiet:
    """Shows nothing: the default `progress` of library calls."""

    def step(self, text: str, total: float | None = None, line: bool = True) -> Step:
        """A step described by `text`; `total`: its units (images, batches) when they can be counted;
        `line=False`: shown on a terminal only (steps that may still end in an input error)."""
        return Step()

    def line(self, text: str) -> None:
        """A line that stays (terminal or not)."""

    def note(self, text: str) -> None:
        self.line(f"note: {text}")

    def warn(self, text: str) -> None:
        self.line(f"warning: {text}")

    def __call__(self, event: str, **info) -> None:
        """The trainer's events (optkit.train.trainer.Trainer's `progress`): ignored here."""


class StepDisplay(Quiet):
    """Steps on the stderr console (or `console`): bars on a terminal, lines elsewhere. Use it as a
    context manager; outside one (or when the console is no terminal) steps print lines."""

    def __init__(self, console=None):
        self.console = console
        self.bar = None  # the Rich Progress while entered on a terminal

    def __enter__(self) -> StepDisplay:
        if self.console is None:
            from optkit.report.console import err

            self.console = err()
        if is_terminal(self.console):
            self.bar = _rich_bar(self.console)
            self.bar.start()
        return self

    def __exit__(self, *exc) -> bool:
        if self.bar is not None:
            self.bar.stop()  # transient: the bars go, the lines printed above them stay
            self.bar = None
        return False

    def step(self, text: str, total: float | None = None, line: bool = True) -> Step:
        if self.bar is not None:
            return _BarStep(self.bar, self.bar.add_task(text, total=total, info=""))
        if line:
            self.line(text)
        return Step()

    def line(self, text: str) -> None:
        if self.console is None:
            from optkit.report.console import err

            self.console = err()
        # no markup or highlighting: paths and layer names are printed as they are ("[1]" stays)
        self.console.print(text, markup=False, highlight=False)


class _BarStep(Step):
    def __init__(self, bar, task):
        self.bar, self.task = bar, task

    def advance(self, amount: float = 1, info: str | None = None) -> None:
        if self.task is not None:
            self.bar.update(self.task, advance=amount, **({} if info is None else {"info": info}))

    def close(self) -> None:
        if self.task is not None:
            self.bar.remove_task(self.task)
            self.task = None


def is_terminal(console) -> bool:
    """Whether `console` redraws a bar in place: a terminal (not TERM=dumb) that Rich found interactive
    when the console was made (Rich draws live displays only then)."""
    return console.is_terminal and console.is_interactive


def _rich_bar(console):
    """description, bar, done/total (nothing when uncounted), info, elapsed; gone when finished."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.text import Text

    class Count(MofNCompleteColumn):
        def render(self, task):
            return Text("") if task.total is None else super().render(task)

    return Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        Count(),
        TextColumn("{task.fields[info]}", markup=False),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
