"""What `train --resume` needs beside last.pt, checked before anything is written.

A run folder is `<run>/weights/{last,best}.pt` + `<run>/results.csv` + `<run>/args.yaml`. A resume
continues the run folder that last.pt sits in, wherever that folder was moved. Exact resume needs
results.csv (the rows of the epochs already run: the resumed run keeps them) and best.pt (the best epoch so
far, which the resumed run keeps unless a later epoch beats it); args.yaml is a record written again from
last.pt's own options at every start, so a run folder without it still resumes.
"""

from __future__ import annotations

from pathlib import Path

from optkit.errors import CheckpointError, DatasetError
from optkit.limits import FieldsError
from optkit.train.results import read_results

FIELDS = ("resume_from", "weights", "data")  # TrainConfig's fields the messages name (a flow: its flags)


class ResumeFileError(FieldsError, CheckpointError):
    """last.pt cannot be resumed where it is; the message names TrainConfig's fields."""

    def __init__(self, template: str, **values):
        super().__init__(template, FIELDS, **values)


class ResumeDataError(FieldsError, DatasetError):
    """The dataset a resume needs is not there, or not the same; the message names TrainConfig's fields."""

    def __init__(self, template: str, **values):
        super().__init__(template, FIELDS, **values)


def short_names(names: list[str], n: int = 6) -> str:
    """'a, b, c' (the first n, then '...'): class lists in one-line messages."""
    return ", ".join(names[:n]) + (", ..." if len(names) > n else "")


def run_folder_of(last: str | Path) -> Path:
    """<run>/weights/last.pt -> <run> (absolute; a link to last.pt is not followed: the folder the user
    named is the run)."""
    path = Path(last).absolute()
    if path.parent.name != "weights":
        raise ResumeFileError(
            "{last} is not in a run folder (<run>/weights/last.pt): {resume_from} continues the run it "
            "belongs to; put it back in its run folder's weights/, or start a new run from it with "
            "{weights} {last}",
            last=last,
        )
    return path.parent.parent


def check_run_folder(run: Path, epochs_done: int, best_epoch: int, rows_carried: bool = False) -> None:
    """Refuse a run folder that lacks what exact resume keeps. `epochs_done`: epochs last.pt holds;
    `best_epoch`: the best so far (1-based; 0 = none); `rows_carried`: last.pt carries the results rows
    itself (optkit.train.results.carried_rows): results.csv may then lack the last epoch's row, whose
    write failed after last.pt was saved (a full disk); the resume writes it again from last.pt."""
    results = run / "results.csv"
    moved = "move the whole run folder, not last.pt alone"
    late = {epochs_done} if rows_carried else set()  # the one row results.csv may lack
    if not results.is_file() and not (rows_carried and epochs_done == 1):  # epoch 1's write failed
        raise CheckpointError(
            f"{results} is missing: it holds epochs 1-{epochs_done} of this run, which a resume keeps; "
            + moved
        )
    have = {int(r["epoch"]) for r in read_results(results, up_to_epoch=epochs_done)}
    missing = [e for e in range(1, epochs_done + 1) if e not in have | late]
    if missing:
        raise CheckpointError(
            f"{results} lacks the rows of {_epochs_text(missing)} (last.pt holds {epochs_done} epochs): "
            f"it is not this run's results.csv; {moved}"
        )
    best = run / "weights" / "best.pt"
    if best_epoch > 0 and not best.is_file():
        raise CheckpointError(
            f"{best} is missing: it holds epoch {best_epoch}, the best so far, which a resume keeps; "
            "put it back beside last.pt"
        )


def check_same_classes(data_names: list[str], ckpt_names: list[str], root, last) -> None:
    """A resumed run trains the classes last.pt was trained on: a dataset whose classes changed (a class
    added, removed or renamed, or a relative --data read from another folder) is refused."""
    if list(data_names) != list(ckpt_names):
        raise ResumeDataError(
            "dataset classes changed since {last} was saved: {root} has {n_data} ({data_names}), last.pt "
            "has {n_ckpt} ({ckpt_names}); resume needs the data the run started on (or start a new run "
            "from it with {weights})",
            last=last, root=root, n_data=len(data_names), data_names=short_names(data_names),
            n_ckpt=len(ckpt_names), ckpt_names=short_names(ckpt_names),
        )  # fmt: skip


def check_saved_data(data: str, last) -> None:
    """A resume without --data reads the dataset path saved in last.pt (a relative one from the current
    folder); when nothing is there, say how to point to where the dataset is now."""
    path = Path(data).expanduser()
    if data.startswith("builtin:") or path.exists():
        return
    relative = "" if path.is_absolute() else f" (a relative path, read from {Path.cwd()})"
    raise ResumeDataError(
        "{path}: the dataset {last} was trained on is not there{relative}; if it moved, pass "
        "{data} NEW_PATH (a dataset with the same classes)",
        path=data,
        last=last,
        relative=relative,
    )


def _epochs_text(epochs: list[int]) -> str:
    listed = ", ".join(str(e) for e in epochs[:5]) + (", ..." if len(epochs) > 5 else "")
    return ("epoch " if len(epochs) == 1 else "epochs ") + listed
