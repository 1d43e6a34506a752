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
# benchmarks/detect.py judges this run (its IMGSZ, EPOCHS, BATCH): update both together
DET_IMGSZ := 96
DET_EPOCHS := 12
DET_BATCH := 32
# the first 8 val images of the built-in detection set (a .txt list), for `optkit predict --save`
DET_LIST = $(BIN)/python -c "from optkit.data.shapes import builtin_root; \
	print(*sorted((builtin_root('shapes-det') / 'images' / 'val').glob('*.png'))[:8], sep='\n')"
demo: $(STAMP)
	# 1. train the built-in model on the built-in data (generated on first use, then cached)
	$(BIN)/optkit train --model yolo-cls-n --data builtin:shapes --imgsz 64 --epochs 8 --cos-lr --cache \
		--project $(DEMO) --name train --exist-ok
	# 2. what the checkpoint is and how it was made
	$(BIN)/optkit info $(DEMO)/train/weights/best.pt
	# 3. remove 30% of the channels (structured), then the same and fine-tune 1 epoch
	$(BIN)/optkit prune $(DEMO)/train/weights/best.pt --structured --amount 0.3 -o $(DEMO)/pruned.pt
	$(BIN)/optkit prune $(DEMO)/train/weights/best.pt --structured --amount 0.3 \
		--data builtin:shapes --finetune-epochs 1 -o $(DEMO)/finetuned.pt
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
	$(BIN)/optkit qat $(DEMO)/int8.pt --data builtin:shapes --epochs 1 --fraction 0.1 --distill --cache \
		--project $(DEMO) --name qat --exist-ok
	$(BIN)/optkit export $(DEMO)/int8.pt --int8-target onnxruntime --silu-form quickgelu --dynamic \
		-o $(DEMO)/model-int8.onnx
	$(BIN)/optkit export $(DEMO)/qat/weights/best.pt --int8-target onnxruntime --silu-form quickgelu --dynamic \
		-o $(DEMO)/model-qat-int8.onnx
	# 8. a detector: yolo-det-n from scratch on builtin:shapes-det (a YOLO folder with its data.yaml,
	#    generated once), its mAP on val (per class), its boxes drawn on a few val images, ONNX export
	$(BIN)/optkit train --model yolo-det-n --data builtin:shapes-det --imgsz $(DET_IMGSZ) \
		--epochs $(DET_EPOCHS) --batch-size $(DET_BATCH) --cache --project $(DEMO) --name det --exist-ok
	$(BIN)/optkit val $(DEMO)/det/weights/best.pt --data builtin:shapes-det
	$(DET_LIST) > $(DEMO)/det-images.txt
	$(BIN)/optkit predict $(DEMO)/det/weights/best.pt --source $(DEMO)/det-images.txt --save \
		--project $(DEMO) --name predict --exist-ok
	$(BIN)/optkit export $(DEMO)/det/weights/best.pt --dynamic --data builtin:shapes-det -o $(DEMO)/det.onnx
	# 9. the detector through the stages: 30% of its channels removed and 1 epoch of fine-tuning (the
	#    head's outputs keep theirs), BatchNorm folded, INT8 calibrated on 64 images (its post-processing
	#    kept float; float vs INT8 mAP on 50 val images), QAT on a tenth of an epoch distilled from the
	#    float model (head DFL bins and class scores), both INT8 checkpoints exported for ONNX Runtime
	$(BIN)/optkit prune $(DEMO)/det/weights/best.pt --structured --amount 0.3 --data builtin:shapes-det \
		--finetune-epochs 1 -o $(DEMO)/det-pruned.pt
	$(BIN)/optkit fuse $(DEMO)/det/weights/best.pt -o $(DEMO)/det-fused.pt
	$(BIN)/optkit ptq-calibrate $(DEMO)/det-fused.pt --data builtin:shapes-det --num-images 64 \
		--val-images 50 -o $(DEMO)/det-int8.pt
	$(BIN)/optkit qat $(DEMO)/det-int8.pt --data builtin:shapes-det --epochs 1 --fraction 0.05 --cache \
		--project $(DEMO) --name det-qat --exist-ok
	$(BIN)/optkit export $(DEMO)/det-int8.pt --int8-target onnxruntime --silu-form quickgelu --dynamic \
		-o $(DEMO)/det-int8.onnx
	$(BIN)/optkit export $(DEMO)/det-qat/weights/best.pt --int8-target onnxruntime --silu-form quickgelu \
		--dynamic -o $(DEMO)/det-qat-int8.onnx
	# 10. one table comparing every artifact (and an accuracy-vs-latency plot, a panel per task):
	#    classifiers by top-1 at their trained 64 px, the detector by mAP50-95 at its trained size, all
	#    timed at 224 px (at 64 px the classifier is overhead-bound and INT8 cannot show), in 7
	#    interleaved rounds of 5 runs per artifact; speed-ups against the first artifact of each task
	#    (the timed rounds take seconds: the accuracy passes are what this step costs)
	$(BIN)/optkit benchmark $(DEMO)/train/weights/best.pt $(DEMO)/pruned.pt $(DEMO)/finetuned.pt \
		$(DEMO)/fused.pt $(DEMO)/stripped.pt $(DEMO)/int8.pt $(DEMO)/qat/weights/best.pt $(DEMO)/model.onnx \
		$(DEMO)/model-int8.onnx $(DEMO)/model-qat-int8.onnx $(DEMO)/det/weights/best.pt $(DEMO)/det-pruned.pt \
		$(DEMO)/det-fused.pt $(DEMO)/det.onnx $(DEMO)/det-int8.onnx $(DEMO)/det-qat-int8.onnx \
		--data builtin:shapes --data builtin:shapes-det --latency-imgsz 224 --rounds 7 --runs 5 \
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
