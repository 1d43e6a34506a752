"""Weight initialisation shared by the torchvision-derived families (ResNet, MobileNetV2).

YOLO models need nothing here: torch's default init plus the BatchNorm settings in `blocks.Conv`
is what YOLOv5 uses.
"""

from __future__ import annotations

from torch import nn


def init_torchvision_style(model: nn.Module) -> None:
    """Kaiming-normal (fan_out) convs with zero bias; BN gamma 1, beta 0 and torch's BN defaults
    (eps 1e-5, momentum 0.1) instead of YOLO's, as torchvision trains these networks."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            m.eps, m.momentum = 1e-5, 0.1
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def randomize_bn(model: nn.Module, seed: int = 1, bias: bool = False) -> nn.Module:
    """Random running statistics and scales (and shifts, with `bias`) for every BatchNorm2d; the model in
    eval mode. For random-init models that are exported or quantized (tests, benchmarks): with identity
    statistics their outputs and activations sit near zero (random-init mobilenet-v2 outputs exact zeros),
    so parity checks relative to the output scale mean little."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                if bias:
                    m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)
    return model.eval()
