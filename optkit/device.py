"""Pick the torch device a command runs on: `cpu`, `0`, `cuda:0`, or empty for "best available"."""

from __future__ import annotations

from optkit.errors import DeviceError


def select_device(spec: str | None = None):
    """Return a torch.device; asking for CUDA where there is none is an error, not a silent fallback."""
    import torch

    spec = (spec or "").strip().lower().replace("cuda:", "")
    if spec in ("", "auto"):
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    ids = [s for s in spec.split(",") if s != ""]
    if not all(s.isdigit() for s in ids):
        raise DeviceError(f"unknown device '{spec}'; use cpu, 0, 0,1 or cuda:0")
    if not torch.cuda.is_available():
        raise DeviceError(f"CUDA device {spec} requested, but CUDA is not available on this machine")
    count = torch.cuda.device_count()
    missing = [s for s in ids if int(s) >= count]
    if missing:
        raise DeviceError(f"CUDA device {','.join(missing)} requested, but this machine has {count} GPU(s)")
    if len(ids) > 1:
        raise DeviceError(
            f"several GPUs ({spec}) need one process each: "
            f"torchrun --nproc_per_node {len(ids)} -m optkit train ..."
        )
    return torch.device(f"cuda:{ids[0]}")
