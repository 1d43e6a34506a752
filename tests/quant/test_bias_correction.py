"""Bias correction (optkit.quant.bias_correction): each quantized layer unbiased on the calibration images."""

from __future__ import annotations

import torch
from test_ptq import _float_ckpt, _ptq


def _float_io(model, batches) -> dict[str, list]:
    """{layer: [(input, output), ...]} of every quantized layer in the float model (quantizers off)."""
    from optkit.quant.quantizers import quantization_off, quantized_layers

    modules = dict(model.named_modules())
    seen = {n: [] for n in quantized_layers(model)}
    hooks = [
        modules[n].register_forward_hook(lambda m, i, o, n=n: seen[n].append((i[0].clone(), o.clone())))
        for n in seen
    ]
    with torch.no_grad(), quantization_off(model):
        for x in batches:
            model(x)
    for h in hooks:
        h.remove()
    return seen


def _mean_error(layer, io) -> torch.Tensor:
    """Per-channel mean of (float output - the layer's fake-quant output on the same float input)."""
    with torch.no_grad():
        diffs = [(out - layer(inp)).movedim(1, 0).flatten(1) for inp, out in io]
    return torch.cat(diffs, 1).mean(1)


def test_corrected_layers_are_unbiased_on_the_calibration_images():
    """Each layer, fed the float model's input, has the float layer's mean output after the correction
    (its bias moved by the mean error it had), where before it was off by that error."""
    from optkit.models import create_model
    from optkit.quant.bias_correction import correct_biases
    from optkit.quant.config import QuantConfig
    from optkit.quant.ptq import calibrate_on, fused_for_quantization
    from optkit.quant.quantizers import insert_quantizers

    torch.manual_seed(0)
    model = create_model("mobilenet-v2", num_classes=3, width_multiple=0.25).eval()  # depthwise convs
    fused, _ = fused_for_quantization(model, 32)
    qmodel = insert_quantizers(fused, QuantConfig(method="max"))
    batches = [torch.rand(8, 3, 32, 32) for _ in range(3)]
    calibrate_on(qmodel, QuantConfig(method="max"), batches)
    modules = dict(qmodel.named_modules())
    io = {n: v for n, v in _float_io(qmodel, batches).items() if v[0][1].dim() == 4}  # the convs
    before = {n: _mean_error(modules[n], v) for n, v in io.items()}
    biases = {n: modules[n].bias.detach().clone() for n in io}
    report = correct_biases(qmodel, batches)
    assert report.layers == len(_float_io(qmodel, batches)) and report.mean_shift > 0
    assert any(e.abs().max() > 1e-4 for e in before.values())  # there was something to correct
    for name, error in before.items():
        moved = modules[name].bias.detach() - biases[name]
        torch.testing.assert_close(moved, error, rtol=1e-3, atol=1e-6)
        after = _mean_error(modules[name], io[name])
        assert after.abs().max() <= 1e-2 * error.abs().max() + 1e-6, name


def test_ptq_option_records_it_and_the_checkpoint_carries_the_biases(tmp_path, tiny_data):
    from optkit.checkpoint import load_checkpoint

    src = _float_ckpt(tmp_path)
    plain = _ptq(src, tiny_data, tmp_path / "plain.pt", method="max")
    corrected = _ptq(src, tiny_data, tmp_path / "bc.pt", method="max", bias_correction=True)
    assert "bias_correction" not in plain and corrected["bias_correction"]["layers"] == 9
    a, b = load_checkpoint(tmp_path / "plain.pt"), load_checkpoint(tmp_path / "bc.pt")
    assert b.transforms[-1]["config"]["bias_correction"] is True
    biases = [k for k in a.model if k.endswith(".bias")]
    assert biases and any(not torch.equal(a.model[k], b.model[k]) for k in biases)
    assert all(torch.equal(a.model[k], b.model[k]) for k in a.model if k.endswith(".weight"))


def test_cli_flag(cli, tmp_path, tiny_data):
    src = _float_ckpt(tmp_path)
    r = cli("ptq-calibrate", src, "--data", tiny_data, "--num-images", "16", "--bias-correction", "--json")
    assert r.code == 0, r.err
    assert r.json()["bias_correction"]["layers"] == 9


def test_a_version_2_entry_without_the_field_still_loads(tmp_path, tiny_data):
    """Checkpoints written before bias_correction existed (quantize transform v2) rebuild unchanged."""
    from optkit.checkpoint import build_model, load_checkpoint

    src = _float_ckpt(tmp_path)
    _ptq(src, tiny_data, tmp_path / "q.pt", method="max")
    raw = torch.load(tmp_path / "q.pt", map_location="cpu", weights_only=True)
    entry = raw["transforms"][-1]
    assert entry["version"] == 3 and entry["config"]["bias_correction"] is False
    entry["version"] = 2
    del entry["config"]["bias_correction"]
    torch.save(raw, tmp_path / "v2.pt")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        new, old = (
            build_model(load_checkpoint(tmp_path / "q.pt")),
            build_model(load_checkpoint(tmp_path / "v2.pt")),
        )
        assert torch.equal(new(x), old(x))
