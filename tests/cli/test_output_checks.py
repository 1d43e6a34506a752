"""Every output location is checked before any work (optkit.io.check_writable): an `-o`, `--csv`,
`--plot` or `--project` that cannot be written ends the command at once with one line
`error: cannot write <option> <path>: <reason>`, exit 1, no model built and nothing left behind.

The table of writing commands is checked against `optkit.cli.app.COMMANDS`, so a new command must say
here whether (and where) it writes.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
from pathlib import Path

import pytest
import torch

from optkit.cli.app import COMMANDS

NAMES = ["blue", "green", "red"]

# command -> cases (case id, args): {C} a valid checkpoint, {D} the tiny dataset, {F} a file (the
# unwritable place comes from the `place` parameter: under a regular file, or in /proc)
WRITERS = {
    "train": [
        ("project", ["train", "--model", "test-tiny", "--data", "{D}", "--epochs", "1", "--workers", "0",
                     "--project", "{DIR}"]),
    ],
    "fuse": [("output", ["fuse", "{C}", "-o", "{FILE}.pt"])],
    "prune": [
        ("output", ["prune", "{C}", "--amount", "0.3", "-o", "{FILE}.pt"]),
        ("finetune-output", ["prune", "{C}", "--structured", "--amount", "0.3", "--data", "{D}",
                             "--finetune-epochs", "1", "--workers", "0", "-o", "{FILE}.pt"]),
    ],
    "strip": [("output", ["strip", "{C}", "-o", "{FILE}.pt"])],
    "export": [("output", ["export", "{C}", "-o", "{FILE}.onnx"])],
    "ptq-calibrate": [("output", ["ptq-calibrate", "{C}", "--data", "{D}", "--num-images", "8",
                                  "-o", "{FILE}.pt"])],
    "qat": [
        ("project", ["qat", "{C}", "--data", "{D}", "--epochs", "1", "--workers", "0", "--project", "{DIR}"]),
    ],
    "predict": [("project", ["predict", "{C}", "--source", "{D}", "--save", "--project", "{DIR}"])],
    "convert": [("output", ["convert", "{C}", "--trust", "-o", "{FILE}.pt"])],
    "deploy": [
        ("output", ["deploy", "{C}", "--data", "{D}", "--max-drop", "1", "-o", "{FILE}.onnx"]),
        ("work", ["deploy", "{C}", "--data", "{D}", "--max-drop", "1", "--work", "{DIR}"]),
    ],
    "benchmark": [
        ("csv", ["benchmark", "{C}", "--runs", "1", "--warmup", "0", "--csv", "{FILE}.csv"]),
        ("plot", ["benchmark", "{C}", "--runs", "1", "--warmup", "0", "--plot", "{FILE}.png"]),
    ],
}  # fmt: skip
READ_ONLY = {"val", "info", "models", "profile"}  # write nothing (profile's ORT trace goes to a temp dir)
OUTPUT_PARAMETERS = {"output", "project", "csv_path", "plot"}  # a command with one of these writes

PLACES = ["under-a-file", "proc"]


def _parameters(command: str) -> set[str]:
    module, func = COMMANDS[command].split(":")
    return set(inspect.signature(getattr(importlib.import_module(module), func)).parameters)


def test_every_command_is_classified_as_writer_or_read_only():
    assert set(WRITERS) | READ_ONLY == set(COMMANDS), set(COMMANDS) ^ (set(WRITERS) | READ_ONLY)
    assert not set(WRITERS) & READ_ONLY
    for command in READ_ONLY:  # a read-only command that gains an output option must move to WRITERS
        assert not _parameters(command) & OUTPUT_PARAMETERS, command


def _snapshot(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = "dir"
        for f in filenames:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    from image_folders import write_image_folder

    from optkit.checkpoint import checkpoint_from_model, save_checkpoint
    from optkit.models import create_model

    root = tmp_path_factory.mktemp("output-check-inputs")
    torch.manual_seed(0)
    model = create_model("test-tiny", num_classes=3)
    return {
        "root": root,
        "{C}": save_checkpoint(checkpoint_from_model(model, NAMES, 32), root / "good.pt"),
        "{D}": write_image_folder(root / "colors", NAMES, per_class=8),
    }


@pytest.fixture
def builds(monkeypatch) -> list[str]:
    """Names of the models built during the test (no work: no model is built)."""
    import optkit.models
    import optkit.models.registry

    calls: list[str] = []
    real = optkit.models.registry.create_model

    def counting(name, *args, **kwargs):
        calls.append(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(optkit.models.registry, "create_model", counting)
    monkeypatch.setattr(optkit.models, "create_model", counting)
    return calls


def _place(kind: str, tmp_path: Path) -> Path:
    if kind == "under-a-file":
        (tmp_path / "afile").write_text("a regular file, not a folder")
        return tmp_path / "afile" / "sub"
    if not os.path.isdir("/proc/self"):
        pytest.skip("needs Linux /proc (a folder that takes no new files, even for root)")
    return Path("/proc/optkit-output-check")


def _cases():
    for command, cases in WRITERS.items():
        for case, args in cases:
            for place in PLACES:
                yield pytest.param(command, args, place, id=f"{command}-{case}-{place}")


@pytest.mark.parametrize("command, args, place", list(_cases()))
def test_unwritable_output_is_refused_before_any_work(
    cli, tmp_path, monkeypatch, inputs, builds, command, args, place
):
    monkeypatch.chdir(tmp_path)  # default run folders (runs/...) would appear here
    where = _place(place, tmp_path)
    values = {**{k: str(v) for k, v in inputs.items() if k != "root"}, "{FILE}": str(where / "x"),
              "{DIR}": str(where / "runs")}  # fmt: skip
    argv = []
    for a in args:
        for key, value in values.items():
            a = a.replace(key, value)
        argv.append(a)
    before = (_snapshot(tmp_path), _snapshot(inputs["root"]))
    r = cli(*argv)
    lines = r.err.strip().splitlines()
    assert r.code == 1, (r.code, r.err)
    assert len(lines) == 1 and lines[0].startswith("error: cannot write "), r.err
    assert str(where) in lines[0] and "unexpected" not in lines[0], lines[0]
    assert r.out == ""
    assert builds == [], f"built {builds} before refusing: {lines[0]}"
    assert (_snapshot(tmp_path), _snapshot(inputs["root"])) == before  # no run folder, no temp file


def test_prune_fine_tune_run_folder_is_checked_before_pruning(cli, tmp_path, monkeypatch, inputs, builds):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").write_text("a file where runs/prune would go")
    r = cli("prune", inputs["{C}"], "--structured", "--amount", "0.3", "--data", inputs["{D}"],
            "--finetune-epochs", "1", "--workers", "0", "-o", tmp_path / "small.pt")  # fmt: skip
    lines = r.err.strip().splitlines()
    assert r.code == 1 and len(lines) == 1, r.err
    assert lines[0].startswith("error: cannot write ") and "runs/prune" in lines[0], lines[0]
    assert builds == [] and not (tmp_path / "small.pt").exists()


def test_default_output_beside_an_unwritable_input_is_refused_first(cli, tmp_path, monkeypatch, builds):
    """The output beside the input (no -o) is checked too: a read-only place is simulated by making the
    write probe fail, as root can write anywhere a chmod would forbid."""
    import errno

    import optkit.io
    from optkit.checkpoint import checkpoint_from_model, save_checkpoint
    from optkit.models import create_model

    ckpt = save_checkpoint(checkpoint_from_model(create_model("test-tiny", num_classes=3), NAMES, 32),
                           tmp_path / "m.pt")  # fmt: skip
    builds.clear()
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):
        if flags & os.O_CREAT and Path(path).parent == tmp_path:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(optkit.io.os, "open", read_only)
    r = cli("fuse", ckpt)
    lines = r.err.strip().splitlines()
    assert r.code == 1 and len(lines) == 1, r.err
    assert "cannot write" in lines[0] and "m-fused.pt" in lines[0] and "Read-only" in lines[0], lines[0]
    assert builds == []


# ---- the check itself --------------------------------------------------------------------------


def test_check_writable_accepts_creatable_paths_and_leaves_nothing(tmp_path):
    from optkit.io import check_writable

    assert check_writable(tmp_path / "a" / "b" / "x.pt", "-o") == tmp_path / "a" / "b" / "x.pt"
    check_writable(tmp_path / "runs" / "exp", "--project", folder=True)
    (tmp_path / "old.pt").write_bytes(b"old")
    check_writable(tmp_path / "old.pt", "-o")  # an existing file is replaced by a rename: fine
    assert sorted(os.listdir(tmp_path)) == ["old.pt"]  # no folder made, no probe file left
    assert (tmp_path / "old.pt").read_bytes() == b"old"


@pytest.mark.parametrize(
    "make, folder, fragment",
    [
        (lambda t: (t / "f").write_text("x") and t / "f" / "x.pt", False, "is a file, not a folder"),
        (lambda t: (t / "d").mkdir() or t / "d", False, "is a folder"),
        (lambda t: (t / "f").write_text("x") and t / "f", True, "is a file, not a folder"),
        (lambda t: (t / "link").symlink_to(t / "gone") or t / "link" / "x.pt", False, "broken"),
    ],
    ids=["parent-is-a-file", "target-is-a-folder", "folder-is-a-file", "broken-link"],
)
def test_check_writable_names_the_reason(tmp_path, make, folder, fragment):
    from optkit.errors import OptkitError
    from optkit.io import check_writable

    path = make(tmp_path)
    with pytest.raises(OptkitError) as e:
        check_writable(path, "-o", folder=folder)
    assert str(e.value).startswith(f"cannot write -o {path}: ") and fragment in str(e.value), e.value


def test_a_write_into_a_file_path_fails_with_one_clear_error(tmp_path):
    """Where the check could not run (the library called directly, or the place changed meanwhile),
    the atomic write itself says what is wrong instead of FileExistsError."""
    from optkit.checkpoint import checkpoint_from_model, save_checkpoint
    from optkit.errors import OptkitError
    from optkit.models import create_model

    (tmp_path / "afile").write_text("x")
    ckpt = checkpoint_from_model(create_model("test-tiny", num_classes=3), NAMES, 32)
    with pytest.raises(OptkitError, match=r"cannot write .*afile/x\.pt: .*afile is a file, not a folder"):
        save_checkpoint(ckpt, tmp_path / "afile" / "x.pt")
    assert os.listdir(tmp_path) == ["afile"]
