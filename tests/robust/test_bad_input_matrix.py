"""The bad-input matrix (docs/architecture.md, bad input): every command × every row that applies to it.

Each case runs the real CLI entry point in-process and asserts: the exit code (1 for a bad file or
value, 2 for a usage error), exactly one line on stderr (`error: ...`, naming what is wrong), nothing on
stdout, no traceback, and the folder the command ran in — inputs, dataset and all — byte for byte as it
was (no output file, no run folder, no temp file). Rows that ask for absurd sizes also assert that they
were refused before any model was built (a counting wrapper around the registry's `create_model`).

A YOLO dataset's split reports its counts in one line as it is read (`train: 4 images, 4 boxes, ...,
1 problems in 1 images (...)`, issue 14 part 1): those lines may come before the error line, which is
then the last and the only `error:` line. The detection datasets are scanned once when they are made, so
that a case reads their scan caches and writes none.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import resource
from pathlib import Path

import pytest
import torch

from optkit.cli.app import COMMANDS

NAMES = ["blue", "green", "red"]  # tiny_data's classes (tests/conftest.py)
SCAN_LINE = re.compile(r"^(train|val|test): \d+ images, \d+ boxes, \d+ backgrounds, \d+ problems")


# ---- the files a row can feed a command ----------------------------------------------------------


def _real_ckpt(path: Path) -> Path:
    from optkit.checkpoint import checkpoint_from_model, save_checkpoint
    from optkit.models import create_model

    torch.manual_seed(0)
    return save_checkpoint(checkpoint_from_model(create_model("test-tiny", num_classes=3), NAMES, 32), path)


def _make_file(kind: str, folder: Path) -> Path:
    """A bad input file of the given kind in `folder` (or the path of a missing one)."""
    path = folder / "bad.pt"
    if kind == "missing":
        return folder / "nothing-here.pt"
    if kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        data = _real_ckpt(folder / "whole.pt").read_bytes()
        (folder / "whole.pt").unlink()
        path.write_bytes(data[: len(data) * 2 // 3])
    elif kind == "random-bytes":
        path.write_bytes(bytes(range(256)) * 16)
    elif kind == "text":
        path.write_text("epoch,top1\n1,0.5\n")
    elif kind == "jpeg":
        from PIL import Image

        buf = io.BytesIO()
        Image.new("RGB", (16, 16), (200, 30, 30)).save(buf, format="JPEG")
        path.write_bytes(buf.getvalue())
    elif kind == "foreign":  # a pickled module, as YOLOv5 / Ultralytics save
        torch.save({"model": torch.nn.Linear(2, 2), "epoch": 1}, path)
    elif kind == "onnx-for-pt":  # an ONNX file where a .pt is needed
        path = folder / "model.onnx"
        path.write_bytes(b"\x08\x07\x12\x06pytorch")
    elif kind == "onnx-named-pt":  # ONNX bytes named .pt: read by content, so still ONNX, never "truncated"
        path.write_bytes(b"\x08\x07\x12\x06pytorch")
    elif kind == "onnx-two-inputs":  # an ONNX classifier with a second input optkit cannot feed
        path = _two_input_onnx(folder / "two.onnx")
    elif kind == "ir-no-bin":  # an OpenVINO IR folder whose weights file is missing
        path = folder / "model_openvino"
        path.mkdir()
        (path / "model_openvino.xml").write_text("<net/>")
    elif kind == "ir-broken":  # an IR whose .xml is not OpenVINO's
        path = folder / "broken_openvino"
        path.mkdir()
        (path / "broken_openvino.xml").write_text("not xml at all")
        (path / "broken_openvino.bin").write_bytes(b"\0" * 8)
    else:
        raise ValueError(kind)
    return path


def _two_input_onnx(path: Path) -> Path:
    import json

    import onnx
    from onnx import TensorProto, helper

    images = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, 32, 32]) for n in ("a", "b")]
    logits = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    nodes = [
        helper.make_node("Add", ["a", "b"], ["s"]),
        helper.make_node("ReduceMean", ["s"], ["y"], axes=[2, 3], keepdims=0),
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "two", images, [logits]), opset_imports=[helper.make_opsetid("", 13)]
    )
    model.ir_version = 8
    helper.set_model_props(model, {"names": json.dumps(NAMES), "imgsz": "32"})
    onnx.save(model, path)
    return path


FILE_ROWS = {  # kind -> what the one line must say
    "missing": "no such file",
    "directory": "is a directory",
    "empty": "is empty",
    "truncated": "truncated",
    "random-bytes": "not a PyTorch checkpoint",
    "text": "not a PyTorch checkpoint",
    "jpeg": "not a PyTorch checkpoint",
    "foreign": "--trust",  # the commands without --trust say which commands take it
    "onnx-for-pt": "ONNX",
    "onnx-named-pt": "ONNX",  # non-ONNX readers: "is an ONNX model"; ONNX readers: "not a valid ONNX model"
    "onnx-two-inputs": "2 inputs",
    # (what an IR reader says, what the other commands say: a folder is no checkpoint)
    "ir-no-bin": ("model_openvino.bin is missing", "directory"),
    "ir-broken": ("OpenVINO cannot read it", "directory"),
}
IR_READERS = {"val", "profile", "benchmark"}  # take an OpenVINO IR folder too

# how each command takes the file; {F} is the bad file, {D} the tiny dataset
FILE_COMMANDS = {
    "train": ["train", "--weights", "{F}", "--data", "{D}", "--epochs", "1", "--workers", "0"],
    "train --resume": ["train", "--resume", "{F}", "--workers", "0"],
    "val": ["val", "{F}", "--data", "{D}", "--workers", "0"],
    "info": ["info", "{F}"],
    "fuse": ["fuse", "{F}"],
    "prune": ["prune", "{F}", "--amount", "0.3"],
    "strip": ["strip", "{F}"],
    "export": ["export", "{F}"],
    "profile": ["profile", "{F}", "--runs", "1", "--warmup", "0"],
    "benchmark": ["benchmark", "{F}", "--runs", "1", "--warmup", "0"],
    "ptq-calibrate": ["ptq-calibrate", "{F}", "--data", "{D}", "--num-images", "8"],
    "qat": ["qat", "{F}", "--data", "{D}", "--epochs", "1", "--workers", "0"],
    "predict": ["predict", "{F}", "--source", "{D}"],  # {D}'s images, found recursively
    "convert": ["convert", "{F}"],
    "deploy": ["deploy", "{F}", "--data", "{D}", "--max-drop", "1", "--workers", "0"],
}
# take ONNX files too (told by content, not by name)
ONNX_READERS = {"val", "profile", "benchmark", "predict"}


def _file_cases():
    for command in FILE_COMMANDS:
        for kind in FILE_ROWS:
            if kind == "onnx-for-pt" and command in ONNX_READERS:
                continue  # an .onnx file is a valid input there
            if kind == "onnx-two-inputs" and command not in ONNX_READERS:
                continue  # any ONNX file is refused there (onnx-for-pt)
            yield pytest.param(command, kind, id=f"{command}-{kind}".replace(" --", "-"))


# ---- option rows ---------------------------------------------------------------------------------
# (command, case id, args with {C} = a valid checkpoint, {D} = tiny data, {D2} = two-class data,
#  {E} = a dataset folder with classes but no images, {N} = one with no class folders,
#  {CD} = a test-det detector, {Y} = a YOLO data.yaml of its classes, {Y...} = DETECT_DATA's data.yaml
#  files, exit code, fragment of the message, absurd: must be refused before any model is built)

CUDA = "CUDA"
TRAIN = ["train", "--model", "test-tiny", "--data", "{D}", "--workers", "0"]
TRAIN_ON = ["train", "--model", "test-tiny", "--workers", "0", "--data"]  # + a dataset
VAL = ["val", "{C}", "--data", "{D}", "--workers", "0"]
PROFILE = ["profile", "{C}", "--runs", "1", "--warmup", "0"]
BENCH = ["benchmark", "{C}", "--runs", "1", "--warmup", "0"]
PTQ = ["ptq-calibrate", "{C}", "--data", "{D}", "--num-images", "8"]
PRUNE_S = ["prune", "{C}", "--structured", "--amount"]
QAT = ["qat", "{C}", "--data", "{D}", "--epochs", "1", "--workers", "0"]
PRUNE_FT = ["prune", "{C}", "--amount", "0.3", "--data", "{D}", "--finetune-epochs", "1", "--workers", "0"]
TRAIN_DET = ["train", "--model", "test-det", "--epochs", "1", "--workers", "0", "--data"]  # + a data.yaml
VAL_DET = ["val", "{CD}", "--workers", "0", "--data"]  # + a data.yaml
TRAIN_Y, VAL_Y = [*TRAIN_DET, "{Y}"], [*VAL_DET, "{Y}"]
PREDICT_ON = ["predict", "{CD}", "--source"]  # + images
PREDICT = [*PREDICT_ON, "{D}"]
PREDICT_SAVE = [*PREDICT, "--save", "--project"]  # + a folder
CONVERT_TO = ["convert", "{C}", "--trust", "-o"]  # + an output path
DEPLOY_DROP = ["deploy", "{C}", "--data", "{D}", "--workers", "0", "--max-drop"]  # + the budget
DEPLOY = [*DEPLOY_DROP, "1"]
DEPLOY_ON = ["deploy", "{C}", "--max-drop", "1", "--data"]  # + a dataset
DEPLOY_DET = ["deploy", "{CD}", "--max-drop", "1", "--data"]

# YOLO data.yaml problems (issue 14, part 1): (case id, placeholder, fragment), a row each for train and val
DETECT_DATA = [
    ("yaml-missing", "{YMISSING}", "no such data.yaml"),
    ("yaml-not-a-mapping", "{YLIST}", "expected a mapping with train, val and names"),
    ("yaml-no-val", "{YNOVAL}", "no 'val' split"),
    ("yaml-nc-names-disagree", "{YNC}", "'nc' is 3 but 'names' lists 2 classes"),
    ("label-4-columns", "{YCOLUMNS}", "{split}/000.txt:2: 4 columns, expected 5"),
    ("label-class-out-of-range", "{YCLASS}", "{split}/000.txt:2: class 5 is outside 0..1"),
    ("image-corrupt", "{YIMAGE}", "{split}/bad.png: cannot decode the image"),
]

OPTION_ROWS = [
    # train
    ("train", "unknown-model", ["train", "--model", "yolo-nope", "--data", "{D}"], 1, "known models: ", True),
    ("train", "imgsz-stride", [*TRAIN, "--imgsz", "50"], 1, "stride 32", False),
    ("train", "imgsz-huge", [*TRAIN, "--imgsz", "100000"], 1, "--imgsz", True),
    ("train", "imgsz-negative", [*TRAIN, "--imgsz", "-64"], 1, "--imgsz", True),
    ("train", "batch-0", [*TRAIN, "--batch-size", "0"], 1, "--batch-size", True),
    ("train", "batch-negative", [*TRAIN, "--batch-size", "-5"], 1, "--batch-size", True),
    ("train", "epochs-0", [*TRAIN, "--epochs", "0"], 1, "--epochs", True),
    ("train", "epochs-negative", [*TRAIN, "--epochs", "-1"], 1, "--epochs", True),
    ("train", "epochs-not-int", [*TRAIN, "--epochs", "two"], 2, "--epochs", True),
    ("train", "workers-negative", [*TRAIN, "--workers", "-1"], 1, "--workers", True),
    ("train", "fraction", [*TRAIN, "--fraction", "1.5"], 1, "--fraction", True),
    ("train", "cuda", [*TRAIN, "--device", "0"], 1, CUDA, False),
    ("train", "data-missing", ["train", "--model", "test-tiny", "--data", "nowhere"], 1, "nowhere", False),
    ("train", "data-no-images", ["train", "--model", "test-tiny", "--data", "{E}"], 1, "no images", False),
    ("train", "data-no-classes", ["train", "--model", "test-tiny", "--data", "{N}"], 1, "class", False),
    # issue 13 (7, 8): an empty class folder, a class folder linking back to the dataset, one class, a
    # --fraction that leaves one image, a last.pt moved out of its run folder
    ("train", "data-empty-class", [*TRAIN_ON, "{EC}"], 1, "train/red: class folder", False),
    ("train", "data-class-link-loop", [*TRAIN_ON, "{LOOP}"], 1, "symbolic link", False),
    ("train", "data-one-class", [*TRAIN_ON, "{O}"], 1, "at least 2 classes", False),
    ("train", "fraction-one-image", [*TRAIN, "--fraction", "0.01"], 1, "--fraction >= 0.084", False),
    ("train", "resume-lone-last-pt", ["train", "--resume", "{R}"], 1, "not in a run folder", False),
    # issue 13 leftovers: one image per batch with BatchNorm; --resume of a run whose dataset is gone, or
    # with a --data of other classes
    ("train", "batch-1-batchnorm", [*TRAIN, "--batch-size", "1"], 1, "BatchNorm", False),
    ("train", "resume-data-gone", ["train", "--resume", "{GONE}"], 1, "--data NEW_PATH", False),
    ("train", "resume-other-classes", ["train", "--resume", "{RUN}", "--data", "{D2}"], 1, "classes", False),
    # val
    ("val", "imgsz-stride", [*VAL, "--imgsz", "50"], 1, "stride 32", False),
    ("val", "imgsz-huge", [*VAL, "--imgsz", "100000"], 1, "--imgsz", True),
    ("val", "batch-0", [*VAL, "--batch-size", "0"], 1, "--batch-size", True),
    ("val", "workers-negative", [*VAL, "--workers", "-1"], 1, "--workers", True),
    ("val", "cuda", [*VAL, "--device", "cuda:0"], 1, CUDA, False),
    ("val", "class-mismatch", ["val", "{C}", "--data", "{D2}", "--workers", "0"], 1, "classes", False),
    ("val", "data-no-images", ["val", "{C}", "--data", "{E}"], 1, "no images", False),
    ("val", "data-no-classes", ["val", "{C}", "--data", "{N}"], 1, "class", False),
    ("val", "one-class", ["val", "{C1}", "--data", "{O}", "--workers", "0"], 1, "at least 2 classes", False),
    # models
    ("models", "num-classes-0", ["models", "--num-classes", "0"], 1, "--num-classes", True),
    ("models", "num-classes-huge", ["models", "--num-classes", "1000000000"], 1, "--num-classes", True),
    # fuse / strip
    ("fuse", "atol-0", ["fuse", "{C}", "--atol", "0"], 1, "--atol", True),
    ("fuse", "output-onnx", ["fuse", "{C}", "-o", "out.onnx"], 1, "ONNX", True),
    ("fuse", "output-directory", ["fuse", "{C}", "-o", "{N}"], 1, "is a directory", True),
    ("strip", "output-onnx", ["strip", "{C}", "-o", "out.onnx"], 1, "ONNX", True),
    # prune
    ("prune", "amount-1", ["prune", "{C}", "--amount", "1"], 1, "--amount must be in [0, 1)", True),
    ("prune", "amount-negative", ["prune", "{C}", "--amount", "-0.1"], 1, "--amount", True),
    ("prune", "amount-nan", ["prune", "{C}", "--amount", "nan"], 1, "--amount", True),
    ("prune", "structured-amount-1", ["prune", "{C}", "--structured", "--amount", "1"], 1, "--amount", True),
    ("prune", "batch-0", ["prune", "{C}", "--data", "{D}", "--batch-size", "0"], 1, "--batch-size", True),
    ("prune", "workers-negative", ["prune", "{C}", "--data", "{D}", "--workers", "-1"], 1, "--workers", True),
    ("prune", "finetune-negative", ["prune", "{C}", "--finetune-epochs", "-1"], 1, "--finetune-epochs", True),
    ("prune", "class-mismatch", ["prune", "{C}", "--data", "{D2}"], 1, "classes", False),
    ("prune", "structured-amount-0", [*PRUNE_S, "0"], 1, "any amount above 0", False),
    ("prune", "round-to-too-wide", [*PRUNE_S, "0.3", "--round-to", "1024"], 1, "is wider than", False),
    ("prune", "data-no-images", ["prune", "{C}", "--data", "{E}"], 1, "no images", False),
    ("prune", "cuda", ["prune", "{C}", "--data", "{D}", "--device", "0"], 1, CUDA, False),
    ("prune", "output-onnx", ["prune", "{C}", "-o", "out.onnx"], 1, "ONNX", True),
    ("prune", "finetune-batch-1-batchnorm", [*PRUNE_FT, "--batch-size", "1"], 1, "BatchNorm", False),
    # export
    ("export", "imgsz-stride", ["export", "{C}", "--imgsz", "50"], 1, "stride 32", False),
    ("export", "imgsz-huge", ["export", "{C}", "--imgsz", "100000"], 1, "--imgsz", True),
    ("export", "batch-0", ["export", "{C}", "--batch-size", "0"], 1, "--batch-size", True),
    ("export", "opset", ["export", "{C}", "--opset", "5"], 1, "--opset", True),
    ("export", "silu-form", ["export", "{C}", "--silu-form", "fast"], 1, "--silu-form", True),
    ("export", "output-pt", ["export", "{C}", "-o", "out.pt"], 1, ".onnx", True),
    ("export", "format-unknown", ["export", "{C}", "--format", "tflite"], 1, "--format must be one of", True),
    ("export", "openvino-nms", ["export", "{C}", "--format", "openvino", "--nms"], 1, "--nms", True),
    ("val", "precision-unknown", [*VAL, "--precision", "f64"], 1, "--precision must be one of", True),
    ("val", "precision-not-ir", [*VAL, "--precision", "f32"], 1, "OpenVINO IR only", True),
    ("profile", "precision-not-ir", [*PROFILE, "--precision", "f32"], 1, "OpenVINO IR only", True),
    ("export", "half-needs-cuda", ["export", "{C}", "--half"], 1, CUDA, True),
    ("export", "class-mismatch", ["export", "{C}", "--data", "{D2}"], 1, "classes", False),
    ("export", "data-no-images", ["export", "{C}", "--data", "{E}"], 1, "no images", False),
    # export --nms (issue 15, part 5): NMS in the graph is a detector's; its settings need --nms
    ("export", "nms-classifier", ["export", "{C}", "--nms"], 1, "is a classify model", False),
    ("export", "conf-without-nms", ["export", "{C}", "--conf", "0.5"], 1, "add --nms", True),
    ("export", "nms-conf-above-1", ["export", "{C}", "--nms", "--conf", "2"], 1, "--conf", True),
    ("export", "nms-max-det-0", ["export", "{C}", "--nms", "--max-det", "0"], 1, "--max-det", True),
    # profile
    ("profile", "unknown-model", ["profile", "yolo-nope"], 1, "known models: ", True),
    ("profile", "imgsz-stride", [*PROFILE, "--imgsz", "50"], 1, "stride 32", False),
    ("profile", "imgsz-huge", [*PROFILE, "--imgsz", "100000"], 1, "--imgsz", True),
    ("profile", "batch-0", [*PROFILE, "--batch-size", "0"], 1, "--batch-size", True),
    ("profile", "batch-sizes-0", [*PROFILE, "--batch-sizes", "1,0"], 1, "--batch-sizes", True),
    ("profile", "batch-sizes-huge", [*PROFILE, "--batch-sizes", "100000000"], 1, "--batch-sizes", True),
    ("profile", "runs-0", ["profile", "{C}", "--runs", "0"], 1, "--runs", True),
    ("profile", "warmup-negative", ["profile", "{C}", "--warmup", "-1"], 1, "--warmup", True),
    ("profile", "threads-0", [*PROFILE, "--threads", "0"], 1, "--threads", True),
    ("profile", "cuda", [*PROFILE, "--device", "0"], 1, CUDA, False),
    # benchmark
    ("benchmark", "imgsz-stride", [*BENCH, "--imgsz", "50"], 1, "stride 32", False),
    ("benchmark", "imgsz-huge", [*BENCH, "--imgsz", "100000"], 1, "--imgsz", True),
    ("benchmark", "batch-0", [*BENCH, "--batch-size", "0"], 1, "--batch-size", True),
    ("benchmark", "runs-0", ["benchmark", "{C}", "--runs", "0"], 1, "--runs", True),
    ("benchmark", "warmup-negative", ["benchmark", "{C}", "--warmup", "-1"], 1, "--warmup", True),
    ("benchmark", "threads-0", [*BENCH, "--threads", "0"], 1, "--threads", True),
    ("benchmark", "rounds-0", [*BENCH, "--rounds", "0"], 1, "--rounds", True),
    ("benchmark", "latency-imgsz-stride", [*BENCH, "--latency-imgsz", "50"], 1, "--latency-imgsz", True),
    ("benchmark", "latency-imgsz-huge", [*BENCH, "--latency-imgsz", "100000"], 1, "--latency-imgsz", True),
    ("benchmark", "class-mismatch", [*BENCH, "--data", "{D2}"], 1, "classes", False),
    ("benchmark", "data-no-images", [*BENCH, "--data", "{E}"], 1, "no images", False),
    # ptq-calibrate
    ("ptq-calibrate", "num-images-negative", [*PTQ, "--num-images", "-5"], 1, "--num-images", True),
    ("ptq-calibrate", "num-images-0", [*PTQ, "--num-images", "0"], 1, "--num-images", True),
    ("ptq-calibrate", "val-images-0", [*PTQ, "--val-images", "0"], 1, "--val-images", True),
    ("ptq-calibrate", "batch-0", [*PTQ, "--batch-size", "0"], 1, "--batch-size", True),
    ("ptq-calibrate", "method", [*PTQ, "--method", "nope"], 1, "--method", True),
    ("ptq-calibrate", "class-mismatch", ["ptq-calibrate", "{C}", "--data", "{D2}"], 1, "classes", False),
    ("ptq-calibrate", "data-no-images", ["ptq-calibrate", "{C}", "--data", "{E}"], 1, "no images", False),
    ("ptq-calibrate", "output-onnx", [*PTQ, "-o", "out.onnx"], 1, "ONNX", False),
    # qat
    ("qat", "float-checkpoint", QAT, 1, "not quantized", False),
    ("qat", "epochs-0", [*QAT, "--epochs", "0"], 1, "--epochs", True),
    ("qat", "epochs-negative", [*QAT, "--epochs", "-1"], 1, "--epochs", True),
    ("qat", "batch-0", [*QAT, "--batch-size", "0"], 1, "--batch-size", True),
    ("qat", "workers-negative", [*QAT, "--workers", "-1"], 1, "--workers", True),
    ("qat", "num-images-negative", [*QAT, "--num-images", "-5"], 1, "--num-images", True),
    # outputs that cannot be written ({C}/x: under a regular file): refused before any work
    ("fuse", "output-under-a-file", ["fuse", "{C}", "-o", "{C}/x.pt"], 1, "cannot write -o", True),
    ("strip", "output-under-a-file", ["strip", "{C}", "-o", "{C}/x.pt"], 1, "cannot write -o", True),
    ("prune", "output-under-a-file", ["prune", "{C}", "-o", "{C}/x.pt"], 1, "cannot write -o", True),
    ("export", "output-under-a-file", ["export", "{C}", "-o", "{C}/x.onnx"], 1, "cannot write -o", True),
    ("ptq-calibrate", "output-under-a-file", [*PTQ, "-o", "{C}/x.pt"], 1, "cannot write -o", True),
    ("benchmark", "csv-under-a-file", [*BENCH, "--csv", "{C}/b.csv"], 1, "cannot write --csv", True),
    ("benchmark", "plot-under-a-file", [*BENCH, "--plot", "{C}/b.png"], 1, "cannot write --plot", True),
    ("train", "project-under-a-file", [*TRAIN, "--project", "{C}/runs"], 1, "cannot write --project", True),
    ("qat", "project-under-a-file", [*QAT, "--project", "{C}/runs"], 1, "cannot write --project", True),
    # detectors (issue 14): their options, and every data.yaml row for train and val
    ("train", "det-close-mosaic-negative", [*TRAIN_Y, "--close-mosaic", "-1"], 1, "--close-mosaic", True),
    ("train", "det-box-gain-negative", [*TRAIN_Y, "--box", "-1"], 1, "--box", True),
    ("val", "det-conf-above-1", [*VAL_Y, "--conf", "1.5"], 1, "--conf", True),
    ("val", "det-iou-negative", [*VAL_Y, "--iou", "-0.1"], 1, "--iou", True),
    ("val", "det-max-det-0", [*VAL_Y, "--max-det", "0"], 1, "--max-det", True),
    ("val", "det-on-class-folders", [*VAL_DET, "{D}"], 1, "a detector reads a YOLO data.yaml", False),
    ("val", "classifier-on-data-yaml", ["val", "{C}", "--data", "{Y}"], 1, "class folders", False),
    *[
        ("train", f"det-{case}", [*TRAIN_DET, key], 1, fragment.format(split="train"), False)
        for case, key, fragment in DETECT_DATA
    ],
    *[
        ("val", f"det-{case}", [*VAL_DET, key], 1, fragment.format(split="val"), False)
        for case, key, fragment in DETECT_DATA
    ],
    # predict
    ("predict", "conf-above-1", [*PREDICT, "--conf", "2"], 1, "--conf", True),
    ("predict", "iou-negative", [*PREDICT, "--iou", "-0.1"], 1, "--iou", True),
    ("predict", "max-det-0", [*PREDICT, "--max-det", "0"], 1, "--max-det", True),
    ("predict", "imgsz-stride", [*PREDICT, "--imgsz", "50"], 1, "stride 32", False),
    ("predict", "imgsz-huge", [*PREDICT, "--imgsz", "100000"], 1, "--imgsz", True),
    ("predict", "threads-0", [*PREDICT, "--threads", "0"], 1, "--threads", True),
    ("predict", "cuda", [*PREDICT, "--device", "0"], 1, CUDA, False),
    ("predict", "source-missing", [*PREDICT_ON, "nowhere"], 1, "no such image, folder or list", False),
    ("predict", "source-no-images", [*PREDICT_ON, "{E}"], 1, "holds no images", False),
    ("predict", "classifier", ["predict", "{C}", "--source", "{D}"], 1, "is a classify model", False),
    ("predict", "project-under-a-file", [*PREDICT_SAVE, "{C}/p"], 1, "cannot write --project", True),
    # convert (issue 15, part 8): an Ultralytics YOLOv8 file -> an optkit checkpoint
    ("convert", "output-onnx", [*CONVERT_TO, "out.onnx"], 1, "ONNX", True),
    ("convert", "output-under-a-file", [*CONVERT_TO, "{C}/x.pt"], 1, "cannot write -o", True),
    ("convert", "optkit-checkpoint", ["convert", "{CD}", "--trust"], 1, "nothing to convert", False),
    # deploy (issue 17): the budget, the target, the search's options, outputs, data
    ("deploy", "max-drop-negative", [*DEPLOY_DROP, "-1"], 1, "--max-drop", True),
    ("deploy", "max-drop-above-100", [*DEPLOY_DROP, "101"], 1, "--max-drop", True),
    ("deploy", "target-unknown", [*DEPLOY, "--target", "tensorrt"], 1, "--target must be one of", True),
    ("deploy", "time-budget-words", [*DEPLOY, "--time-budget", "soon"], 1, "--time-budget", True),
    ("deploy", "time-budget-0", [*DEPLOY, "--time-budget", "0m"], 1, "--time-budget", True),
    ("deploy", "prune-1", [*DEPLOY, "--prune", "1"], 1, "--prune", True),
    ("deploy", "prune-and-no-prune", [*DEPLOY, "--prune", "0.3", "--no-prune"], 1, "--no-prune", True),
    ("deploy", "rounds-0", [*DEPLOY, "--rounds", "0"], 1, "--rounds", True),
    ("deploy", "fraction-0", [*DEPLOY, "--fraction", "0"], 1, "--fraction", True),
    ("deploy", "threads-0", [*DEPLOY, "--threads", "0"], 1, "--threads", True),
    ("deploy", "output-pt", [*DEPLOY, "-o", "out.pt"], 1, ".onnx", True),
    ("deploy", "output-under-a-file", [*DEPLOY, "-o", "{C}/x.onnx"], 1, "cannot write -o", True),
    ("deploy", "work-under-a-file", [*DEPLOY, "--work", "{C}/w"], 1, "cannot write --work", True),
    (
        "deploy",
        "openvino-output-a-file",
        [*DEPLOY, "--target", "openvino", "-o", "{C}"],
        1,
        "written as a folder",
        True,
    ),
    ("deploy", "imgsz-stride", [*DEPLOY, "--imgsz", "50"], 1, "stride 32", False),
    ("deploy", "class-mismatch", [*DEPLOY_ON, "{D2}"], 1, "classes", False),
    ("deploy", "data-no-images", [*DEPLOY_ON, "{E}"], 1, "no images", False),
    ("deploy", "detector-on-class-folders", [*DEPLOY_DET, "{D}"], 1, "a detector reads a YOLO", False),
]


# ---- running a case ------------------------------------------------------------------------------


def _snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under root: relative path -> sha256 (or 'dir')."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = "dir"
        for f in filenames:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
    return out


@pytest.fixture
def builds(monkeypatch) -> list[str]:
    """Names of the models built during the test: the real `create_model`, wrapped to count calls."""
    import optkit.models
    import optkit.models.registry

    calls: list[str] = []
    real = optkit.models.registry.create_model

    def counting(name, *args, **kwargs):
        model = real(name, *args, **kwargs)
        calls.append(name)  # only models actually built (an unknown name is refused by the registry)
        return model

    monkeypatch.setattr(optkit.models.registry, "create_model", counting)
    monkeypatch.setattr(optkit.models, "create_model", counting)
    return calls


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> dict[str, Path]:
    """Inputs every case may read (made once per module; each case checks they stay byte-identical):
    a valid checkpoint and four datasets."""
    from image_folders import write_image_folder

    root = tmp_path_factory.mktemp("matrix-inputs")
    empty = root / "no-images"  # the checkpoint's classes, but no image files
    no_classes = root / "no-classes"
    for split in ("train", "val"):
        for name in NAMES:
            (empty / split / name).mkdir(parents=True)
        (empty / split / NAMES[0] / "notes.txt").write_text("not an image")
        (no_classes / split).mkdir(parents=True)
    return {
        "root": root,
        "{C}": _real_ckpt(root / "good.pt"),
        "{D}": write_image_folder(root / "colors", NAMES, per_class=8),
        "{D2}": write_image_folder(root / "pets", ["cat", "dog"], per_class=8, seed=1),
        "{E}": empty,
        "{N}": no_classes,
        **_problem_data(root),
        **_detect_data(root),
    }


def _problem_data(root: Path) -> dict[str, Path]:
    """Issue 13's silent data problems, and a last.pt copied out of its run folder."""
    import shutil

    from image_folders import write_image_folder

    from optkit.checkpoint import checkpoint_from_model, save_checkpoint
    from optkit.models import create_model
    from optkit.train.config import TrainConfig
    from optkit.train.trainer import Trainer

    empty_class = write_image_folder(root / "empty-class", NAMES, per_class=4)
    for f in (empty_class / "train" / "red").iterdir():
        f.unlink()
    loop = write_image_folder(root / "loop", ["cat", "dog"], per_class=4)
    (loop / "train" / "loop").symlink_to(loop, target_is_directory=True)
    (loop / "val" / "loop").mkdir()
    one = write_image_folder(root / "one-class", ["cat"], per_class=4)
    tiny = write_image_folder(root / "tiny", NAMES, per_class=4)
    cfg = TrainConfig(model="test-tiny", data=str(tiny), epochs=2, stop_after=1, imgsz=32, workers=0)
    cfg.project = str(root / "runs")
    run = Trainer(cfg).run()
    lone = shutil.copy(run.last, root / "last.pt")
    gone = write_image_folder(root / "gone", NAMES, per_class=4)  # a run whose dataset then went away
    cfg.data, cfg.project = str(gone), str(root / "runs-gone")
    run_gone = Trainer(cfg).run()
    shutil.rmtree(gone)
    one_class_ckpt = checkpoint_from_model(create_model("test-tiny", num_classes=1), ["cat"], 32)
    return {
        "{EC}": empty_class,
        "{LOOP}": loop,
        "{O}": one,
        "{R}": Path(lone),
        "{RUN}": run.last,
        "{GONE}": run_gone.last,
        "{C1}": save_checkpoint(one_class_ckpt, root / "one-class.pt"),
    }


