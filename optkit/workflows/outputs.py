"""Where a stage writes: `<stem>-<stage>.pt` beside the input, or `-o PATH`; never over the input
unless the user names it with -o. Every output path is checked writable here, before any work
(optkit.io.check_writable)."""

from __future__ import annotations

from pathlib import Path

from optkit.errors import ConfigError
from optkit.io import check_writable


def stage_output(source: str | Path, stage: str, output: str | None) -> Path:
    source = Path(source)
    if output is None:
        return check_writable(source.with_name(f"{source.stem}-{stage}.pt"), hint=DEFAULT_HINT)
    path = Path(output)
    if path.is_dir():
        raise ConfigError(
            f"-o {path} is a directory; give a file path such as {path / (source.stem + '.pt')}"
        )
    if path.suffix.lower() == ".onnx":
        raise ConfigError(f"-o {path}: this command writes a .pt checkpoint, not ONNX (see optkit export)")
    return check_writable(path, "-o")


DEFAULT_HINT = "give -o PATH to write elsewhere"  # the default output goes beside the input


def check_run_folder(project: str | Path, resume: str | None = None) -> Path:
    """Where a trainer will write, checked before it starts (see check_writable): the folder of the
    run folders (`--project`), or with `resume` the folder of the last.pt it rewrites."""
    if resume is not None:
        return check_writable(Path(resume).parent, "the folder of --resume", folder=True)
    return check_writable(project, "--project", folder=True)


def check_outputs(paths: dict[str, str | None]) -> None:
    """Extra output files by option (`{"--csv": path or None, ...}`), checked before any work."""
    for option, path in paths.items():
        if path:
            check_writable(path, option)


def file_size(path: str | Path) -> int:
    return Path(path).stat().st_size  # bytes
