"""YOLO-format detection datasets as users already have them: a `data.yaml` that names the splits and the
classes, images in folders or `.txt` lists, one label file per image.

data.yaml
- `path`: the dataset root, relative to the yaml's folder; absent (or empty): the yaml's folder.
- `train`, `val`, `test`: a folder (its images, found recursively, sorted by path; hidden files and folders,
  such as macOS `._x.jpg` copies, are skipped), a `.txt` list of image paths (one a line, in the list's
  order), or a list of those; relative entries are relative to `path`. In a `.txt` list every relative line
  is relative to the list's folder. (YOLOv5 and Ultralytics resolve `./` lines so and other relative lines
  against the working directory; here the result does not depend on where a command runs.)
- `names`: a list, or a mapping {id: name} whose ids are exactly 0..n-1. `nc` alone names the classes
  `class_0`, `class_1`, ... (as Ultralytics does); `nc` and `names` both given must agree.

Labels: an image's label file is its path with the last `/images/` replaced by `/labels/` and the suffix by
`.txt` (without an `images` folder in the path: the `.txt` beside the image). A missing or empty label file
is a background image. What counts as a bad row or a bad image, and the scan cache: `yolo_scan`. Problems
stop the load (`BadLabels`, naming the first file and line and counting the rest) unless the caller asks to
drop those images; they are never dropped silently.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from optkit.data.yolo_scan import CACHE_SUFFIX, Problem, SplitScan, scan_split
from optkit.errors import DatasetError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")  # compared lower-cased
SPLIT_HELP = "a folder of images, a .txt list of image paths, or a list of those"


@dataclass
class DetectSplit:
    images: list[str]  # absolute paths
    labels: list[np.ndarray]  # per image float32 [n, 5] (class, cx, cy, w, h), normalised to [0, 1]
    shapes: list[tuple[int, int]]  # per image (width, height) after EXIF orientation
    boxes: int
    backgrounds: int  # images without a box
    skipped: int  # images dropped for a problem (only when asked to drop them)


@dataclass
class DetectData:
    name: str  # the data.yaml as given
    root: Path
    yaml_path: Path
    names: list[str]
    splits: dict[str, DetectSplit]


class BadLabels(DatasetError):
    """Label rows or images with a problem stop the load. `first` is the first problem
    ("<file>:<line>: <what>"), `count` the problems in all, `files` the files they are in, `images` the
    images that have one, `split` and `yaml_path` where. A flow adds how to drop those images instead."""

    def __init__(self, split: str, yaml_path: Path, problems: list[Problem], images: int):
        self.first = str(problems[0])
        self.count = len(problems)
        self.files = len({p.file for p in problems})
        self.images = images
        self.split, self.yaml_path = split, yaml_path
        super().__init__(self._message())

    def _message(self) -> str:
        where = f"the '{self.split}' split of {self.yaml_path}"
        if self.count == 1:
            return f"{self.first} (the only problem in {where}): fix it, or drop that image instead"
        return (
            f"{self.first} (and {self.count - 1} more problems: {self.count} in {self.files} files of "
            f"{where}): fix them, or drop the {self.images} images with problems instead"
        )


def load_yolo_data(
    yaml_path: str | os.PathLike,
    *,
    splits: Iterable[str] = ("train", "val"),
    skip_bad_labels: bool = False,
    log: Callable[[str], None] | None = None,
) -> DetectData:
    """Read a YOLO data.yaml and scan the asked splits (from the cache when no file changed). `log` gets one
    line per split with its counts (default: this module's logger, INFO). Raises DatasetError for a yaml
    that cannot be used, BadLabels for rows or images with a problem unless `skip_bad_labels` drops them."""
    splits = (splits,) if isinstance(splits, str) else tuple(splits)
    path = Path(os.path.abspath(Path(yaml_path).expanduser()))
    config = read_data_yaml(path)
    root = dataset_root(config, path)
    names = class_names(config, path)
    log = log or logger.info
    loaded = {
        split: load_split(config, split, root, path, len(names), skip_bad_labels, log) for split in splits
    }
    return DetectData(str(yaml_path), root, path, names, loaded)


# ---------------------------------------------------------------------------------------------- data.yaml


def read_data_yaml(path: Path) -> dict:
    import yaml

    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file (a YOLO data.yaml was expected)") from None
    except IsADirectoryError:
        raise DatasetError(f"{path} is a folder; give the path of its data.yaml") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise DatasetError(f"{path}: not valid YAML{where} ({getattr(e, 'problem', None) or e})") from None
    if not isinstance(config, dict):
        raise DatasetError(
            f"{path}: expected a mapping with train, val and names (a YOLO data.yaml), "
            f"got {type(config).__name__ if config is not None else 'an empty file'}"
        )
    return config


def dataset_root(config: dict, yaml_path: Path) -> Path:
    value = config.get("path")
    if value is None or value == "":
        return yaml_path.parent
    if not isinstance(value, str):
        raise DatasetError(f"{yaml_path}: 'path' must be a folder, got {value!r}")
    root = Path(os.path.abspath(yaml_path.parent / Path(value).expanduser()))
    if not root.is_dir():
        raise DatasetError(f"{yaml_path}: 'path': {root} is not a folder")
    return root


def class_names(config: dict, yaml_path: Path) -> list[str]:
    """The class names: from `names` (a list or {id: name}), or `class_<i>` for `nc` alone."""
    names, nc = config.get("names"), config.get("nc")
    if nc is not None and (isinstance(nc, bool) or not isinstance(nc, int) or nc < 1):
        raise DatasetError(f"{yaml_path}: 'nc' must be a whole number of classes >= 1, got {nc!r}")
    if names is None:
        if nc is None:
            raise DatasetError(f"{yaml_path}: no 'names' or 'nc' (the classes, e.g. names: [cat, dog])")
        return [f"class_{i}" for i in range(nc)]
    if isinstance(names, dict):
        names = _names_by_id(names, yaml_path)
    elif not isinstance(names, list):
        raise DatasetError(f"{yaml_path}: 'names' must be a list or a mapping {{id: name}}, got {names!r}")
    listed = [_class_name(name, i, yaml_path) for i, name in enumerate(names)]
    if not listed:
        raise DatasetError(f"{yaml_path}: 'names' lists no classes")
    if nc is not None and nc != len(listed):
        raise DatasetError(f"{yaml_path}: 'nc' is {nc} but 'names' lists {len(listed)} classes")
    return listed


def _names_by_id(names: dict, yaml_path: Path) -> list:
    ids = list(names)
    if any(isinstance(i, bool) or not isinstance(i, int) for i in ids):
        bad = next(i for i in ids if isinstance(i, bool) or not isinstance(i, int))
        raise DatasetError(f"{yaml_path}: 'names' id {bad!r} is not a whole number (ids are 0..n-1)")
    if sorted(ids) != list(range(len(ids))):
        missing = sorted(set(range(len(ids))) - set(ids))
        raise DatasetError(
            f"{yaml_path}: 'names' ids must be exactly 0..{len(ids) - 1}; "
            f"got {sorted(ids)} (missing {', '.join(map(str, missing))})"
        )
    return [names[i] for i in range(len(ids))]


def _class_name(name, index: int, yaml_path: Path) -> str:
    if isinstance(name, bool) or not isinstance(name, str | int | float) or str(name) == "":
        raise DatasetError(f"{yaml_path}: the name of class {index} is {name!r}, not a name")
    return str(name)


# ---------------------------------------------------------------------------------------------- images


def split_sources(config: dict, key: str, root: Path, yaml_path: Path) -> list[Path]:
    """The folders and list files of split `key`, absolute."""
    value = config.get(key)
    if value is None:
        raise DatasetError(f"{yaml_path}: no '{key}' split ({key}: {SPLIT_HELP})")
    entries = value if isinstance(value, list) else [value]
    if not entries:
        raise DatasetError(f"{yaml_path}: '{key}' is an empty list ({SPLIT_HELP})")
    for entry in entries:
        if not isinstance(entry, str) or not entry.strip():
            raise DatasetError(f"{yaml_path}: '{key}' must be {SPLIT_HELP}; got {entry!r}")
    return [Path(os.path.abspath(root / Path(entry.strip()).expanduser())) for entry in entries]


def source_images(source: Path, key: str, yaml_path: Path) -> list[str]:
    if source.is_dir():
        return images_in_folder(source)
    if source.is_file() and source.suffix.lower() == ".txt":
        return images_in_list(source)
    if source.exists():
        raise DatasetError(
            f"{yaml_path}: '{key}': {source} is neither a folder nor a .txt list of image paths"
        )
    raise DatasetError(f"{yaml_path}: '{key}': {source} does not exist")


def images_in_folder(folder: Path) -> list[str]:
    """Every image under `folder`, sorted by path. Linked folders are followed, each real folder once."""
    found, seen = [], set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a link back up the tree, or a second link to the same folder
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [
            os.path.join(dirpath, f)
            for f in filenames
            if not f.startswith(".") and f.lower().endswith(IMAGE_SUFFIXES)
        ]
    return sorted(found)


def images_in_list(list_file: Path) -> list[str]:
    """The image paths listed one a line (blank lines skipped); relative lines are relative to the list's
    folder (see the module docstring)."""
    try:
        text = list_file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(
            f"{list_file}: cannot read the list of images ({getattr(e, 'strerror', None) or e})"
        ) from None
    lines = (line.strip() for line in text.splitlines())
    return [os.path.abspath(list_file.parent / line) for line in lines if line]


def label_path(image: str) -> str:
    """The label file of `image`: the last `/images/` of its path becomes `/labels/`, the suffix `.txt`."""
    head, found, tail = image.rpartition(f"{os.sep}images{os.sep}")
    mapped = f"{head}{os.sep}labels{os.sep}{tail}" if found else image
    return os.path.splitext(mapped)[0] + ".txt"


def labels_folder(folder: Path) -> str:
    """The folder that holds the labels of the images under `folder` (itself without an `images` part)."""
    head, found, tail = f"{folder}{os.sep}".rpartition(f"{os.sep}images{os.sep}")
    return (f"{head}{os.sep}labels{os.sep}{tail}" if found else f"{folder}{os.sep}").rstrip(os.sep)


def cache_path(sources: list[Path]) -> Path:
    """Where a split's scan is cached: beside its labels folder (`labels/train.optkit.cache` for
    `images/train`), beside a list file (`train.optkit.cache` for `train.txt`); a split of several sources
    adds a hash of them, so that it does not overwrite the cache of its first source alone."""
    first = sources[0]
    base = labels_folder(first) if first.is_dir() else str(first.with_suffix(""))
    if len(sources) > 1:
        base += "-" + hashlib.sha1("\n".join(map(str, sources)).encode()).hexdigest()[:8]
    return Path(base + CACHE_SUFFIX)


# ---------------------------------------------------------------------------------------------- a split


def load_split(
    config: dict, key: str, root: Path, yaml_path: Path, nc: int, skip_bad_labels: bool, log: Callable
) -> DetectSplit:
    sources = split_sources(config, key, root, yaml_path)
    images = [image for source in sources for image in source_images(source, key, yaml_path)]
    if not images:
        where = ", ".join(map(str, sources))
        raise DatasetError(f"{yaml_path}: '{key}': no images in {where} ({', '.join(IMAGE_SUFFIXES)})")
    label_files = [label_path(image) for image in images]
    scan = scan_split(images, label_files, nc, cache_path(sources))
    if not any(s.has_label_file for s in scan.scanned):
        raise DatasetError(
            f"{yaml_path}: '{key}': none of its {len(images)} images has a label file (the first, "
            f"{images[0]}, would have {label_files[0]}: the last /images/ of an image's path becomes "
            "/labels/, its suffix .txt)"
        )
    problems = [p for s in scan.scanned for p in s.problems]
    bad = [i for i, s in enumerate(scan.scanned) if s.problems]
    if problems and not skip_bad_labels:
        log(_summary(key, _split_of(scan, range(len(images)), 0), len(problems), len(bad), scan.note, False))
        raise BadLabels(key, yaml_path, problems, len(bad))
    bad_set = set(bad)
    split = _split_of(scan, [i for i in range(len(images)) if i not in bad_set], len(bad))
    log(_summary(key, split, len(problems), len(bad), scan.note, True))
    if not split.images:
        raise DatasetError(
            f"{yaml_path}: '{key}': every one of its {len(images)} images has a problem "
            f"(the first: {problems[0]}); none is left"
        )
    return split


def _split_of(scan: SplitScan, keep: Iterable[int], skipped: int) -> DetectSplit:
    keep = list(keep)
    labels = [scan.scanned[i].labels for i in keep]
    return DetectSplit(
        images=[scan.images[i] for i in keep],
        labels=labels,
        shapes=[scan.scanned[i].shape for i in keep],
        boxes=sum(len(x) for x in labels),
        backgrounds=sum(len(x) == 0 for x in labels),
        skipped=skipped,
    )


def _summary(key: str, split: DetectSplit, problems: int, bad: int, note: str, dropped: bool) -> str:
    """One log line: `train: 118 images, 300 boxes, 8 backgrounds, 3 problems: 2 images dropped (...)`."""
    line = f"{key}: {len(split.images)} images, {split.boxes} boxes, {split.backgrounds} backgrounds, "
    line += f"{problems} problems"
    if problems:
        line += f": {bad} images dropped" if dropped else f" in {bad} images"
    return f"{line} ({note})"
