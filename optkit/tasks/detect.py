"""Object detection: YOLO-format data (a data.yaml), the YOLOv8 loss, COCO mAP (docs/architecture.md,
"The task seam"). The second task behind the seam: every flow that trains, validates or measures a
detector asks this object, as it asks optkit.tasks.classify for a classifier.

Images reach a detector as RGB in [0, 1] (pixels / 255, no mean or std), letterboxed to a square of
`imgsz` with grey (114) padding; targets are (batch index, class, cx, cy, w, h) rows normalised to that
square (optkit.data.detect_dataset). A detector's eval output is [B, 4 + nc, N] (box centre and size in
input pixels, class probabilities), the layout of Ultralytics' ONNX export.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

from optkit.tasks.base import Metric, Task, register_task

BUILTIN_DETECT_IMGSZ = 128  # pixels: what `builtin:shapes-det` trains at when --imgsz is not given
FITNESS_WEIGHTS = (0.1, 0.9)  # best.pt: 0.1 * mAP50 + 0.9 * mAP50-95 (as YOLOv5/v8 choose it)
DEFAULT_GAINS = {"box": 7.5, "cls": 0.5, "dfl": 1.5}  # loss gains (YOLOv8's)
DETECTION_BUILTINS = ("shapes-det",)  # builtin datasets that are YOLO folders with a data.yaml


class Detect(Task):
    name = "detect"
    metrics = (
        Metric("precision", "P"),
        Metric("recall", "R"),
        Metric("map50", "mAP50"),
        Metric("map", "mAP50-95"),
    )
    fitness_key = "map"  # budgets (--auto-skip) are mAP50-95 points; best.pt uses fitness() below
    output_names = ("output0",)  # [B, 4 + nc, N], as Ultralytics names it
    loss_names = ("box_loss", "cls_loss", "dfl_loss")
    loss_label = "detection loss (box, cls, dfl)"
    fitness_parts = ("map50",)  # fitness() below weighs mAP50 too
    preprocess = {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}  # pixels / 255 only
    default_data = "builtin:shapes-det"
    # AdamW from scratch, yolo-det-n at 96 px, 17 epochs on builtin:shapes-det, seeds 0, 1, 2: mAP50-95
    # 0.771, 0.758, 0.764 at 0.002 against 0.692, 0.682, 0.687 at 0.001 (Ultralytics' automatic
    # 0.002*5/(4+nc) for 6 classes), 0.787 at 0.003 (seed 0): 0.001 leaves a short run underfitted, and
    # 0.002 is the step that every seed confirmed (README, Detection)
    default_lr0 = 0.002

    # ---- data -------------------------------------------------------------------------------
    def resolve_data(
        self,
        spec: str,
        log: Callable[[str], None] | None = None,
        skip_bad_labels: bool = False,
        splits: tuple[str, ...] = ("train", "val"),
    ):
        """`builtin:shapes-det` (generated once into the cache) or a data.yaml (or a folder holding one)."""
        from optkit.data.yolo_format import load_yolo_data

        yaml_path = data_yaml(spec, log)
        data = load_yolo_data(yaml_path, splits=splits, skip_bad_labels=skip_bad_labels, log=log)
        data.name = spec
        return data

    def default_imgsz(self, spec: str) -> int | None:
        return BUILTIN_DETECT_IMGSZ if spec.startswith("builtin:") else None

    def train_loader(self, data, names, imgsz, batch, workers, seed, fraction=1.0, rank=0, world=1,
                     cache=False, options=None):  # fmt: skip
        from optkit.data import build_train_loader
        from optkit.data.detect_dataset import DetectDataset, collate_detect

        options = options or {}
        split = data.splits["train"]
        dataset = DetectDataset(
            split.images, split.labels, imgsz, augment=True,
            mosaic_epochs=options.get("mosaic_epochs", 0), cache=cache, root=data.root,
        )  # fmt: skip
        return build_train_loader(
            dataset,
            batch,
            workers,
            seed,
            fraction=fraction,
            rank=rank,
            world=world,
            collate_fn=partial(collate_detect, channels_last=True),  # the trainer's CPU layout
        )

    def val_loader(self, data, names, imgsz, batch, workers, preprocess=None):
        from optkit.data import build_val_loader
        from optkit.data.detect_dataset import collate_detect

        dataset = self._letterboxed(data, imgsz, "val")  # uint8 items: a quarter of the bytes to collate
        return build_val_loader(dataset, batch, workers, collate_fn=collate_detect)

    def image_dataset(self, data, names, imgsz, split, preprocess=None):
        from optkit.data.detect_dataset import ModelInputs

        return ModelInputs(self._letterboxed(data, imgsz, split))

    def _letterboxed(self, data, imgsz, split):
        from optkit.data.detect_dataset import DetectDataset

        chosen = data.splits[split]
        return DetectDataset(chosen.images, chosen.labels, imgsz, augment=False, root=data.root)

    def collate(self, items):
        """image_dataset items -> (images [B, 3, S, S], targets [M, 6] (batch index, class, cx, cy, w, h))."""
        from optkit.data.detect_dataset import collate_detect

        return collate_detect(items)

    # ---- training and evaluation ----------------------------------------------------------------
    def loss(self, options: dict, model=None) -> Callable:
        from optkit.tasks.detect_loss import DetectionLoss

        head = detect_head(model)
        gains = {k: options.get(k, v) for k, v in DEFAULT_GAINS.items()}
        return DetectionLoss(head.nc, strides=tuple(head.strides), reg_max=head.reg_max, **gains)

    def evaluate(self, model, loader, device, amp: bool = False, options: dict | None = None) -> dict:
        """`options`: conf, iou, max_det (optkit.measure.detect_eval's validation defaults otherwise)."""
        from optkit.measure.detect_eval import evaluate_detector

        return evaluate_detector(
            model, loader, device, amp=amp, loss_names=self.loss_names, **(options or {})
        )

    @property
    def distill_label(self) -> str:  # what distill_loss does with its default gains
        from optkit.tasks.detect_distill import DEFAULT_GAINS

        neck = " and the neck's maps (channel-wise KL)" if DEFAULT_GAINS["features"] else ""
        return f"distillation from the float model (head: DFL bins and class KL{neck})"

    def distill_forward(self, model, images):
        """Training mode (the student): the model's forward (the raw maps the loss reads), with the
        head's input, the neck maps, caught on the way in. Eval mode (the teacher, whose forward would
        decode): the neck maps from `model.features` and the raw maps from the head's `raw`."""
        from optkit.tasks.base import DistillPass

        head = detect_head(getattr(model, "module", model))  # under DistributedDataParallel too
        if not model.training:
            features = getattr(model, "module", model).features(images)
            return DistillPass(head.raw(features), features)
        caught: list = []
        hook = head.register_forward_pre_hook(lambda module, args: caught.append(args[0]))
        try:
            raw = model(images)
        finally:
            hook.remove()
        return DistillPass(raw, caught[0])

    def distill_loss(self, student, teacher, options: dict):
        """Head (DFL bin KL weighted by the teacher's confidence, class Bernoulli KL) and, with a
        "features" gain, channel-wise distillation of the neck maps: optkit.tasks.detect_distill."""
        from optkit.tasks.detect_distill import detection_distillation

        return detection_distillation(student, teacher, options)

    fitness_label = "fitness (0.1 mAP50 + 0.9 mAP50-95)"
    draws_pictures = True

    def pictures(self, folder, details, names) -> list[str]:
        """val_batch0_labels.jpg and val_batch0_pred.jpg (the first val batch with its ground truth and
        with the predictions scored 0.25 or more) and PR_curve.png (precision-recall at IoU 0.5)."""
        from optkit.pictures.boxes import batch_grid, predictions_by_image, save_jpg, targets_by_image
        from optkit.pictures.curves import plot_pr_curve

        folder = Path(folder)
        images, targets, predictions = details["first_batch"]
        truth = targets_by_image(targets, len(images), images.shape[-1])
        save_jpg(batch_grid(images, truth, names), folder / "val_batch0_labels.jpg")
        save_jpg(batch_grid(images, predictions_by_image(predictions), names), folder / "val_batch0_pred.jpg")
        curve = details["pr_curve"]
        plot_pr_curve(curve.recall, curve.precision, names, details["ap50"], folder / "PR_curve.png")
        return ["val_batch0_labels.jpg", "val_batch0_pred.jpg", "PR_curve.png"]

    def fitness(self, metrics: dict) -> float:
        w50, w = FITNESS_WEIGHTS
        return w50 * float(metrics["map50"]) + w * float(metrics["map"])

    # ---- outputs --------------------------------------------------------------------------------
    def read_outputs(self, output, num_classes: int):
        from optkit.measure.detect_eval import detector_output

        return detector_output(output, num_classes)


def data_yaml(spec: str, log=None) -> Path:
    """The data.yaml that `--data` names: a builtin's (generated on first use), a .yaml file, or the
    data.yaml inside a folder."""
    from optkit.errors import DatasetError

    if spec.startswith("builtin:"):
        from optkit.data.shapes import BUILTINS, builtin_root

        name = spec.split(":", 1)[1]
        if name in BUILTINS and name not in DETECTION_BUILTINS:
            raise DatasetError(
                f"{spec} is a classification dataset (class folders); a detector trains and is measured on "
                "builtin:shapes-det or a YOLO data.yaml"
            )
        return builtin_root(name, log=log) / "data.yaml"
    path = Path(spec).expanduser()
    if path.is_dir():
        if (path / "data.yaml").is_file():
            return path / "data.yaml"
        raise DatasetError(
            f"{path} is a folder without a data.yaml; a detector reads a YOLO data.yaml "
            "(path, train, val, names)"
        )
    if not path.exists():
        raise DatasetError(f"{path}: no such data.yaml")
    return path


def detect_head(model):
    """The Detect block of a zoo detector (its last block), which knows nc, reg_max and strides."""
    from optkit.models.parts import head_name

    head = dict(model.named_modules())[head_name(model)]
    return head


DETECT = register_task(Detect())
