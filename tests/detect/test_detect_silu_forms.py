"""The SiLU forms of a detector's onnxruntime INT8 export (optkit.quant.silu_form): the quickgelu form keeps
the stem float, and that stem must still saturate the image where the fake-quant model's input quantizer
does (a detector's image quantizer holds 0..1: unclipped, random N(0, 1) inputs failed the parity check,
0.877 of the score scale on the demo detector); `--silu-form auto` must also time a `--dynamic` detector
at its own size (at 1x1 its neck cannot concat the upsampled maps)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from optkit.checkpoint import build_model, load_checkpoint
from optkit.onnxrt import OrtModel
from optkit.quant.qdq import STEM_REASON
from optkit.quant.quantizers import quantizers

IMGSZ = 64  # test-det's own size (tests/detect/conftest.py)


def _stem_range(model) -> tuple[str, float, float]:
    """(stem layer, low, high): what the fake-quant model's int8 image quantizer saturates the image to,
    [-128, 127] * amax / 127."""
    stem = next(name for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d))
    amax = float(quantizers(model)[f"{stem}.input_quantizer"].amax.max())
    return stem, -128 * amax / 127, amax


@pytest.fixture(scope="module")
def quickgelu_file(tmp_path_factory, int8_det):
    """The quickgelu form of int8_det, checked as `optkit export` checks it (random inputs); its report."""
    from optkit.stages.export import ExportConfig, export_checkpoint

    onnx = tmp_path_factory.mktemp("silu-forms") / "quickgelu.onnx"
    config = ExportConfig(int8_target="onnxruntime", silu_form="quickgelu")
    return onnx, export_checkpoint(load_checkpoint(int8_det), onnx, config).as_dict()


def test_quickgelu_float_stem_saturates_the_image_as_the_fake_quant_model(quickgelu_file, int8_det):
    onnx, result = quickgelu_file
    model = build_model(load_checkpoint(int8_det)).eval()
    stem, low, high = _stem_range(model)
    assert result["int8"]["float_layers"].get(stem) == STEM_REASON  # the path under test: a float stem
    x = 3 * torch.randn(2, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(0))
    inside = x.clamp(low, high)
    assert (x != inside).float().mean() > 0.5  # most pixels beyond what the image quantizer holds
    with torch.no_grad():  # the fake-quant model: pixels beyond the quantizer's range count as its ends
        assert torch.equal(model(x), model(inside))
    file = OrtModel(onnx)
    np.testing.assert_array_equal(file(x).numpy(), file(inside).numpy())  # so must the file's float stem


def test_quickgelu_detector_passes_the_check_on_out_of_range_inputs(quickgelu_file):
    """The export's own check (random N(0, 1) inputs, most pixels outside 0..1) on boxes and scores apart."""
    _, result = quickgelu_file
    assert result["int8"]["silu_form"] == "quickgelu"
    assert result["scores_max_rel"] <= result["atol"] and result["boxes_max_rel"] <= result["atol"]


@pytest.mark.slow
def test_auto_silu_form_times_a_dynamic_detector_at_its_size(cli, tmp_path, det_data, int8_det):
    onnx = tmp_path / "auto.onnx"
    r = cli(
        "export",
        int8_det,
        "--int8-target",
        "onnxruntime",
        "--dynamic",
        "--data",
        det_data,
        "-o",
        onnx,
        "--json",
    )
    assert r.code == 0, r.err
    int8 = r.json()["int8"]
    assert set(int8["silu_parity"]) == {"quickgelu", "qlinear"}  # both checked, on random and val images
    assert set(int8["silu_timing_ms"]) == {"quickgelu", "qlinear"}  # both passed, so both were timed
    assert int8["silu_form"] in ("quickgelu", "qlinear") and "paired rounds" in int8["silu_reason"]
    file = OrtModel(onnx)
    for shape in [(1, 3, IMGSZ, IMGSZ), (2, 3, IMGSZ + 32, IMGSZ + 32)]:  # the file runs at any size
        out = file(torch.rand(shape)).numpy()
        assert out.shape[0] == shape[0] and np.isfinite(out).all()