def _detect_data(root: Path) -> dict[str, Path]:
    """A test-det checkpoint, a good YOLO dataset and one data.yaml per DETECT_DATA row. Every split that
    a row reads is scanned here, so its scan cache exists and the case writes none."""
    from yolo_folders import NAMES as DET_NAMES
    from yolo_folders import write_yolo_dataset

    from optkit.checkpoint import checkpoint_from_model, save_checkpoint
    from optkit.data.yolo_format import load_yolo_data
    from optkit.errors import DatasetError
    from optkit.models import create_model

    det = root / "detect"
    good = write_yolo_dataset(det / "good", n_train=4, n_val=2)
    spec = "path: good\ntrain: images/train\nnames: [rect, ellipse]\n"
    (det / "no-val.yaml").write_text(spec)
    (det / "nc.yaml").write_text(spec + "val: images/val\nnc: 3\n")
    (det / "list.yaml").write_text("- images/train\n- images/val\n")
    broken = {"{YCOLUMNS}": det / "columns", "{YCLASS}": det / "class", "{YIMAGE}": det / "image"}
    for folder in broken.values():
        write_yolo_dataset(folder, n_train=4, n_val=2)
    for split in ("train", "val"):
        label = f"labels/{split}/000.txt"
        first = (broken["{YCOLUMNS}"] / label).read_text().splitlines()[0]
        (broken["{YCOLUMNS}"] / label).write_text(f"{first}\n0 0.5 0.5 0.2\n")
        first = (broken["{YCLASS}"] / label).read_text().splitlines()[0]
        (broken["{YCLASS}"] / label).write_text(f"{first}\n5 0.5 0.5 0.2 0.2\n")
        (broken["{YIMAGE}"] / "images" / split / "bad.png").write_bytes(b"not an image")
        (broken["{YIMAGE}"] / "labels" / split / "bad.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    for data in [good, *(folder / "data.yaml" for folder in broken.values())]:
        for split in ("train", "val"):
            try:
                load_yolo_data(data, splits=(split,), log=lambda line: None)
            except DatasetError:  # the broken ones: the problems are cached with the scan
                pass
    torch.manual_seed(0)
    detector = checkpoint_from_model(create_model("test-det", num_classes=2), DET_NAMES, 64, task="detect")
    return {
        "{CD}": save_checkpoint(detector, det / "det.pt"),
        "{YMISSING}": det / "nothing.yaml",
        "{YLIST}": det / "list.yaml",
        "{YNOVAL}": det / "no-val.yaml",
        "{YNC}": det / "nc.yaml",
        **{key: folder / "data.yaml" for key, folder in broken.items()},
        "{Y}": good,
    }


@pytest.fixture
def workdir(tmp_path, monkeypatch, shared) -> dict[str, Path]:
    monkeypatch.chdir(tmp_path)  # where default outputs and run folders would go
    return {k: v for k, v in shared.items() if k != "root"}


def _expand(args: list[str], values: dict[str, Path]) -> list[str]:
    out = []
    for a in args:
        for key, value in values.items():
            a = a.replace(key, str(value))
        out.append(a)
    return out


def _assert_refused(cli, roots: tuple[Path, ...], args: list[str], code: int, fragment: str) -> str:
    before = [_snapshot(root) for root in roots]
    r = cli(*args)
    *counts, last = r.err.strip().splitlines() or [""]
    assert r.code == code, (r.code, r.err)
    assert last.startswith("error: ") and all(SCAN_LINE.match(line) for line in counts), r.err
    assert "Traceback" not in r.err and r.out == ""
    assert fragment in last, last
    assert [_snapshot(root) for root in roots] == before  # no output, run folder or temp file; inputs intact
    return last


@pytest.mark.parametrize("command, kind", list(_file_cases()))
def test_bad_file(cli, tmp_path, workdir, shared, command, kind):
    bad = _make_file(kind, tmp_path)
    args = _expand(FILE_COMMANDS[command], {"{F}": bad, "{D}": workdir["{D}"]})
    expected = FILE_ROWS[kind]
    if isinstance(expected, tuple):
        expected = expected[0] if command in IR_READERS else expected[1]
    line = _assert_refused(cli, (tmp_path, shared["root"]), args, 1, expected)
    if kind == "foreign":
        assert "pickled Python objects" in line  # names the reason as well as the flag
        takes_trust = "trust" in _options(command.split()[0])
        assert ("rerun with --trust" in line) == takes_trust, line  # never a flag the command lacks
    if kind != "missing":
        assert str(bad) in line  # says which file


def _options(command: str) -> set[str]:
    """The parameter names of a registered command's function."""
    import importlib
    import inspect

    module, func = COMMANDS[command].split(":")
    return set(inspect.signature(getattr(importlib.import_module(module), func)).parameters)


def test_the_refusal_of_pickled_files_names_the_commands_that_take_trust():
    from optkit.workflows.inputs import TRUSTING_COMMANDS

    named = {c.strip() for c in TRUSTING_COMMANDS.replace(" and ", ", ").split(",")}
    assert named == {c for c in COMMANDS if "trust" in _options(c)}


@pytest.mark.parametrize(
    "command, case, args, code, fragment, absurd",
    [pytest.param(*row, id=f"{row[0]}-{row[1]}") for row in OPTION_ROWS],
)
def test_bad_option(cli, tmp_path, workdir, shared, builds, command, case, args, code, fragment, absurd):
    if fragment == CUDA and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    line = _assert_refused(cli, (tmp_path, shared["root"]), _expand(args, workdir), code, fragment)
    if absurd:  # refused while checking the arguments: before any model was built or memory taken
        assert builds == [], f"built {builds} before refusing: {line}"
        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 200 * 1024


def test_every_command_has_rows():
    """The matrix covers every registered command (new commands must add their rows here)."""
    covered = {c.split()[0] for c in FILE_COMMANDS} | {row[0] for row in OPTION_ROWS}
    assert set(COMMANDS) <= covered, sorted(set(COMMANDS) - covered)
