"""The trainer's configuration: plain data, validated before anything is allocated."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from optkit.errors import ConfigError

OPTIMIZERS = ("SGD", "Adam", "AdamW", "RMSProp")
NOMINAL_BATCH = 64  # gradients are accumulated up to this many images per optimizer step
MAX_IMGSZ = 4096  # pixels; bigger inputs are refused before allocating anything
MAX_BATCH = 65536
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
    lr0: float = 0.001  # initial learning rate (AdamW at 0.002 stalls yolo-cls-n from scratch)
    lrf: float = 0.01  # final learning rate = lr0 * lrf
    momentum: float = 0.9  # SGD momentum / Adam beta1
    weight_decay: float = 5e-4
    cos_lr: bool = False
    warmup_epochs: float = 1.0
    warmup_momentum: float = 0.8
    warmup_bias_lr: float = 0.1
    label_smoothing: float = 0.0
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

    def validate(self) -> TrainConfig:
        if self.data is None:  # a new run (a resume has taken its saved dataset by now)
            self.data = DEFAULT_DATA
        if not self.model and not self.weights:
            raise ConfigError("give --model NAME (train from scratch) or --weights CKPT (fine-tune)")
        if self.model and self.weights:
            raise ConfigError("give either --model or --weights, not both")
        if self.weights and self.model_options:
            raise ConfigError("--act, --dropout and --model-opt apply to --model; a checkpoint keeps its own")
        _check_range("--epochs", self.epochs, 1, 100_000)
        if self.imgsz is not None:
            _check_range("--imgsz", self.imgsz, 32, MAX_IMGSZ)
        if self.batch_size != -1:
            _check_range("--batch-size", self.batch_size, 1, MAX_BATCH, hint=" (or -1 for autobatch)")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if not self.lr0 > 0:
            raise ConfigError(f"--lr0 must be > 0, got {self.lr0}")
        if not 0 < self.lrf <= 1:
            raise ConfigError(f"--lrf must be in (0, 1], got {self.lrf}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0 < self.fraction <= 1:
            raise ConfigError(f"--fraction must be in (0, 1], got {self.fraction}")
        for flag, value in (("--patience", self.patience), ("--freeze", self.freeze)):
            _check_range(flag, value, 0, 1_000_000)
        if self.warmup_epochs < 0 or self.weight_decay < 0 or self.momentum < 0:
            raise ConfigError("--warmup-epochs, --weight-decay and --momentum must be >= 0")
        if self.workers is not None:
            _check_range("--workers", self.workers, 0, 256)
        if self.stop_after is not None:
            _check_range("--stop-after", self.stop_after, 1, 100_000)
        return self

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
    least = MIN_BATCH_NORM_BATCH * world
    what = f"--batch-size {batch_size}"
    if world > 1:
        what += f" leaves {per_process} image per process ({world} torchrun processes)"
    raise ConfigError(
        f"{what}: the model has BatchNorm layers, which need at least {MIN_BATCH_NORM_BATCH} images per "
        f"process to train; use --batch-size {least} or more"
    )


def _check_range(flag: str, value: int, lo: int, hi: int, hint: str = "") -> None:
    if not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"{flag} must be an integer in [{lo}, {hi}]{hint}, got {value!r}")
