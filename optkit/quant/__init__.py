"""INT8 quantization (README, `optkit ptq-calibrate`): ModelOpt fake-quant modules for PTQ and QAT in
PyTorch, and QDQ ONNX graphs for ONNX Runtime (uint8 activations) and TensorRT (symmetric int8).

Modules: config (what to quantize, plain data), quantizers (ModelOpt: insert, calibrate, replay),
ranges (activation ranges of the float ONNX graph), qdq (the QDQ graph), coverage (what ONNX Runtime runs
in int8), compare, sensitivity, ptq and qat (the library halves of optkit.workflows.ptq and .qat).
"""
