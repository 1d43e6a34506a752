"""Atomic file writes: write to a temp file in the target folder, fsync, rename, fsync the folder.

A reader (or a crash) sees either the old file or the complete new one, never half of one.

Temp files are named `.<target name>.<writer pid>.<random>.tmp` beside the target. A process killed
mid-write (SIGKILL, power loss) cannot remove its temp file; the next write into the same folder removes
those whose writer process is gone (`remove_stale_temps`), so they never pile up. Nothing reads them:
they start with a dot and end in `.tmp`, so globs such as `weights/*.pt` do not match them.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

_TEMP_SUFFIX = ".tmp"


def temp_path_for(path: str | os.PathLike) -> Path:
    """A fresh temp name beside `path` that records this process's id (see the module docstring)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}{_TEMP_SUFFIX}")


_TEMP_NAME = re.compile(rf"^\..+\.(\d+)\.[0-9a-f]{{12}}{re.escape(_TEMP_SUFFIX)}$")  # see temp_path_for


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Remove optkit's temp files in `folder` whose writer process no longer exists.

    Temp files of live processes (another writer at work right now) are left alone. Returns the
    removed paths.
    """
    pattern = _TEMP_NAME
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:  # the folder does not exist (yet) or cannot be listed: nothing to clean
        return removed
    for entry in entries:
        match = pattern.match(entry.name)
        if match is None or _pid_alive(int(match.group(1))):
            continue
        with contextlib.suppress(OSError):  # raced with another cleaner, or not ours to delete
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)  # signal 0: existence check only
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # exists but belongs to someone else, or cannot tell: keep the file
    return True


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path` for the caller to create and write; on clean exit it is renamed
    onto `path`, on error (or Ctrl-C) removed. Folders made for it are removed on error too."""
    path = Path(path)
    missing = [p for p in [path.parent, *path.parent.parents] if not p.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent)
    tmp = temp_path_for(path)
    try:
        yield tmp
        _fsync(tmp)  # the data is on disk before the name points at it
        os.replace(tmp, path)
        _fsync(path.parent)  # and the rename itself (a folder entry) survives a power loss
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        for folder in missing:  # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()
        interrupt = _interrupt_behind(e)
        if interrupt is not None and interrupt is not e:
            # Ctrl-C inside the writer, which then failed closing the half-written file (torch.save's
            # zip writer raises "unexpected pos ..."): the interrupt is what happened, say that
            raise interrupt from None
        raise


def _interrupt_behind(error: BaseException) -> KeyboardInterrupt | None:
    """The KeyboardInterrupt that `error` was raised while handling, if any (or `error` itself)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KeyboardInterrupt):
            return error
        seen.add(id(error))
        error = error.__context__
    return None


def _fsync(path: Path) -> None:
    """Flush a file's, or a folder's entries', writes to disk. Where a folder cannot be opened or
    fsynced (Windows, some network filesystems) there is nothing more to do: skipped."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temp file beside `path`; on clean exit it replaces `path`, on error it is removed.

    The temp file is created like `open(path, "x")` would (permissions from the umask); atomic_path
    fsyncs it before the rename and the folder after it, so after a crash or a power loss `path` is the
    old file or the whole new one.
    """
    if "w" not in mode:
        raise ValueError(f"atomic_open writes whole files; mode must contain 'w', got {mode!r}")
    with atomic_path(path) as tmp:
        with open(tmp, mode.replace("w", "x")) as f:
            yield f


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_write_with(path: str | os.PathLike, writer: Callable[[IO], None]) -> None:
    """Call `writer(file)` on a binary temp file, then move it to `path`."""
    with atomic_open(path, "wb") as f:
        writer(f)
