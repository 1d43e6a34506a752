"""The embedded fine-tuning trainer (README, `optkit train`; its task seam: docs/architecture.md).

Exact resume: everything random is a pure function of (seed, epoch, index) — the sample order,
the augmentation of each image and the dropout masks (torch is re-seeded at every epoch) — and
last.pt carries the optimizer, EMA, AMP scaler and early-stopping state. Gradient accumulation
never spans an epoch boundary. So `--stop-after 1` followed by `--resume` equals one straight run.

Under torchrun (see optkit.train.distributed) every process trains a shard of each global batch through
DistributedDataParallel; rank 0 alone validates, writes and reports, and the others wait for its metrics.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from optkit.checkpoint import (
    Checkpoint,
    build_model,
    checkpoint_from_model,
    load_checkpoint,
    save_checkpoint,
    state_dict_cpu,
)
from optkit.errors import CheckpointError, Interrupted
from optkit.io import WriteError, atomic_write_text
from optkit.limits import ConfigFieldsError, FieldError
from optkit.models.imgsz import check_imgsz
from optkit.tasks import get_task
from optkit.train import distributed, interrupt, resume
from optkit.train.config import MIN_BATCH_NORM_BATCH, TrainConfig, has_batch_norm, require_batch_norm_batch
from optkit.train.memory_format import match_parameter_layout, training_memory_format
from optkit.train.results import (
    carried_rows,
    columns,
    format_row,
    next_run_dir,
    restore_results,
    write_results,
)

log = logging.getLogger("optkit")

GRAD_CLIP = 10.0  # max gradient norm per optimizer step


@dataclass
class TrainResult:
    save_dir: Path
    best: Path
    last: Path
    epochs_run: int  # epochs completed in this process
    epoch: int  # last completed epoch, 1-based
    best_epoch: int  # 1-based
    task: str  # optkit.tasks: what the metrics in `final` are
    best_fitness: float  # the task's fitness metric at the best epoch
    fitness_key: str  # which metric that is, e.g. "top1"
    final: dict  # metrics of the last epoch
    images_per_s: float  # training throughput, averaged over this run's epochs
    seconds: float
    stopped_early: bool
    finished: bool
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        """Plain data; the best fitness is keyed by its metric (`best_top1` for a classifier)."""
        keyed = ("best_fitness", "fitness_key")
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in keyed}
        for k in ("save_dir", "best", "last"):
            d[k] = str(d[k])
        d[f"best_{self.fitness_key}"] = self.best_fitness
        return d


class Trainer:
    """Builds everything from a TrainConfig, then `run()` trains and writes the run folder."""

    def __init__(self, cfg: TrainConfig, progress=None, dist: distributed.DistContext | None = None):
        self.cfg = cfg
        self.progress = progress  # optional callback(event: str, **info) for the CLI's display
        self.dist = dist or distributed.SINGLE  # this process's place under torchrun
        self.ctrl_c = interrupt.Latch()  # replaced by a live one while epochs run (optkit.train.interrupt)
        self.notes: list[str] = []
        self.prepared = False

    # ---- set-up ---------------------------------------------------------------------------
    def prepare(self) -> None:
        """What needs no process group: the checkpoint to resume, the config, the device, and the
        options checked against the number of processes."""
        self.resume_ckpt = self._load_resume() if self.cfg.resume_from else None
        cfg = self.cfg.validate()
        self.task = get_task(self._task_name())
        cfg.with_task_lr0(self.task)  # before args.yaml and last.pt record the config
        self.columns = columns((m.key for m in self.task.metrics), self.task.loss_names)  # of results.csv
        self.device = distributed.rank_device(cfg.device, self.dist)
        distributed.check_options(self.dist, cfg.batch_size, cfg.sync_bn, self.device)
        if 0 < cfg.batch_size < MIN_BATCH_NORM_BATCH * self.dist.world_size:  # 1 image per process
            require_batch_norm_batch(self._model_to_check(), cfg.batch_size, self.dist.world_size)
        self.prepared = True

    def _task_name(self) -> str:
        """The task the run trains: its checkpoint's, or the zoo model's (optkit.tasks)."""
        from optkit.models import get_spec

        if self.resume_ckpt is not None:
            return self.resume_ckpt.task
        if self.cfg.weights:
            return load_checkpoint(self.cfg.weights, reader="train --weights").task
        return get_spec(self.cfg.model).task

    def _model_to_check(self):
        """The architecture this run will train, built before any data is read (its head's class count
        may differ): for the checks made before any work."""
        from optkit.models import create_model

        if self.resume_ckpt is not None:
            return build_model(self.resume_ckpt, weights="model")
        if self.cfg.weights:
            return build_model(load_checkpoint(self.cfg.weights, reader="train --weights"))
        return create_model(self.cfg.model, num_classes=2, **self.cfg.model_options)

    def setup(self) -> None:
        """Data, model, optimizer and run folder; under torchrun, inside the process group."""
        import torch

        if not self.prepared:
            self.prepare()
        cfg, resume_ckpt = self.cfg, self.resume_ckpt
        torch.manual_seed(cfg.seed)
        self.data = self._resolve_data()
        self._build_model(resume_ckpt)
        check_imgsz(self.imgsz, self.model.stride)  # names the field; the train flow says its flag
        self._build_loaders()
        self._plan_warmup()
        self._freeze(cfg.freeze)
        self.memory_format = training_memory_format(self.device)  # channels-last on the CPU
        self.model.to(self.device, memory_format=self.memory_format)
        self.masks = self._sparsity_masks()
        # train_model is what runs forward/backward (DDP under torchrun); self.model stays the plain
        # module that is saved, averaged (EMA) and validated, so checkpoints have no `module.` prefix
        self.train_model, self.model = distributed.wrap_model(self.model, self.dist, self.device, cfg.sync_bn)
        if cfg.sync_bn and not self.dist.enabled:
            self.notes.append("--sync-bn has no effect in a single process (it syncs torchrun processes)")
        self._build_optimization(resume_ckpt)
        # chosen once by rank 0, so that two processes never pick exp2 and exp3
        self.save_dir = distributed.broadcast(
            self._run_dir(resume_ckpt) if self.dist.is_main else None, self.dist
        )

    def _load_resume(self) -> Checkpoint:
        path = Path(self.cfg.resume_from)
        ckpt = load_checkpoint(path, reader="train --resume")
        if ckpt.train_args is None or ckpt.optimizer is None:
            raise CheckpointError(
                f"{path} has no training state to resume (it is not a last.pt from optkit train)"
            )
        saved = TrainConfig.from_dict(ckpt.train_args)
        if ckpt.epoch + 1 >= saved.epochs:
            raise ConfigFieldsError(
                "{path} finished all {done} epochs; nothing to resume (to train more: optkit train {weights} "
                "{path} {epochs} N)",
                ["weights", "epochs"],
                path=path,
                done=saved.epochs,
            )
        self.resume_dir = resume.run_folder_of(path)  # <run>/weights/last.pt, wherever <run> now is
        if self.dist.is_main:  # rank 0 alone reads and writes the run folder
            best_epoch = (ckpt.train_state or {}).get("best_epoch", -1) + 1
            task = get_task(ckpt.task)
            cols = columns((m.key for m in task.metrics), task.loss_names)
            carried = carried_rows(ckpt.train_state, ckpt.epoch + 1, cols) is not None
            resume.check_run_folder(self.resume_dir, ckpt.epoch + 1, best_epoch, carried)
        saved.device = self.cfg.device or saved.device  # the machine may differ
        saved.workers = self.cfg.workers if self.cfg.workers is not None else saved.workers
        saved.stop_after = self.cfg.stop_after
        saved.resume_from = str(path)
        if self.cfg.data is not None:  # --data given: where the dataset is now (its classes are checked)
            saved.data = self.cfg.data
        else:
            resume.check_saved_data(saved.data, path)
        self.cfg = saved
        return ckpt

    def _resolve_data(self):
        skip = {"skip_bad_labels": True} if self.cfg.skip_bad_labels else {}  # only tasks with label files
        data = self.task.resolve_data(self.cfg.data, log=self._log, **skip)
        self.task.check_classes(list(data.names), data.root)
        return data

    def _log(self, line: str) -> None:
        """A progress line from set-up (e.g. a built-in dataset being generated)."""
        self._emit("log", line=line)

    def _build_model(self, resume_ckpt: Checkpoint | None) -> None:
        """Sets model, names, imgsz, and the lineage and transforms that saved checkpoints carry on."""
        from optkit.models import create_model, get_spec

        cfg = self.cfg
        if resume_ckpt is not None:
            resume.check_same_classes(self.data.names, resume_ckpt.names, self.data.root, cfg.resume_from)
            self.model = build_model(resume_ckpt, weights="model").train()
            self.names, self.imgsz = resume_ckpt.names, resume_ckpt.imgsz
            # the last lineage entry is this run's own "train" entry; it is rewritten at each save
            self.lineage, self.transforms = list(resume_ckpt.lineage[:-1]), list(resume_ckpt.transforms)
        elif cfg.weights:
            ckpt = load_checkpoint(cfg.weights, reader="train --weights")
            self.names = list(self.data.names)
            self.model = self._model_for_classes(ckpt, self.names)
            self.imgsz = cfg.imgsz or ckpt.imgsz
            self.lineage, self.transforms = list(ckpt.lineage), list(ckpt.transforms)
        else:
            self.names = list(self.data.names)
            self.model = create_model(cfg.model, num_classes=len(self.names), **cfg.model_options)
            self.imgsz = cfg.imgsz or self.task.default_imgsz(cfg.data) or get_spec(cfg.model).default_imgsz
            self.lineage, self.transforms = [], []

    def _sparsity_masks(self) -> dict:
        """Weights zeroed by unstructured pruning stay zero while training (re-applied after each step)."""
        from optkit.stages.prune import sparsity_entries, sparsity_masks

        entries = sparsity_entries(self.transforms)
        if not entries:
            return {}

        masks: dict = {}
        for entry in entries:
            masks.update(sparsity_masks(self.model, entry))
        self.notes.append(f"keeping {len(masks)} pruned weight tensors sparse while training")
        return masks

    def _model_for_classes(self, ckpt: Checkpoint, names: list[str]):
        """The checkpoint's model. When the dataset's classes differ, its class output layers (the
        classifier's Linear, a detector's class convs, as the model declares them: optkit.models.parts)
        are re-initialised: with another count their shape changes, and with the same count under other
        names their outputs would mean other classes."""
        from optkit.checkpoint import create_architecture

        if ckpt.names == names:
            return build_model(ckpt).train()
        model = create_architecture(dataclasses.replace(ckpt, names=names))
        state, head = model.state_dict(), _class_layer_keys(model)
        weights = ckpt.inference_weights()
        loaded = {
            k: v for k, v in weights.items() if k in state and k not in head and state[k].shape == v.shape
        }
        fresh = ", ".join(sorted(k for k in state if k not in loaded))
        model.load_state_dict(loaded, strict=False)
        old, new = resume.short_names(ckpt.names), resume.short_names(names)
        if len(ckpt.names) != len(names):
            self.notes.append(
                f"dataset classes differ from the checkpoint's ({len(ckpt.names)} -> {len(names)} classes: "
                f"({old}) -> ({new})): class output layers reshaped and re-initialised ({fresh})"
            )
        else:
            self.notes.append(
                f"dataset classes ({new}) are not the checkpoint's ({old}): same count, other meaning, so "
                f"the class output layers are re-initialised ({fresh})"
            )
        return model.train()

    def _build_loaders(self) -> None:
        from optkit.data import default_workers

        cfg, dist, task = self.cfg, self.dist, self.task
        self.batch_size = self._batch_size()  # global: all processes together
        per_rank = self.batch_size // dist.world_size
        workers = cfg.workers if cfg.workers is not None else default_workers()
        self.train_loader, self.sampler = task.train_loader(
            self.data, self.names, self.imgsz, per_rank, workers, cfg.seed,
            fraction=cfg.fraction, rank=dist.rank, world=dist.world_size, cache=cfg.cache,
            options=cfg.task_options(),
        )  # fmt: skip
        self.val_loader = None  # rank 0 alone validates
        if dist.is_main:
            self.val_loader = task.val_loader(self.data, self.names, self.imgsz, per_rank * 2, workers)

    def _plan_warmup(self) -> None:
        """Warm-up iterations, the same every epoch and on resume; a note when a short run cuts it."""
        from optkit.train.optim import warmup_iterations, warmup_note

        nb = len(self.train_loader)
        self.warmup = warmup_iterations(self.cfg, nb)
        note = warmup_note(self.cfg, nb)
        if note:
            self.notes.append(note)

    def _batch_size(self) -> int:
        if self.cfg.batch_size != -1:
            return self.cfg.batch_size
        from optkit.train.autobatch import autobatch

        batch, message = autobatch(self.model.to(self.device), self.imgsz, self.device)
        if batch < MIN_BATCH_NORM_BATCH and has_batch_norm(self.model):
            batch = MIN_BATCH_NORM_BATCH
            message += f"; using {batch}, the fewest images per process BatchNorm trains on"
        if self.dist.enabled:  # autobatch fits one device: the global batch is the smallest fit x world
            per_rank = distributed.all_min(batch, self.dist)
            batch = per_rank * self.dist.world_size
            message += f"; global batch {batch} = {self.dist.world_size} processes x {per_rank}"
        self.notes.append(message)
        return batch

    def _freeze(self, n: int) -> None:
        blocks = self.model.model
        if n >= len(blocks):
            detail = f"{n}: the model has only {len(blocks)} top-level blocks (the last is the head)"
            raise FieldError("freeze", detail)
        for block in list(blocks)[:n]:
            for p in block.parameters():
                p.requires_grad_(False)

    def _build_optimization(self, resume_ckpt: Checkpoint | None) -> None:
        import torch

        from optkit.train.ema import ModelEMA
        from optkit.train.optim import accumulate_steps, build_optimizer
        from optkit.train.stopper import EarlyStopper

        cfg = self.cfg
        self.accumulate = accumulate_steps(self.batch_size)
        self.optimizer = build_optimizer(self.model, cfg, self.batch_size)
        self.ema = ModelEMA(self.model)
        self.amp = cfg.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.stopper = EarlyStopper(cfg.patience)
        self.start_epoch = 0
        if resume_ckpt is not None:
            self.optimizer.load_state_dict(resume_ckpt.optimizer)
            match_parameter_layout(self.optimizer)
            self.ema.ema.load_state_dict(resume_ckpt.ema)
            self.ema.updates = resume_ckpt.updates
            if resume_ckpt.scaler:
                self.scaler.load_state_dict(resume_ckpt.scaler)
            state = resume_ckpt.train_state or {}
            self.stopper = EarlyStopper(cfg.patience, state.get("best_fitness"), state.get("best_epoch", -1))
            self.start_epoch = resume_ckpt.epoch + 1
        self.ema.ema.to(self.device)
        self.criterion = self.task.loss(cfg.task_options(), self.model)

    def _run_dir(self, resume_ckpt: Checkpoint | None) -> Path:
        if resume_ckpt is not None:
            return self.resume_dir  # checked in prepare(): <run>/weights/last.pt
        return next_run_dir(self.cfg.project, self.cfg.name, self.cfg.exist_ok)

    # ---- training -------------------------------------------------------------------------
    def run(self) -> TrainResult:
        self.prepare()
        with distributed.process_group(self.dist, self.device):
            self.setup()
            return self._train()

    def _train(self) -> TrainResult:
        cfg = self.cfg
        wdir = self.save_dir / "weights"
        self.rows = []
        if self.dist.is_main:
            wdir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(
                self.save_dir / "args.yaml", yaml.safe_dump(self._args_record(), sort_keys=False)
            )
            state = self.resume_ckpt.train_state if self.resume_ckpt is not None else None
            self.rows = restore_results(self.save_dir / "results.csv", state, self.start_epoch, self.columns)
        self._emit(
            "start", save_dir=self.save_dir, start_epoch=self.start_epoch, notes=self.notes,
            metrics=self.task.metrics, loss_names=self.task.loss_names,
        )  # fmt: skip
        t_run = time.perf_counter()
        images = train_seconds = 0.0
        metrics: dict = {}
        stopped_early = False
        last_epoch = self.saved_epoch = self.start_epoch - 1  # saved_epoch: what last.pt holds
        try:
            with interrupt.latch() as self.ctrl_c:
                for epoch in range(self.start_epoch, cfg.epochs):
                    metrics, n_images, seconds = self._epoch_or_interruption(epoch, wdir)
                    self.ctrl_c.check()  # a Ctrl-C Python swallowed during the epoch's writes
                    images, train_seconds, last_epoch = images + n_images, train_seconds + seconds, epoch
                    if self.stopper.should_stop(epoch):
                        stopped_early = True
                        self.notes.append(f"stopped early: no improvement in {cfg.patience} epochs")
                        break
                    if self._stop_here(epoch):
                        self.notes.append(
                            f"stopped after {cfg.stop_after} epoch(s) as asked; "
                            f"continue with --resume {wdir / 'last.pt'}"
                        )
                        break
        except KeyboardInterrupt:
            raise Interrupted(self._interrupted_message(wdir, self.saved_epoch)) from None
        except WriteError as e:  # a full disk: also what last.pt holds, and how to continue
            raise WriteError(f"{e}; {self._interrupted_message(wdir, self.saved_epoch)}") from None
        finally:
            if self.dist.is_main and self.rows:
                self._draw_pictures()
        return TrainResult(
            save_dir=self.save_dir,
            best=wdir / "best.pt",
            last=wdir / "last.pt",
            epochs_run=last_epoch + 1 - self.start_epoch,
            epoch=last_epoch + 1,
            best_epoch=self.stopper.best_epoch + 1,
            task=self.task.name,
            best_fitness=self.stopper.best_fitness or 0.0,
            fitness_key=self.task.fitness_key,
            final=metrics,
            images_per_s=images / train_seconds if train_seconds else 0.0,
            seconds=time.perf_counter() - t_run,
            stopped_early=stopped_early,
            finished=stopped_early or last_epoch + 1 >= cfg.epochs,
            notes=self.notes,
        )

    def _epoch_or_interruption(self, epoch: int, wdir: Path) -> tuple[dict, int, float]:
        """_epoch; when a DataLoader worker died because the whole process group got SIGTERM or Ctrl-C
        (`timeout`, a terminal), torch may report the dead worker before Python runs this process's
        own signal handler: the interruption is what happened, so it is what is raised."""
        try:
            return self._epoch(epoch, wdir)
        except RuntimeError as e:
            if "DataLoader worker" not in str(e):
                raise
            for _ in range(10_000):  # bytecodes: Python runs a pending signal handler in one of them
                pass
            self.ctrl_c.check()  # raises the SIGTERM / Ctrl-C when one came
            raise

    def _epoch(self, epoch: int, wdir: Path) -> tuple[dict, int, float]:
        """Train, validate, log and save one epoch; returns (val metrics, images trained, train seconds)."""
        t0 = time.perf_counter()
        train_losses, n_images = self._train_one_epoch(epoch)
        t_train = time.perf_counter() - t0
        metrics = self._validate()
        improved = self.stopper.update(epoch, self.task.fitness(metrics))
        lrs = [g["lr"] for g in self.optimizer.param_groups]
        names = self.task.loss_names
        row = {
            "epoch": epoch + 1,
            **{f"train_{n}": value for n, value in zip(names, train_losses, strict=True)},
            **{f"val_{n}": metrics[n] for n in names},
            **{m.key: metrics[m.key] for m in self.task.metrics},
            "lr_weights": lrs[0],
            "lr_norm": lrs[1],
            "lr_bias": lrs[2],
            "time": time.perf_counter() - t0,
        }
        if self.dist.is_main:
            self.rows.append(format_row(row, self.columns))
            self._save(wdir, epoch, metrics, improved)  # last.pt (carrying the rows) first: results.csv
            write_results(self.save_dir / "results.csv", self.rows, self.columns)  # never ahead of it
        self._emit("epoch", row=row, improved=improved, images_per_s=n_images / t_train)
        return metrics, n_images, t_train

    def _draw_pictures(self) -> None:
        """results.png (every results.csv column per epoch) and the task's pictures of the last
        validation, in the run folder. A picture that cannot be drawn is a note, never a failed run."""
        from optkit.pictures.curves import plot_results

        try:
            plot_results(self.save_dir / "results.csv", self.save_dir / "results.png")
            if getattr(self, "details", None) is not None:
                self.task.pictures(self.save_dir, self.details, list(self.names))
        except Exception as e:  # matplotlib / Pillow / a full disk: the weights are saved already
            self.notes.append(f"could not draw the run's pictures: {type(e).__name__}: {e}")

    def _stop_here(self, epoch: int) -> bool:
        """--stop-after N: this process has run N epochs and the run is not finished."""
        stop_after = self.cfg.stop_after
        return (
            stop_after is not None
            and epoch + 1 - self.start_epoch >= stop_after
            and epoch + 1 < self.cfg.epochs
        )

    def _train_one_epoch(self, epoch: int) -> tuple[list[float], int]:
        """(mean of each loss part per image over the epoch, images trained on all ranks)."""
        import torch

        from optkit.train.optim import set_schedule

        cfg, device, world = self.cfg, self.device, self.dist.world_size
        torch.manual_seed(cfg.seed + epoch)  # dropout masks: a function of (seed, epoch) only
        self.sampler.set_epoch(epoch)
        self.train_model.train()
        nb = len(self.train_loader)  # the same on every rank: the sampler pads its shards
        warmup = self.warmup  # iterations (_plan_warmup)
        loss_sum, seen = torch.zeros(len(self.task.loss_names), dtype=torch.float64), 0
        self.optimizer.zero_grad(set_to_none=True)
        for i, (images, labels) in enumerate(self.train_loader):
            set_schedule(self.optimizer, cfg, epoch, i, nb, warmup)
            images = images.to(device, non_blocking=True, memory_format=self.memory_format)
            labels = labels.to(device, non_blocking=True)
            step = (i + 1) % self.accumulate == 0 or i + 1 == nb
            # DDP averages gradients over ranks in backward; accumulating micro-batches skip that
            with self._gradient_sync(step), torch.autocast("cuda", enabled=self.amp):
                loss, items = self._loss(images, labels)
                self.scaler.scale(loss / self.accumulate).backward()
            if step:
                self._optimizer_step()
            loss_sum += items.detach().double().cpu() * len(images)
            seen += len(images)
            self.ctrl_c.check()
            self._emit(
                "batch",
                epoch=epoch,
                i=i,
                nb=nb,
                loss=float(loss_sum.sum()) / seen,  # this rank's shard
                seen=seen * world,  # ranks take equal batches
                lr=self.optimizer.param_groups[0]["lr"],
            )
        *loss_sum, seen = distributed.all_sum([*loss_sum.tolist(), seen], self.dist, device)
        return [value / max(seen, 1) for value in loss_sum], int(seen)

    def _loss(self, images, labels):
        """(loss to back-propagate, its parts per image) of one batch (QAT's distillation adds to it:
        optkit.quant.qat)."""
        return loss_parts(self.criterion(self.train_model(images), labels))

    def _gradient_sync(self, step: bool):
        if self.dist.enabled and not step:
            return self.train_model.no_sync()
        return nullcontext()

    def _optimizer_step(self) -> None:
        from optkit.train.optim import clip_gradients

        self.scaler.unscale_(self.optimizer)
        clip_gradients(self.model.parameters(), GRAD_CLIP)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.masks:
            from optkit.stages.prune import apply_masks_

            apply_masks_(self.model, self.masks)
        self.ema.update(self.model)

    def _validate(self) -> dict:
        """Rank 0 validates the EMA model on the whole val split; the other ranks wait for its metrics
        (so early stopping and best.pt decisions agree), which equal a single process's on those weights."""
        metrics = None
        if self.dist.is_main:
            options = {"options": {"details": True}} if self.task.draws_pictures else {}
            metrics = self.task.evaluate(self.ema.ema, self.val_loader, self.device, amp=self.amp, **options)
            self.details = metrics.pop("details", None)  # what the run's pictures draw (_draw_pictures)
        return distributed.broadcast(metrics, self.dist)

    def _interrupted_message(self, wdir: Path, last_epoch: int) -> str:
        if last_epoch < 0:
            return "training interrupted before the first epoch finished; nothing was saved"
        last = wdir / "last.pt"
        return (
            f"training interrupted in epoch {last_epoch + 2}; {last} holds epoch {last_epoch + 1} "
            f"(continue with: optkit train --resume {last})"
        )

    # ---- checkpoints ----------------------------------------------------------------------
    def _save(self, wdir: Path, epoch: int, metrics: dict, improved: bool) -> None:
        last = self._checkpoint(epoch, metrics)
        if improved:  # best.pt deploys the EMA weights and carries no optimizer
            best = self._checkpoint(epoch, metrics, for_deploy=True)
            save_checkpoint(best, wdir / "best.pt")
        save_checkpoint(last, wdir / "last.pt")
        self.saved_epoch = epoch  # only now: Ctrl-C during the write above leaves the previous last.pt

    def _checkpoint(self, epoch: int, metrics: dict, for_deploy: bool = False) -> Checkpoint:
        from optkit.data import IMAGENET_MEAN, IMAGENET_STD

        model = self.ema.ema if for_deploy else self.model
        ckpt = checkpoint_from_model(model, self.names, self.imgsz)
        ckpt.lineage = list(self.lineage)
        ckpt.transforms = list(self.transforms)
        ckpt.epoch = epoch
        ckpt.best_fitness = self.stopper.best_fitness
        ckpt.task = self.task.name
        ckpt.metrics = {**{m.key: metrics[m.key] for m in self.task.metrics}, "loss": metrics["loss"]}
        ckpt.preprocess = dict(self.task.preprocess) or {
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
        }
        if not for_deploy:
            ckpt.ema = state_dict_cpu(self.ema.ema)
            ckpt.updates = self.ema.updates
            ckpt.optimizer = self.optimizer.state_dict()
            ckpt.scaler = self.scaler.state_dict() if self.amp else None
            ckpt.train_args = self.cfg.to_dict()
            ckpt.train_state = {**self.stopper.state(), "results": list(self.rows)}  # optkit.train.results
        ckpt.add_lineage("train", self._args_record(), {**ckpt.metrics, "epoch": epoch + 1})
        return ckpt

    def _args_record(self) -> dict:
        d = self.cfg.to_dict()
        d.update(
            batch_size_used=self.batch_size,
            accumulate=self.accumulate,
            imgsz_used=self.imgsz,
            device_used=str(self.device),
            world_size=self.dist.world_size,
            save_dir=str(self.save_dir),
        )
        return d

    def _emit(self, event: str, **info) -> None:
        if self.progress is not None and self.dist.is_main:
            self.progress(event, **info)


def loss_parts(output):
    """A task loss's result as (loss, detached parts): a scalar loss is its own one part."""
    if isinstance(output, tuple):
        return output
    return output, output.detach().reshape(1)


def _class_layer_keys(model) -> set[str]:
    """State-dict keys of the parameters of the model's class output layers (optkit.models.parts): what
    a new class list re-initialises."""
    from optkit.models.parts import class_layer_names

    modules = dict(model.named_modules())
    names = class_layer_names(model)
    return {f"{name}.{p}" for name in names for p, _ in modules[name].named_parameters(recurse=False)}
