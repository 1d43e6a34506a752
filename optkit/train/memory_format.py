"""The memory layout training runs in: channels-last (NHWC) on the CPU.

oneDNN's CPU convolutions and PyTorch's CPU BatchNorm have channels-last kernels; in NCHW each
convolution reorders its input and output. Measured on this 2-core host, forward + loss + backward per
image, NHWC over NCHW (interleaved rounds, medians): yolo-det-n at 96 px 1.37x, yolo-cls-n at 64 px
1.24x, resnet18 1.13x, mobilenet-v2 1.55x. On CUDA the layout is left alone (what helps there depends
on AMP and the GPU; not measured here).

Checkpoints stay layout-free: `checkpoint.state_dict_cpu` saves contiguous tensors, and a resumed
optimizer's state is copied into its parameters' layout, since a fused AdamW step on tensors of
different strides silently mixes their elements.
"""

from __future__ import annotations


def training_memory_format(device):
    """The layout a model trains in on `device`: channels-last on the CPU, torch's default elsewhere."""
    import torch

    return torch.channels_last if device.type == "cpu" else torch.contiguous_format


def match_parameter_layout(optimizer) -> None:
    """Give each optimizer state tensor shaped like its parameter the parameter's strides (a state
    loaded from a checkpoint arrives contiguous or in the layout it was saved in)."""
    import torch

    for param, state in optimizer.state.items():
        for key, value in state.items():
            if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)
