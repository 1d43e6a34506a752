"""Multi-process data parallel training under `torchrun`: who this process is, its device, and the
process group's lifetime.

torchrun starts one process per device and describes each through the environment (RANK, WORLD_SIZE,
LOCAL_RANK, LOCAL_WORLD_SIZE). `from_env()` reads it when a command starts, never at import time.
gloo runs on CPU, nccl on CUDA; rank 0 alone writes files and prints.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from optkit.errors import ConfigError, DeviceError
from optkit.limits import ConfigFieldsError, FieldsError

FIELDS = ("device", "batch_size", "sync_bn", "nproc_per_node")  # what the messages name (a flow: its flags)


class ProcessDeviceError(FieldsError, DeviceError):
    """The GPUs asked for do not match the torchrun processes on this node; the message names the fields
    `device` and torchrun's `nproc_per_node`, and the train flow names the flags."""

    def __init__(self, template: str, **values):
        super().__init__(template, FIELDS, **values)


@dataclass(frozen=True)
class DistContext:
    rank: int = 0  # global rank: 0 .. world_size-1
    world_size: int = 1  # processes over all nodes
    local_rank: int = 0  # rank on this node = the GPU index it takes
    local_world_size: int = 1  # processes on this node

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = DistContext()


def from_env(environ: Mapping[str, str] | None = None) -> DistContext:
    """The torchrun variables of this process, or a single process when WORLD_SIZE is unset (or 1)."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return SINGLE
    try:
        world = int(env["WORLD_SIZE"])
        rank, local_rank = int(env.get("RANK", "0")), int(env.get("LOCAL_RANK", "0"))
        local_world = int(env.get("LOCAL_WORLD_SIZE", str(world)))
    except ValueError:
        raise ConfigError(
            "RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE must be integers (they are set by torchrun)"
        ) from None
    if world < 1 or not 0 <= rank < world or not 0 <= local_rank < local_world:
        raise ConfigError(f"inconsistent torchrun environment: RANK={rank} WORLD_SIZE={world}")
    return DistContext(rank, world, local_rank, local_world)


def rank_device(spec: str | None, ctx: DistContext):
    """The device of this rank. Single process: `select_device(spec)`. Under torchrun: cpu for `cpu`
    (or when there is no CUDA and none was asked for); cuda:LOCAL_RANK for an empty spec; with a GPU
    list (`--device 2,3`) the LOCAL_RANK-th entry, one GPU per process on each node."""
    import torch

    from optkit.device import select_device

    if not ctx.enabled:
        return select_device(spec)
    spec = (spec or "").strip().lower().replace("cuda:", "")
    if spec in ("", "auto"):
        if not torch.cuda.is_available():
            return torch.device("cpu")
        spec = str(ctx.local_rank)
        if ctx.local_world_size > torch.cuda.device_count():
            raise ProcessDeviceError(
                "{processes} processes on this node but {gpus} GPU(s); use {nproc_per_node} <= the GPU "
                "count, or {device} cpu",
                processes=ctx.local_world_size,
                gpus=torch.cuda.device_count(),
            )
        return select_device(spec)
    if spec == "cpu":
        return select_device(spec)
    ids = spec.split(",")
    if len(ids) != ctx.local_world_size:
        raise ProcessDeviceError(
            "{device} {spec} names {gpus} GPU(s) for {processes} processes on this node; give one GPU per "
            "process (torchrun {nproc_per_node} N with {device} of N ids)",
            spec=spec,
            gpus=len(ids),
            processes=ctx.local_world_size,
        )
    return select_device(ids[ctx.local_rank])


def check_options(ctx: DistContext, batch_size: int, sync_bn: bool, device) -> None:
    """Refuse what cannot run with this many processes, before any process group exists."""
    if sync_bn and device.type != "cuda":
        raise ConfigFieldsError(
            "{sync_bn} needs CUDA (torch's SyncBatchNorm runs only on GPUs with nccl), not {kind}",
            FIELDS,
            kind=device.type,
        )
    if ctx.enabled and batch_size != -1 and batch_size % ctx.world_size:
        raise ConfigFieldsError(
            "{batch_size} {batch} is the global batch and must be divisible by the {world} processes (each "
            "takes batch/{world})",
            FIELDS,
            batch=batch_size,
            world=ctx.world_size,
        )


_GROUP_STARTED = False  # whether this process has joined a process group (see end_process)


def end_process(code: int) -> int:
    """Return `code` for sys.exit, except in a process that joined a process group: there flush the
    output and leave at once with os._exit(code), skipping the interpreter's shutdown.

    Why: DistributedDataParallel keeps gloo's process group, and so its worker threads, alive past
    destroy_process_group (torch 2.13: the threads outlive the deleted DDP module). A worker that drops
    its last finished collective while Python shuts down takes the GIL of a dying interpreter:
    std::terminate, SIGABRT, and torchrun reports the whole run as failed after it succeeded (seen in
    1 of ~50 two-process runs on a loaded machine). Every file was closed by then (writes are atomic),
    so nothing is lost by not running the shutdown."""
    if not _GROUP_STARTED:
        return code
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


@contextmanager
def process_group(ctx: DistContext, device) -> Iterator[None]:
    """Init the default process group (nccl on CUDA, gloo on CPU) for the body; destroyed afterwards,
    also when the body raises. Nothing happens for a single process."""
    if not ctx.enabled:
        yield
        return
    import torch
    import torch.distributed as dist

    if device.type == "cuda":
        torch.cuda.set_device(device)  # before init: nccl and object collectives use the current device
    dist.init_process_group(
        "nccl" if device.type == "cuda" else "gloo", rank=ctx.rank, world_size=ctx.world_size
    )
    global _GROUP_STARTED
    _GROUP_STARTED = True
    try:
        yield
    finally:
        dist.destroy_process_group()


def wrap_model(model, ctx: DistContext, device, sync_bn: bool):
    """(module to train, the same module unwrapped). With several processes: DistributedDataParallel,
    with BatchNorm converted to SyncBatchNorm first when asked. The unwrapped module is what is saved,
    averaged (EMA) and validated; the parameters are shared, so either sees the same weights."""
    if not ctx.enabled:
        return model, model
    import torch
    from torch.nn.parallel import DistributedDataParallel

    if sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, output_device=ids[0] if ids else None), model


def broadcast(obj, ctx: DistContext):
    """Rank 0's `obj` (picklable) on every rank."""
    if not ctx.enabled:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_min(value: int, ctx: DistContext) -> int:
    if not ctx.enabled:
        return value
    import torch.distributed as dist

    values = [None] * ctx.world_size
    dist.all_gather_object(values, value)
    return min(values)


def all_sum(values: list[float], ctx: DistContext, device) -> list[float]:
    """Element-wise sum over ranks (float64)."""
    if not ctx.enabled:
        return list(values)
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def peer_failed(e: BaseException) -> bool:
    """Whether a collective failed because another process went away (gloo: "Connection closed by
    peer"; torch's DistError family), i.e. the error to report is that process's, not this one."""
    import torch.distributed as dist

    text = str(e)
    return isinstance(e, dist.DistError) or any(
        phrase in text for phrase in ("Connection closed by peer", "Connection reset by peer", "Broken pipe")
    )
