"""Compact sparse storage: bit-exact round trips, what stays dense, safe loading, and the size it saves."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from optkit.errors import CheckpointError
from optkit.models import create_model
from optkit.sparse import is_packed, pack_bits, pack_state, pack_tensor, unpack_bits, unpack_state
from optkit.stages.prune import PruneConfig, prune_unstructured


def _raw(t: torch.Tensor) -> bytes:
    """The tensor's bytes as stored (its whole storage: the unpacked tensors are fresh, not views)."""
    return bytes(t.untyped_storage())


def _assert_bit_exact(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype
    assert torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))
    assert _raw(a.contiguous()) == _raw(b)


def _sparse(shape, sparsity: float, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(shape, generator=g).to(dtype)
    t[torch.rand(shape, generator=g) < sparsity] = 0
    return t


def _save_load(obj) -> object:
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("shape", [(37, 61), (1001,), (16, 3, 5, 5)])  # 2257 and 1001: not multiples of 8
def test_round_trip_is_bit_exact(shape, sparsity, dtype):
    t = _sparse(shape, sparsity, dtype)
    state = {"w": t}
    packed = pack_state(state, min_sparsity=0.0, min_numel=0)  # pack even when dense
    entry = packed["w"]
    assert is_packed(entry) and entry["shape"] == list(shape) and entry["dtype"] == str(dtype)[6:]
    n_zero = int((t == 0).sum())
    assert entry["values"].numel() == t.numel() - n_zero and entry["bitmask"].numel() == (t.numel() + 7) // 8
    out = unpack_state(_save_load(packed))
    _assert_bit_exact(t, out["w"])
    assert torch.equal(t, out["w"])
    assert state["w"] is t and torch.equal(state["w"], t)  # input left alone
    # with the default threshold (25% zeros) only the sparse ones are packed
    assert is_packed(pack_state(state, min_numel=0)["w"]) == (n_zero >= 0.25 * t.numel())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_negative_zero_nan_and_inf_survive(dtype):
    """-0.0 == 0, but only the +0.0 bit pattern is implicit: -0.0 keeps its sign, NaN its payload."""
    t = _sparse((3, 347), 0.6, dtype, seed=1)
    flat = t.view(-1)
    flat[:5] = -0.0
    flat[5:9] = torch.tensor([float("nan"), float("inf"), -float("inf"), -float("nan")], dtype=dtype)
    entry = pack_tensor(t)
    assert entry["values"].numel() == int(((t != 0) | torch.signbit(t)).sum())
    out = unpack_state(_save_load({"w": entry}))["w"]
    _assert_bit_exact(t, out)
    assert torch.signbit(out.view(-1)[:5]).all()


def test_bitmask_is_numpy_packbits_little_endian():
    mask = torch.rand(8 * 123 + 5, generator=torch.Generator().manual_seed(2)) < 0.4
    bits = pack_bits(mask)
    assert bits.dtype == torch.uint8
    assert np.array_equal(bits.numpy(), np.packbits(mask.numpy(), bitorder="little"))
    assert torch.equal(unpack_bits(bits, mask.numel()), mask)
    t = torch.zeros(10)
    t[[0, 9]] = 1.0
    assert pack_tensor(t)["bitmask"].tolist() == [
        0b00000001,
        0b00000010,
    ]  # element 8*j + i -> bit i of byte j


def test_dense_small_and_non_float_tensors_are_kept_as_they_are():
    dense = _sparse((64, 64), 0.1, torch.float32)  # 10% zeros < 25%
    small = _sparse((30, 30), 0.9, torch.float32)  # 900 < 1024 elements
    ints = torch.zeros(4096, dtype=torch.int64)
    flags = torch.zeros(4096, dtype=torch.bool)
    state = {"dense": dense, "small": small, "ints": ints, "flags": flags, "steps": torch.tensor(7), "n": 3}
    packed = pack_state(state)
    assert all(packed[k] is v for k, v in state.items())
    sparse = _sparse((64, 64), 0.3, torch.float32)
    assert is_packed(pack_state({"s": sparse})["s"])
    assert not is_packed(pack_state({"s": sparse}, min_sparsity=0.5)["s"])
    assert not is_packed(dense) and not is_packed({"a": 1})
    with pytest.raises(TypeError):
        pack_tensor(ints)


def test_keys_order_and_unpacked_values_on_a_state_dict():
    torch.manual_seed(0)
    model, _ = prune_unstructured(create_model("test-tiny", num_classes=3), PruneConfig(0.7))
    state = model.state_dict()
    packed = pack_state(state, min_numel=256)
    assert list(packed) == list(state)
    assert any(is_packed(v) for v in packed.values()) and not all(is_packed(v) for v in packed.values())
    unpacked = unpack_state(_save_load(packed))
    assert list(unpacked) == list(state)
    for key, value in state.items():
        _assert_bit_exact(value, unpacked[key])
    create_model("test-tiny", num_classes=3).load_state_dict(unpacked, strict=True)


def test_damaged_entries_are_refused():
    entry = pack_tensor(_sparse((50, 50), 0.5, torch.float32))
    for key, bad in [
        ("values", entry["values"][:-1]),
        ("values", entry["values"].half()),
        ("bitmask", entry["bitmask"][:-1]),
        ("shape", [50, 51]),
        ("dtype", "load"),
        ("__sparse__", 2),
    ]:
        with pytest.raises(CheckpointError, match="w:"):
            unpack_state({"w": {**entry, key: bad}})


@pytest.mark.parametrize("amount", [0.5, 0.8])
def test_pruned_resnet18_file_is_much_smaller_packed(tmp_path, amount):
    torch.manual_seed(0)
    model, report = prune_unstructured(create_model("resnet18", num_classes=10), PruneConfig(amount))
    state = model.state_dict()
    torch.save(state, tmp_path / "dense.pt")
    packed = pack_state(state)
    torch.save(packed, tmp_path / "packed.pt")
    dense_size, packed_size = (tmp_path / "dense.pt").stat().st_size, (tmp_path / "packed.pt").stat().st_size
    ratio = packed_size / dense_size
    print(
        f"resnet18 at {report.overall:.1%} sparsity: dense {dense_size / 1e6:.2f} MB, "
        f"packed {packed_size / 1e6:.2f} MB ({ratio:.1%} of dense)"
    )
    # the weights that pruning zeroed are ~all of the model, so the file shrinks to ~(1 - amount) + 1/32
    assert ratio <= 0.70
    assert ratio <= (1 - amount) + 1 / 32 + 0.03
    unpacked = unpack_state(torch.load(tmp_path / "packed.pt", weights_only=True))
    assert all(torch.equal(unpacked[k], v) for k, v in state.items())
