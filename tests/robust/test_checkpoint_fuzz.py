"""Property-based fuzzing of the checkpoint loader (hypothesis).

Whatever bytes a `.pt` file holds, `load_checkpoint` + `build_model` either succeed or raise an
OptkitError (a one-line message the CLI can print) — never another exception, never a hang, never a
huge allocation. Inputs: random bytes, real checkpoints truncated at random offsets or with random
bytes overwritten, and real checkpoints whose fields are replaced by wrong types, missing keys,
tensors of the wrong shape or dtype, absurd sizes and deeply nested lists.

The `ci` profile (below; the default) is derandomized with a fixed number of examples, so every run
tries the same examples; HYPOTHESIS_PROFILE=fuzz-long explores more, with fresh random examples.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import os
import signal
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from optkit.checkpoint import build_model, checkpoint_from_model, derived_checkpoint, save_checkpoint
from optkit.errors import OptkitError

pytestmark = pytest.mark.slow  # about 20 s on one core

# 150 examples per fuzz test, 4 tests: 600 examples in about 20 s on one core
settings.register_profile(
    "ci", derandomize=True, database=None, max_examples=150, deadline=timedelta(seconds=5), print_blob=True
)
settings.register_profile("fuzz-long", max_examples=3000, deadline=timedelta(seconds=10), print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

HANG_S = 20  # seconds: an example still running after this is a hang (the hypothesis deadline is 5 s)


class Hang(Exception):
    pass


@contextlib.contextmanager
def watchdog(seconds: int):
    """Raise Hang in this (main) thread if the block runs longer than `seconds`."""

    def fire(signum, frame):
        raise Hang(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def load_and_build(path: Path) -> str:
    """'ok' or 'refused: <message>'; any other exception propagates and fails the property."""
    from optkit.checkpoint import load_checkpoint

    with watchdog(HANG_S):
        try:
            ckpt = load_checkpoint(path)
            for weights in ("inference", "model"):
                build_model(ckpt, weights=weights)
        except OptkitError as e:
            message = str(e)
            assert message and "\n" not in message.strip(), message  # one line for the CLI
            return f"refused: {message}"
    return "ok"


# ---- real checkpoints to start from -------------------------------------------------------------


NAMES = ("sparse-fused", "structured", "train")


@functools.cache
def real() -> dict[str, bytes]:
    """The bytes of three real checkpoints: a training one (EMA, optimizer), an unstructured-pruned +
    fused one (sparse-packed weights, two transforms) and a structured-pruned one (a pruning history
    replayed at load)."""
    from optkit.models import create_model
    from optkit.stages.fuse import FuseConfig, fuse
    from optkit.stages.prune import PruneConfig, prune_unstructured, sparsity_transform
    from optkit.stages.prune_structured import StructuredPruneConfig, prune_structured

    torch.manual_seed(0)
    model = create_model("test-tiny", num_classes=3)
    train = checkpoint_from_model(model, ["a", "b", "c"], 32)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    train.ema, train.optimizer, train.epoch, train.updates = train.model, optimizer.state_dict(), 3, 7
    train.add_lineage("train", {"epochs": 4}, {"top1": 0.5})

    pruned, report = prune_unstructured(model.eval(), PruneConfig(amount=0.6))
    sparse = derived_checkpoint(train, pruned, sparsity_transform(report))
    fused, fuse_report = fuse(pruned, FuseConfig(imgsz=32))
    sparse_fused = derived_checkpoint(sparse, fused, {"kind": "fuse", "fused": fuse_report.fused})
    small, entry = prune_structured(model.eval(), StructuredPruneConfig(amount=0.5, imgsz=32))
    structured = derived_checkpoint(train, small, entry)

    out = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, ckpt in zip(NAMES, (sparse_fused, structured, train), strict=True):
            out[name] = save_checkpoint(ckpt, Path(folder) / f"{name}.pt").read_bytes()
    return out


@functools.cache
def raw_dicts() -> dict[str, dict]:
    return {name: torch.load(io.BytesIO(data), weights_only=True) for name, data in real().items()}


@pytest.fixture(scope="module")
def fuzz_file(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "fuzz.pt"


def test_the_real_checkpoints_load(fuzz_file):
    """The starting points are valid, so mutations of them probe the loader's checks."""
    for data in real().values():
        fuzz_file.write_bytes(data)
        assert load_and_build(fuzz_file) == "ok"


