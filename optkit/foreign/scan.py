"""Read what a .pt file is without unpickling it: the Python globals its pickle names, and whether the
file is a TorchScript archive.

`pickletools.genops` only decodes opcodes; nothing from the file is imported or called. This is what
lets optkit name the class that made it refuse a file (on any torch version, whatever wording that
torch's weights-only unpickler uses), and refuse, even under `--trust`, a pickle that calls functions no
model checkpoint needs (`os.system`, `eval`, ...). It is a guard against the obvious, not a sandbox:
`--trust` means the user vouches for the file.
"""

from __future__ import annotations

import io
import pickletools
import re
import zipfile
import zlib
from pathlib import Path

# Globals torch's own weights-only files use: tensor/storage rebuilders, dtypes, OrderedDict.
_SAFE = re.compile(
    r"^(collections\.OrderedDict|_codecs\.encode|(builtins|__builtin__)\.(set|frozenset|bytearray|slice|complex)"
    r"|torch\._utils\._rebuild_\w+|torch\._tensor\._rebuild_from_type_v2|torch\.\w*Storage"
    r"|torch\.(Size|device|dtype|Tensor|float\w*|bfloat16|half|int\w*|uint\w*|bool|complex\w*)"
    r"|torch\.nn\.parameter\.Parameter|torch\.serialization\._get_layout)$"
)
# Functions and modules a model checkpoint never needs; a pickle that names one is refused even trusted.
_HOSTILE = re.compile(
    r"^((builtins|__builtin__)\.(eval|exec|compile|open|__import__|breakpoint|input)"
    r"|(io|_io|os|posix|nt|subprocess|socket|shutil|sys|importlib|runpy|pty|ctypes|webbrowser|code)(\.|$)).*"
)
# What zipfile raises on damaged archives: non-UTF-8 names (UnicodeDecodeError is a ValueError), bad
# headers, truncated or corrupt deflate data, unsupported compression or encryption
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    OSError,
    EOFError,
    KeyError,
    ValueError,
    RuntimeError,
    NotImplementedError,
    zlib.error,
)
MAX_PICKLE_BYTES = 256 * 2**20  # the object tree (not the tensor data); larger ones are not scanned


def pickle_bytes(path: Path) -> bytes | None:
    """The main pickle of a torch zip archive (`<archive>/data.pkl`), or of a legacy (non-zip) file its
    first pickle's bytes; None when there is none."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                names = [n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
                if not names or z.getinfo(names[0]).file_size > MAX_PICKLE_BYTES:
                    return None
                return z.read(names[0])
        with open(path, "rb") as f:
            return f.read(MAX_PICKLE_BYTES)
    except _ZIP_ERRORS:
        return None


def pickle_globals(path: Path) -> list[str]:
    """ "module.name" of every global the file's main pickle references, in order (duplicates dropped).

    A legacy torch file starts with small header pickles (magic number, protocol, sys info) before the
    object tree; every pickle in the stream is read until the data runs out or stops decoding.
    """
    data = pickle_bytes(path)
    if data is None:
        return []
    found: list[str] = []
    stream = io.BytesIO(data)
    while stream.tell() < len(data):
        start = stream.tell()
        try:
            for name in _globals_in(stream):
                if name not in found:
                    found.append(name)
        except Exception:  # damaged or not a pickle: what was decoded so far is the answer
            break
        if stream.tell() == start:
            break
    return found


def _globals_in(stream: io.BytesIO):
    """Globals of one pickle, following GLOBAL and STACK_GLOBAL (whose strings may come from the memo)."""
    strings: list[str | None] = []  # recent pushes, None for non-strings, enough for STACK_GLOBAL
    memo: dict[int, str | None] = {}
    for op, arg, _pos in pickletools.genops(stream):
        name = op.name
        if name == "GLOBAL":
            module, _, attr = str(arg).partition(" ")
            yield f"{module}.{attr}"
            strings.append(None)
        elif name == "STACK_GLOBAL":
            if len(strings) >= 2 and strings[-2] is not None and strings[-1] is not None:
                yield f"{strings[-2]}.{strings[-1]}"
            else:
                yield "<unknown>.<unknown>"
            strings.append(None)
        elif name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"):
            strings.append(str(arg))
        elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[int(arg)] = strings[-1] if strings else None
        elif name == "MEMOIZE":
            memo[len(memo)] = strings[-1] if strings else None
        elif name in ("BINGET", "LONG_BINGET", "GET"):
            strings.append(memo.get(int(arg)))
        elif name == "STOP":
            return
        else:
            strings.append(None)
        del strings[:-4]


def unsafe_globals(names: list[str]) -> list[str]:
    """The globals torch's weights-only loader would refuse (classes or functions from code)."""
    return [n for n in names if not _SAFE.match(n)]


def hostile_globals(names: list[str]) -> list[str]:
    return [n for n in names if _HOSTILE.match(n)]


def is_torchscript(path: Path) -> bool:
    """A TorchScript archive (torch.jit.save): a zip with `constants.pkl` and compiled `code/`."""
    try:
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except _ZIP_ERRORS:  # damaged: not TorchScript; torch.load then says what is wrong with it
        return False
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)
