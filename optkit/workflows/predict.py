"""The `optkit predict` flow: run a detector over images and report (and with --save, draw) its boxes.

Each image is letterboxed to the model's input size as validation does, the detector's output goes
through the same NMS (optkit.measure.nms; predict's score threshold 0.25), and the boxes are mapped back
to the image's own pixels. The model file is a checkpoint, a trusted foreign detector or an .onnx from
`optkit export` (told by its bytes); with --save the drawn images go to a new run folder
(runs/predict/exp, exp2, ...), checked writable before any image is read. An .onnx exported with --nms
returns its final detections: its own NMS (settings fixed at export) replaces optkit's, and --conf and
--max-det can only keep fewer of its rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from optkit.errors import ConfigError, DatasetError
from optkit.limits import MAX_DET, SCORE

PREDICT_CONF = 0.25  # score threshold: boxes a person would want drawn (val uses 0.001)


@dataclass
class PredictRequest:
    weights: str
    source: str  # an image, a folder of images (recursive) or a .txt list of image paths
    imgsz: int | None = None  # pixels; None: the model's own
    conf: float = PREDICT_CONF
    iou: float = 0.7
    max_det: int = 300
    save: bool = False  # draw the boxes into project/name
    project: str = "runs/predict"
    name: str = "exp"
    exist_ok: bool = False
    device: str = ""
    trust: bool = False
    code_dir: str | None = None

    def __post_init__(self) -> None:
        SCORE.check("--conf", self.conf)
        SCORE.check("--iou", self.iou)
        MAX_DET.check("--max-det", self.max_det)


@dataclass
class PredictResult:
    weights: str
    imgsz: int
    images: list[dict] = field(default_factory=list)  # {"image", "width", "height", "detections": [...]}
    save_dir: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return dict(vars(self))


def run_predict(req: PredictRequest, progress=None) -> PredictResult:
    import time

    from optkit.report.progress import Quiet

    progress = progress or Quiet()
    if req.save:
        from optkit.workflows.outputs import check_run_folder

        check_run_folder(req.project)  # before any work: the drawn images can be written
    images = image_paths(req.source)
    model, names, imgsz, device = _open_detector(req)
    save_dir = _save_dir(req) if req.save else None
    result = PredictResult(str(req.weights), imgsz, save_dir=str(save_dir) if save_dir else None)
    t0 = time.perf_counter()
    drawn = _drawn_names(images, Path(req.source).expanduser())
    with progress.step(f"predicting {len(images)} image(s)", total=len(images)) as step:
        for path in images:
            target = save_dir / drawn[path] if save_dir is not None else None
            result.images.append(_predict_one(model, path, names, imgsz, device, req, target))
            step.advance()
    result.seconds = time.perf_counter() - t0
    return result


def image_paths(source: str) -> list[Path]:
    """The images `source` names, in a stable order; a clear error when there are none."""
    from optkit.data.yolo_format import IMAGE_SUFFIXES

    path = Path(source).expanduser()
    if not path.exists():
        raise DatasetError(f"{path}: no such image, folder or list")
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    elif path.suffix.lower() == ".txt":
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        found = [
            (path.parent / line).resolve() if not Path(line).is_absolute() else Path(line) for line in lines
        ]
        missing = [p for p in found if not p.is_file()]
        if missing:
            raise DatasetError(f"{path}: {len(missing)} listed image(s) do not exist, e.g. {missing[0]}")
    else:
        found = [path]
    if not found:
        raise DatasetError(f"{path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return found


def _drawn_names(images: list[Path], source: Path) -> dict[Path, str]:
    """The file name each drawn image gets: its stem, or, for images of a folder, its path below the
    folder with "_" for "/" (two folders may hold the same name)."""
    names = {}
    for path in images:
        below = path.relative_to(source) if source.is_dir() else Path(path.name)
        names[path] = "_".join(below.with_suffix("").parts) + ".jpg"
    return names


def _open_detector(req: PredictRequest):
    """(callable model: images -> [B, 4 + nc, N], class names, input size, device)."""
    from optkit.device import select_device
    from optkit.formats import model_format
    from optkit.measure.validate import OutputsOf
    from optkit.models.imgsz import check_imgsz
    from optkit.tasks import get_task

    if model_format(req.weights) == "onnx":
        from optkit.onnxrt import load_optkit_onnx
        from optkit.workflows.val import onnx_task

        model, meta = load_optkit_onnx(req.weights)
        task_name, names, stride, own = (
            onnx_task(meta),
            meta["names"],
            meta.get("stride") or 32,
            meta.get("imgsz"),
        )
        device = select_device("cpu")
        size = req.imgsz or own or (model.fixed_size() or (None,))[0]
        if not isinstance(size, int):
            raise ConfigError(f"{req.weights} records no input size in its metadata; give --imgsz")
    else:
        from optkit.workflows.inputs import open_model

        src = open_model(req.weights, command="predict", trust=req.trust, code_dir=req.code_dir)
        model, task_name, names, stride, size = (
            src.model(),
            src.task,
            src.names,
            src.stride,
            req.imgsz or src.imgsz,
        )
        device = select_device(req.device)
        model = model.to(device).eval()
    if task_name != "detect":
        raise ConfigError(
            f"predict draws a detector's boxes; {req.weights} is a {task_name} model "
            "(measure it with optkit val)"
        )
    imgsz = check_imgsz(size, stride if isinstance(stride, int) else 32, "--imgsz")
    if model_format(req.weights) == "onnx":
        from optkit.measure.detect_eval import FinalDetections
        from optkit.stages.onnx_nms import nms_settings

        nms = nms_settings(meta)
        if nms is not None:  # NMS in the graph: [1, max_det, 6] out
            return FinalDetections(model, nms, len(names)), list(names), imgsz, device
    return OutputsOf(model, get_task("detect"), len(names)), list(names), imgsz, device


def _save_dir(req: PredictRequest) -> Path:
    from optkit.train.results import next_run_dir

    folder = next_run_dir(req.project, req.name, req.exist_ok)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _predict_one(model, path: Path, names, imgsz: int, device, req: PredictRequest, target) -> dict:
    import numpy as np
    import torch

    from optkit.data.detect_dataset import letterbox, unletterbox_xyxy
    from optkit.data.folder import read_rgb
    from optkit.measure.nms import non_max_suppression

    try:
        image = read_rgb(str(path))
    except OSError as e:
        raise DatasetError(f"{path}: cannot read the image ({e})") from None
    boxed, scale, pad = letterbox(image, imgsz)
    x = torch.from_numpy(np.ascontiguousarray(boxed)).permute(2, 0, 1)[None].float().div_(255).to(device)
    with torch.inference_mode():
        if hasattr(model, "detections"):  # optkit.measure.detect_eval.FinalDetections: NMS in the graph
            (det,) = model.detections(x)
            det = det[det[:, 4] > req.conf][: req.max_det]
        else:
            y = model(x).float()
            (det,) = non_max_suppression(y, conf=req.conf, iou=req.iou, max_det=req.max_det)
    det = det.cpu().numpy()
    boxes = unletterbox_xyxy(det[:, :4], scale, pad)
    width, height = image.size
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    classes, scores = det[:, 5].astype(int), det[:, 4]
    if target is not None:
        from optkit.pictures.boxes import draw_detections, save_jpg

        save_jpg(draw_detections(image, boxes, classes, names, scores), target)
    detections = [
        {
            "class": int(c),
            "name": names[int(c)],
            "score": round(float(s), 5),
            "box": [round(float(v), 2) for v in b],
        }
        for b, c, s in zip(boxes, classes, scores, strict=True)
    ]
    return {"image": str(path), "width": width, "height": height, "detections": detections}