# ---- bytes ----------------------------------------------------------------------------------------

ZIP_MAGIC = b"PK\x03\x04"


@given(data=st.one_of(st.binary(max_size=4096), st.binary(max_size=4096).map(lambda b: ZIP_MAGIC + b)))
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_random_bytes(fuzz_file, data):
    fuzz_file.write_bytes(data)
    assert load_and_build(fuzz_file).startswith("refused")


@given(name=st.sampled_from(NAMES), cut=st.floats(min_value=0.0, max_value=1.0, exclude_max=True))
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_truncated_real_checkpoints(fuzz_file, name, cut):
    data = real()[name]
    fuzz_file.write_bytes(data[: int(len(data) * cut)])
    assert load_and_build(fuzz_file).startswith("refused")  # a prefix is never a whole checkpoint


@given(
    name=st.sampled_from(NAMES),
    edits=st.lists(
        st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=8
    ),
)
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_real_checkpoints_with_overwritten_bytes(fuzz_file, name, edits):
    data = bytearray(real()[name])
    for where, value in edits:
        data[int(len(data) * where)] = value
    fuzz_file.write_bytes(bytes(data))
    note(load_and_build(fuzz_file))  # may load (e.g. a changed weight value): either outcome is fine


# ---- fields ---------------------------------------------------------------------------------------

DTYPES = [torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int8, torch.uint8, torch.bool]
DTYPES += [torch.complex64]

plain = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=16,
)
small_tensor = st.builds(
    lambda shape, dtype: torch.zeros(shape, dtype=dtype),
    st.lists(st.integers(0, 4), max_size=4),
    st.sampled_from([torch.float32, *DTYPES]),
)


