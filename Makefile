# The README's commands. Every target creates .venv when it is missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test bench lint clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and alone: the pinned CPU wheel, never a CUDA build
	$(BIN)/pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

DEMO := runs/demo
demo: $(STAMP)
	# 1. train the built-in model on the built-in data (generated on first use, then cached)
	$(BIN)/optkit train --model yolo-cls-n --data builtin:shapes --imgsz 64 --epochs 12 --cos-lr --cache \
		--project $(DEMO) --name train --exist-ok
	# 2. what the checkpoint is and how it was made
	$(BIN)/optkit info $(DEMO)/train/weights/best.pt
	# 3. remove 30% of the channels (structured), then the same and fine-tune 2 epochs
	$(BIN)/optkit prune $(DEMO)/train/weights/best.pt --structured --amount 0.3 -o $(DEMO)/pruned.pt
	$(BIN)/optkit prune $(DEMO)/train/weights/best.pt --structured --amount 0.3 \
		--data builtin:shapes --finetune-epochs 2 -o $(DEMO)/finetuned.pt
	# 4. fold BatchNorm into the convs; 5. strip to fp16 for shipping
	$(BIN)/optkit fuse $(DEMO)/finetuned.pt -o $(DEMO)/fused.pt
	$(BIN)/optkit strip $(DEMO)/fused.pt --half -o $(DEMO)/stripped.pt
	# 6. export to ONNX (parity checked with ONNX Runtime on random and real images); --dynamic: any
	#    batch and input size, so step 8 can time the graphs at 224 px
	$(BIN)/optkit export $(DEMO)/fused.pt --dynamic --data builtin:shapes -o $(DEMO)/model.onnx
	# 7. INT8: calibrate (PTQ, ModelOpt), fine-tune with fake quantization (QAT, distilled from the float
	#    model), export both as uint8-activation QDQ graphs that ONNX Runtime runs in int8 (SiLU as
	#    QuickGelu, the faster form on a quiet CPU: fixed, so the files do not depend on the load)
	$(BIN)/optkit ptq-calibrate $(DEMO)/fused.pt --data builtin:shapes --val-images 400 -o $(DEMO)/int8.pt
	$(BIN)/optkit qat $(DEMO)/int8.pt --data builtin:shapes --epochs 1 --fraction 0.5 --distill --cache \
		--project $(DEMO) --name qat --exist-ok
	$(BIN)/optkit export $(DEMO)/int8.pt --int8-target onnxruntime --silu-form quickgelu --dynamic \
		-o $(DEMO)/model-int8.onnx
	$(BIN)/optkit export $(DEMO)/qat/weights/best.pt --int8-target onnxruntime --silu-form quickgelu --dynamic \
		-o $(DEMO)/model-qat-int8.onnx
	# 8. one table comparing every stage's artifact (and an accuracy-vs-latency plot): top-1 at the
	#    trained 64 px, latency at 224 px (at 64 px this model is overhead-bound and INT8 cannot show),
	#    in 7 interleaved rounds of 5 runs per artifact
	$(BIN)/optkit benchmark $(DEMO)/train/weights/best.pt $(DEMO)/pruned.pt $(DEMO)/finetuned.pt \
		$(DEMO)/fused.pt $(DEMO)/stripped.pt $(DEMO)/int8.pt $(DEMO)/qat/weights/best.pt $(DEMO)/model.onnx \
		$(DEMO)/model-int8.onnx $(DEMO)/model-qat-int8.onnx --data builtin:shapes \
		--latency-imgsz 224 --rounds 7 --runs 5 \
		--plot $(DEMO)/benchmark.png --csv $(DEMO)/benchmark.csv

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 tests

bench: $(STAMP)
	$(BIN)/python benchmarks/train.py
	$(BIN)/python benchmarks/prune.py
	$(BIN)/python benchmarks/profile_overhead.py
	$(BIN)/python benchmarks/quant.py

lint: $(STAMP)
	$(BIN)/ruff check optkit tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
