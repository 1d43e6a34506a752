"""Atomic file writes: write to a temp file in the target folder, fsync, rename, fsync the folder.

A reader (or a crash) sees either the old file or the complete new one, never half of one.

Temp files are named `.<target name>.<writer pid>.<random>.tmp` beside the target. A process killed
mid-write (SIGKILL, power loss) cannot remove its temp file; the next write into the same folder removes
those whose writer process is gone (`remove_stale_temps`), so they never pile up. Nothing reads them:
they start with a dot and end in `.tmp`, so globs such as `weights/*.pt` do not match them.

Writes that fail say why in one line (`WriteError`): a full disk is "no space left on <folder>" (torch's
zip writer reports ENOSPC as "unexpected pos": the OSError behind it, or the free space, tells), a file
size limit is "file too large", an unwritable place names the place. Commands call `check_writable`
on every output before any work, so those are found in a second, not after a fine-tune.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from optkit.errors import OptkitError, error_behind

_TEMP_SUFFIX = ".tmp"


class WriteError(OptkitError):
    """An output cannot be written: an unwritable or missing place, a full disk, a file size limit."""


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


def check_writable(path: str | os.PathLike, option: str = "", folder: bool = False, hint: str = "") -> Path:
    """Refuse, before any work, an output that could not be written; returns `path`.

    `path` is a file to write (or, with folder=True, a folder to create or write into). Every existing
    part of its folder chain must be a folder, and the deepest existing one must take a new file: a
    probe file is created there and removed at once, so the check leaves nothing behind (folders that
    do not exist yet are not made). `option` names where the path came from in the message:
    `cannot write -o /proc/x.pt: cannot create files in /proc (No such file or directory)`; `hint`, what
    to do, ends it.
    """
    path = Path(path)
    reason = unwritable_reason(path, folder)
    if reason is not None:
        where = f"{option} {path}" if option else str(path)
        raise WriteError(f"cannot write {where}: {reason}" + (f"; {hint}" if hint else ""))
    return path


def unwritable_reason(path: Path, folder: bool = False) -> str | None:
    """Why `path` (a file, or a folder with folder=True) cannot be written, or None if it can."""
    try:
        if not folder and path.is_dir():
            return "it is a folder; give a file path"
        base = path if folder else path.parent
        while not base.is_dir():  # up to the deepest folder that exists
            if base.is_symlink() and not base.exists():
                return f"{base} is a broken symbolic link"
            if base.exists():
                return f"{base} is a file, not a folder"
            base = base.parent
    except OSError as e:  # a folder on the way cannot be searched (permissions, a stale mount)
        return f"cannot reach {e.filename or path} ({e.strerror})"
    return _probe(base)


def _probe(folder: Path) -> str | None:
    """Create and remove one empty file in `folder`: what every write there needs. The probe is named
    like a temp file of this process, so if a kill lands in between, the next write removes it."""
    probe = temp_path_for(folder / "write-check")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        return f"cannot create files in {folder} ({e.strerror})"
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path` for the caller to create and write; on clean exit it is renamed
    onto `path`, on error (or Ctrl-C) removed. Folders made for it are removed on error too. A write
    that fails for want of space or permission raises one WriteError saying so (see the module doc)."""
    path = Path(path)
    missing = [p for p in [path.parent, *path.parent.parents] if not p.exists()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        reason = unwritable_reason(path) or e.strerror
        raise WriteError(f"cannot write {path}: {reason}") from None
    remove_stale_temps(path.parent)
    tmp = temp_path_for(path)
    try:
        yield tmp
        _fsync(tmp, strict=True)  # the data is on disk before the name points at it
        os.replace(tmp, path)
        _fsync(path.parent)  # and the rename itself (a folder entry) survives a power loss
    except BaseException as e:
        failure = _write_failure(e, path, tmp)  # before the temp file is removed: it still takes space
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        for folder in missing:  # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()
        interrupt = error_behind(e, KeyboardInterrupt)
        if interrupt is not None and interrupt is not e:
            # Ctrl-C inside the writer, which then failed closing the half-written file (torch.save's
            # zip writer raises "unexpected pos ..."): the interrupt is what happened, say that
            raise interrupt from None
        if failure is not None:
            raise failure from None
        raise


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)  # disk full, or the user's quota spent
LOW_SPACE_BYTES = 64 * 2**20  # torch's writer gave no errno: call the disk full below this much free
# torch's zip writer (PyTorchStreamWriter, caffe2/serialize/inline_container.cc) turns a failed write
# into this RuntimeError; the OSError it hides is usually chained as its __context__
TORCH_WRITER_FAILED = ("inline_container", "PytorchStreamWriter", "unexpected pos")


def _write_failure(error: BaseException, path: Path, tmp: Path) -> WriteError | None:
    """The WriteError that explains `error` raised while writing `path` via `tmp`, or None when the
    error is not about writing (a failed check inside the block, a bug) and must pass unchanged."""
    if isinstance(error, OptkitError | KeyboardInterrupt):
        return None
    cause = error_behind(error, OSError)
    if cause is not None and cause.errno in NO_SPACE:
        return WriteError(_no_space_message(path))
    if cause is not None and cause.errno == errno.EFBIG:
        return WriteError(
            f"cannot write {path}: file too large ({cause.strerror}: a file size limit such as "
            f"`ulimit -f`, or the largest file {path.parent} takes); {_kept(path)}"
        )
    if cause is error and cause.filename in (str(tmp), str(path)):  # creating or renaming the file
        return WriteError(f"cannot write {path}: {cause.strerror}; {_kept(path)}")
    torch_writer = isinstance(error, RuntimeError) and any(s in str(error) for s in TORCH_WRITER_FAILED)
    if torch_writer and _free_bytes(path.parent) < LOW_SPACE_BYTES:
        return WriteError(_no_space_message(path))
    return None


def _no_space_message(path: Path) -> str:
    return f"no space left on {path.parent} (writing {path.name}); {_kept(path)}; free some space and rerun"


def _kept(path: Path) -> str:
    return f"the previous {path.name} is unchanged" if path.exists() else "nothing was written"


def _free_bytes(folder: Path) -> int:
    """Bytes this process may still write under `folder` (root may use the blocks kept for it)."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return LOW_SPACE_BYTES  # cannot tell: not "full"
    blocks = st.f_bfree if hasattr(os, "geteuid") and os.geteuid() == 0 else st.f_bavail
    return blocks * st.f_frsize


def _fsync(path: Path, strict: bool = False) -> None:
    """Flush a file's, or a folder's entries', writes to disk. Where a folder cannot be opened or
    fsynced (Windows, some network filesystems) there is nothing more to do: skipped. `strict` (the
    new file's data): a disk that fills or fails only now (delayed allocation, NFS) raises, so that
    the rename never puts an incomplete file in place."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as e:
        if strict and e.errno in (*NO_SPACE, errno.EIO):
            raise
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
