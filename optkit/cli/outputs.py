"""Where a stage writes: `<stem>-<stage>.pt` beside the input, or `-o PATH`; never over the input
unless the user names it with -o."""

from __future__ import annotations

from pathlib import Path

from optkit.errors import ConfigError


def stage_output(source: str | Path, stage: str, output: str | None) -> Path:
    source = Path(source)
    if output is None:
        return source.with_name(f"{source.stem}-{stage}.pt")
    path = Path(output)
    if path.is_dir():
        raise ConfigError(
            f"-o {path} is a directory; give a file path such as {path / (source.stem + '.pt')}"
        )
    if path.suffix.lower() == ".onnx":
        raise ConfigError(f"-o {path}: this command writes a .pt checkpoint, not ONNX (see optkit export)")
    return path


def file_size(path: str | Path) -> int:
    return Path(path).stat().st_size  # bytes
