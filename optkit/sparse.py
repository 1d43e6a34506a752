"""Compact storage of sparse tensors inside optkit checkpoints.

An unstructured-pruned state_dict is mostly zeros, which `torch.save` stores as plain bytes.
`pack_state` replaces each tensor that is sparse enough by a small dict of plain types (so the file
still loads with `torch.load(weights_only=True)`):

    {"__sparse__": 1,              # marker and format version
     "shape": [64, 3, 7, 7],       # the tensor's shape
     "dtype": "float32",           # the tensor's dtype, without "torch."
     "bitmask": uint8 tensor,      # ceil(numel / 8) bytes; bit i of byte j is element 8*j + i of the
                                   #   flattened (row-major) tensor: 1 = stored in `values`, 0 = +0.0
                                   #   (numpy.packbits(..., bitorder="little") layout)
     "values": tensor}             # the stored elements in row-major order, same dtype

The bitmask costs 1 bit per element (1/32 of an fp32 tensor), so a 50%-sparse fp32 tensor shrinks to ~53%.

Bit-exactness: only the +0.0 bit pattern counts as an implicit zero. -0.0 compares equal to 0, but it is
stored in `values` with its sign, as are NaNs with their payloads, so `unpack_state(pack_state(s))`
reproduces every tensor byte for byte. -0.0 is rare in pruned weights (pruning writes +0.0), so keeping
it costs nothing in practice and saves callers from ever wondering whether a round trip is lossless.

torch is imported inside the functions (docs/architecture.md, Heavy imports), so `optkit.checkpoint` can
import this module freely.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from optkit.errors import CheckpointError

if TYPE_CHECKING:
    import torch

MARKER = "__sparse__"
VERSION = 1
_FLOAT_NAMES = ("float16", "bfloat16", "float32", "float64")  # the dtypes that get packed


def _float_dtype(name: Any) -> torch.dtype | None:
    """The torch dtype called `name` if it is one we pack, else None (never getattr on arbitrary names)."""
    import torch

    return getattr(torch, name) if name in _FLOAT_NAMES else None


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _stored(flat: torch.Tensor) -> torch.Tensor:
    """Bool mask of the elements that are not the +0.0 bit pattern (-0.0 and NaN are stored)."""
    import torch

    return (flat != 0) | torch.signbit(flat)


def _bit_weights(device: torch.device) -> torch.Tensor:
    import torch

    return torch.arange(8, dtype=torch.uint8, device=device)  # shift for element i of each group of 8


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """A bool tensor, flattened, as uint8: 8 per byte, little-endian bit order (numpy.packbits "little")."""
    import torch

    b = mask.reshape(-1).to(torch.uint8)
    pad = -b.numel() % 8
    if pad:
        b = torch.cat([b, b.new_zeros(pad)])
    return (b.view(-1, 8) << _bit_weights(b.device)).sum(1, dtype=torch.uint8)


def unpack_bits(bits: torch.Tensor, numel: int) -> torch.Tensor:
    """Inverse of `pack_bits`: the first `numel` bits as a flat bool tensor."""
    return ((bits.reshape(-1, 1) >> _bit_weights(bits.device)) & 1).view(-1)[:numel].bool()


def _packed_or_same(t: Any, min_sparsity: float, min_numel: int) -> Any:
    """`t` as a packed entry if it is a big enough, sparse enough floating tensor; otherwise `t` itself."""
    import torch

    if (
        not isinstance(t, torch.Tensor)
        or t.layout != torch.strided
        or _dtype_name(t.dtype) not in _FLOAT_NAMES
    ):
        return t
    if t.numel() < max(min_numel, 1):
        return t
    flat = t.detach().reshape(-1)
    mask = _stored(flat)
    zeros = flat.numel() - int(mask.sum())
    if zeros < min_sparsity * flat.numel():
        return t
    return {
        MARKER: VERSION,
        "shape": list(t.shape),
        "dtype": _dtype_name(t.dtype),
        "bitmask": pack_bits(mask),
        "values": flat[mask],  # boolean indexing copies: a fresh tensor, not a view of `t`'s storage
    }


def pack_tensor(t: torch.Tensor) -> dict:
    """One floating tensor as a packed entry (see the module docstring), however dense it is."""
    entry = _packed_or_same(t, min_sparsity=0.0, min_numel=0)
    if not is_packed(entry):
        raise TypeError(f"only non-empty floating tensors can be packed (got {getattr(t, 'dtype', type(t))})")
    return entry


def unpack_tensor(entry: dict, name: str = "tensor") -> torch.Tensor:
    """A packed entry back to the exact tensor it was made from. Raises CheckpointError if it is damaged."""
    import torch

    marker = entry.get(MARKER)  # checked as an int first: `!=` on a tensor would compare elementwise
    if type(marker) is not int or marker != VERSION:
        raise CheckpointError(f"{name}: unknown sparse tensor format ({type(marker).__name__} marker)")
    shape, dtype = entry.get("shape"), _float_dtype(entry.get("dtype"))
    bits, values = entry.get("bitmask"), entry.get("values")
    if (
        not isinstance(shape, list)
        or not all(isinstance(s, int) and s >= 0 for s in shape)
        or dtype is None
        or not isinstance(bits, torch.Tensor)
        or not isinstance(values, torch.Tensor)
    ):
        raise CheckpointError(f"{name}: damaged sparse tensor (bad shape, dtype, bitmask or values)")
    numel = math.prod(shape)
    if bits.dtype != torch.uint8 or bits.numel() != (numel + 7) // 8 or values.dtype != dtype:
        raise CheckpointError(
            f"{name}: damaged sparse tensor (bitmask or values do not fit its shape and dtype)"
        )
    mask = unpack_bits(bits, numel).to(values.device)
    values = values.reshape(-1)
    n_set = int(mask.sum())
    if n_set != values.numel():
        raise CheckpointError(f"{name}: damaged sparse tensor ({values.numel()} values for {n_set} set bits)")
    out = torch.zeros(numel, dtype=dtype, device=values.device)  # the implicit elements are +0.0
    out.masked_scatter_(mask, values)  # fills the set positions with `values`, in order
    return out.view(shape)


def is_packed(value: Any) -> bool:
    """True for an entry made by `pack_state` / `pack_tensor`."""
    return isinstance(value, dict) and MARKER in value


def pack_state(state: dict[str, torch.Tensor], min_sparsity: float = 0.25, min_numel: int = 1024) -> dict:
    """A new dict in which floating tensors with >= `min_numel` elements, at least `min_sparsity` of them
    +0.0, are packed entries; every other value is kept as is (the same object). `state` is not modified.
    """
    return {k: _packed_or_same(v, min_sparsity, min_numel) for k, v in state.items()}


def unpack_state(packed: dict) -> dict[str, torch.Tensor]:
    """Inverse of `pack_state`: a new dict with each packed entry turned back into its tensor, bit for bit."""
    return {k: unpack_tensor(v, k) if is_packed(v) else v for k, v in packed.items()}
