"""The trainer's configuration: plain data, validated before anything is allocated."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from optkit import limits
from optkit.limits import ConfigFieldsError, FieldError

OPTIMIZERS = ("SGD", "Adam", "AdamW", "RMSProp")
NOMINAL_BATCH = 64  # gradients are accumulated up to this many images per optimizer step
AUTOBATCH = -1  # batch_size: the largest batch that fits (optkit.train.autobatch)
DEFAULT_DATA = "builtin:shapes"  # --data of a new run when none is given
MIN_BATCH_NORM_BATCH = 2  # images per process: BatchNorm cannot train on one ("Expected more than 1 value")


@dataclass
class TrainConfig:
    model: str | None = None  # registry name (train from scratch)
    model_options: dict = field(default_factory=dict)  # e.g. {"act": "relu", "dropout": 0.1}
    weights: str | None = None  # checkpoint to fine-tune from
    # None: DEFAULT_DATA for a new run; with resume_from, the dataset last.pt was trained on (a path given
    # here replaces it: the dataset moved)
    data: str | None = None
    epochs: int = 10
    imgsz: int | None = None  # None: the checkpoint's, else the builtin data's, else the model's default
    batch_size: int = 64  # per optimizer micro-step, all torchrun processes together; -1 = autobatch
    optimizer: str = "AdamW"
    # initial learning rate; None: the task's (optkit.tasks: 0.001 for classifiers, where AdamW at 0.002
    # stalls yolo-cls-n from scratch; 0.002 for detectors), set by Trainer.prepare
    lr0: float | None = None
    lrf: float = 0.01  # final learning rate = lr0 * lrf
    momentum: float = 0.9  # SGD momentum / Adam beta1
    weight_decay: float = 5e-4
    cos_lr: bool = False
    warmup_epochs: float = 1.0
    warmup_momentum: float = 0.8
    warmup_bias_lr: float = 0.1
    label_smoothing: float = 0.0  # classify
    close_mosaic: int = 10  # detect: the last N epochs train without mosaic
    box: float = 7.5  # detect: loss gains (YOLOv8's)
    cls: float = 0.5
    dfl: float = 1.5
    skip_bad_labels: bool = False  # detect: drop images with bad label rows instead of refusing the data
    patience: int = 50  # epochs without val top-1 improvement before stopping early
    freeze: int = 0  # freeze the first N top-level blocks
    seed: int = 0
    device: str = ""
    workers: int | None = None
    fraction: float = 1.0
    cache: bool = False  # keep decoded training images in RAM
    amp: bool = True  # mixed precision; only ever used on CUDA
    sync_bn: bool = False  # SyncBatchNorm across torchrun processes (CUDA only)
    project: str = "runs/train"
    name: str = "exp"
    exist_ok: bool = False
    stop_after: int | None = None  # stop this run after N epochs (resume later with --resume)
    resume_from: str | None = None  # a last.pt to continue

    # An explicit validate(), not __post_init__: a resumed run is made as TrainConfig(resume_from=...) with
    # neither model nor weights (and from_dict/field updates rebuild the saved config from last.pt), and
    # `data` None means "the saved dataset" until the resume has read it; so the trainer validates once the
    # config is complete (Trainer.prepare), and `optkit train` before any work when it is not resuming.
    def validate(self) -> TrainConfig:
        """Check every option (one message each) against optkit.limits; returns self. The messages name
        the fields (FieldError, ConfigFieldsError); the flows that own the flags word them
        (optkit.workflows.train.FLAGS, with optkit.limits.options_named)."""
        if self.data is None:  # a new run (a resume has taken its saved dataset by now)
            self.data = DEFAULT_DATA
        model_or_weights = ("model", "weights", "model_options")
        if not self.model and not self.weights:
            raise ConfigFieldsError(
                "give {model} NAME (train from scratch) or {weights} CKPT (fine-tune)", model_or_weights
            )
        if self.model and self.weights:
            raise ConfigFieldsError("give either {model} or {weights}, not both", model_or_weights)
        if self.weights and self.model_options:
            raise ConfigFieldsError(
                "{model_options} apply to {model}; a checkpoint keeps its own", model_or_weights
            )
        if self.imgsz is not None and self.imgsz not in limits.IMGSZ:
            from optkit.models.imgsz import check_imgsz

            check_imgsz(self.imgsz)  # every imgsz refusal in one wording (the stride is checked later)
        if self.batch_size != AUTOBATCH:
            limits.BATCH.check("batch_size", self.batch_size, hint=" (or -1 for autobatch)")
        for name, value, bounds in self._bounded():
            if value is not None:  # None: chosen later (workers) or not asked for (stop_after)
                bounds.check(name, value)
        if self.optimizer not in OPTIMIZERS:
            raise FieldError("optimizer", f"must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        return self

    def with_task_lr0(self, task) -> TrainConfig:
        """lr0 None (not given) becomes the task's default (optkit.tasks.Task.default_lr0); returns self."""
        if self.lr0 is None:
            self.lr0 = task.default_lr0
        return self

    def _bounded(self) -> list[tuple[str, object, limits.Bounds]]:
        return [
            ("epochs", self.epochs, limits.EPOCHS),
            ("lr0", self.lr0, limits.LR0),
            ("lrf", self.lrf, limits.LRF),
            ("momentum", self.momentum, limits.NON_NEGATIVE),
            ("weight_decay", self.weight_decay, limits.NON_NEGATIVE),
            ("warmup_epochs", self.warmup_epochs, limits.NON_NEGATIVE),
            ("label_smoothing", self.label_smoothing, limits.LABEL_SMOOTHING),
            ("close_mosaic", self.close_mosaic, limits.CLOSE_MOSAIC),
            ("box", self.box, limits.NON_NEGATIVE),
            ("cls", self.cls, limits.NON_NEGATIVE),
            ("dfl", self.dfl, limits.NON_NEGATIVE),
            ("fraction", self.fraction, limits.FRACTION),
            ("patience", self.patience, limits.PATIENCE),
            ("freeze", self.freeze, limits.FREEZE),
            ("workers", self.workers, limits.WORKERS),
            ("stop_after", self.stop_after, limits.STOP_AFTER),
        ]

    def task_options(self) -> dict:
        """What the task's loss and loader read (optkit.tasks): a classifier's label smoothing, a
        detector's loss gains and the epochs that use mosaic."""
        return {
            "label_smoothing": self.label_smoothing,
            "box": self.box,
            "cls": self.cls,
            "dfl": self.dfl,
            "mosaic_epochs": max(self.epochs - self.close_mosaic, 0),
        }

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def has_batch_norm(model) -> bool:
    from torch.nn.modules.batchnorm import _BatchNorm  # BatchNorm1d/2d/3d, SyncBatchNorm, lazy ones

    return any(isinstance(m, _BatchNorm) for m in model.modules())


def require_batch_norm_batch(model, batch_size: int, world: int = 1) -> None:
    """Refuse a batch that leaves fewer than 2 images per process (`batch_size` is the global batch of
    `world` processes) when the model has BatchNorm layers: in training mode BatchNorm normalises each
    channel over the batch, which one image cannot do. A model without BatchNorm trains at any batch."""
    per_process = batch_size // world
    if per_process >= MIN_BATCH_NORM_BATCH or not has_batch_norm(model):
        return
    per = f" leaves {per_process} image per process ({world} torchrun processes)" if world > 1 else ""
    raise ConfigFieldsError(
        "{batch_size} {batch}{per}: the model has BatchNorm layers, which need at least {each} images per "
        "process to train; use {batch_size} {least} or more",
        ["batch_size"],
        batch=batch_size, per=per, each=MIN_BATCH_NORM_BATCH, least=MIN_BATCH_NORM_BATCH * world,
    )  # fmt: skip