def _deep_list(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


absurd_int = st.sampled_from([-(2**63), -1, 0, 1, 31, 33, 4097, 10**6, 2**31, 2**63 - 1])
weird = st.one_of(
    plain,
    small_tensor,
    absurd_int,
    st.sampled_from([float("inf"), -0.0, 1e308]),
    st.integers(1, 800).map(_deep_list),  # deeply nested lists
    st.integers(0, 200_000).map(lambda n: list(range(n))),  # long lists
)


def _tensor_variant(t: torch.Tensor, how: str, dtype: torch.dtype) -> object:
    if how == "shape":
        return torch.zeros(*(s + 1 for s in t.shape), 1) if t.ndim else torch.zeros(2)
    if how == "dtype":
        return t.to(dtype)
    if how == "empty":
        return torch.zeros(0)
    if how == "scalar":
        return torch.tensor(1.5)
    return {"__sparse__": 1, "shape": list(t.shape), "dtype": "float32", "bitmask": t, "values": t}


class Case:
    """A mutated checkpoint dict that hypothesis reports by what was changed, not by every tensor."""

    def __init__(self, description: str, raw: dict):
        self.description, self.raw = description, raw

    def __repr__(self) -> str:
        return self.description


@st.composite
def mutated_raw(draw) -> Case:
    """A real checkpoint's dict with 1-3 fields changed: replaced, deleted, or a tensor reshaped/recast."""
    name = draw(st.sampled_from(NAMES))
    raw = copy.deepcopy(raw_dicts()[name])
    steps = []
    for _ in range(draw(st.integers(1, 3))):
        target = draw(
            st.sampled_from(
                ["top", "arch", "kwargs", "tensor", "names", "imgsz", "transform", "sparse", "optimizer"]
            )
        )
        if target == "top":
            key = draw(st.sampled_from(sorted(raw) or ["model"]))
            if draw(st.booleans()):
                raw.pop(key, None)
                steps.append(f"del {key}")
            else:
                raw[key] = draw(weird)
                steps.append(f"{key} = weird")
        elif target == "arch" and isinstance(raw.get("arch"), dict):
            key = draw(st.sampled_from(["name", "kwargs", "extra"]))
            raw["arch"][key] = draw(weird | st.sampled_from(["test-resnet", "yolo-cls-n", "nope", ""]))
            steps.append(f"arch.{key}")
        elif target == "kwargs" and isinstance(raw.get("arch"), dict):
            raw["arch"]["kwargs"] = draw(
                st.dictionaries(
                    st.sampled_from(["act", "dropout", "width", "num_classes"]), weird, max_size=2
                )
            )
            steps.append("arch.kwargs")
        elif target == "tensor" and isinstance(raw.get("model"), dict) and raw["model"]:
            part = draw(st.sampled_from(["model", "ema"]))
            state = raw.get(part) if isinstance(raw.get(part), dict) else raw["model"]
            key = draw(st.sampled_from(sorted(state)))
            value = state[key]
            if isinstance(value, torch.Tensor):
                how = draw(st.sampled_from(["shape", "dtype", "empty", "scalar", "packed"]))
                state[key] = _tensor_variant(value, how, draw(st.sampled_from(DTYPES)))
            else:
                state[key] = draw(weird)
                how = "weird"
            steps.append(f"{part}[{key}] {how}")
        elif target == "names":
            raw["names"] = draw(
                st.lists(st.text(max_size=4) | st.integers(), min_size=0, max_size=6)
                | st.integers(0, 300_000).map(lambda n: [f"c{i}" for i in range(n)])
                | weird
            )
            steps.append("names")
        elif target == "imgsz":
            raw["imgsz"] = draw(absurd_int | weird)
            steps.append(f"imgsz = {raw['imgsz']!r:.40}")
        elif target == "transform":
            entry = draw(
                st.fixed_dictionaries(
                    {"kind": st.sampled_from(["fuse", "prune-structured", "sparsity", "nope"]) | weird},
                    optional={
                        "history": weird,
                        "imgsz": absurd_int | weird,
                        "fused": weird,
                        "params": weird | st.just(["model.0.conv.weight"]),
                        "version": absurd_int | weird,  # optkit.transforms: none = 1, newer refused
                    },
                )
            )
            transforms = raw.get("transforms") if isinstance(raw.get("transforms"), list) else []
            if transforms and draw(st.booleans()):  # change a field of an existing entry
                old = transforms[draw(st.integers(0, len(transforms) - 1))]
                if isinstance(old, dict):
                    old.update({k: v for k, v in entry.items() if k != "kind"})
            else:
                transforms.append(entry)
            raw["transforms"] = transforms
            steps.append(f"transform {entry.get('kind')!r:.30}")
        elif target == "sparse":
            packed = [
                (part, k)
                for part in ("model", "ema")
                if isinstance(raw.get(part), dict)
                for k, v in raw[part].items()
                if isinstance(v, dict) and "__sparse__" in v
            ]
            if packed:
                part, k = draw(st.sampled_from(packed))
                field_name = draw(st.sampled_from(["__sparse__", "shape", "dtype", "bitmask", "values"]))
                raw[part][k][field_name] = draw(
                    weird | st.sampled_from([[10**6, 10**6, 10**6], [2**62], "int64", "complex64"])
                )
                steps.append(f"{part}[{k}].{field_name}")
        elif target == "optimizer":
            raw["optimizer"] = draw(weird | st.just({"state": {0: {"momentum_buffer": torch.zeros(3)}}}))
            steps.append("optimizer")
    return Case(f"{name}: {'; '.join(steps)}", raw)


@given(case=mutated_raw())
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_real_checkpoints_with_mutated_fields(fuzz_file, case):
    with watchdog(HANG_S):
        torch.save(case.raw, fuzz_file)
    note(load_and_build(fuzz_file))
