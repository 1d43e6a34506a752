"""`optkit convert` on files Ultralytics itself writes (issue 15, part 8): a manual check, outside pytest.

Ultralytics is AGPL: it runs only in its own venv (benchmarks/.peer-venv, built by benchmarks/detect.py),
as separate processes; optkit never imports it. optkit's source is put on that venv's PYTHONPATH to read
the pickled files there (their classes import only there). Steps:

(a) scales: `yolov8{n,m,x}.yaml` built by Ultralytics with 80 classes (random weights, nothing downloaded),
    saved with its own `YOLO.save`, converted by `optkit convert --trust` (cap 1024 / 768 / 512 channels:
    the n / m / x scales read from the tensors), then both models' raw outputs [B, 4 + nc, N] on the same
    images at 640 px: max |Δ| / max |output| (the target: <= 1e-4).
(b) trained: Ultralytics' own yolov8n (`DetectionModel("yolov8n.yaml")`) is given trained weights, those of an
    optkit yolo-det-n checkpoint trained on builtin:shapes-det (--weights; Ultralytics' trainer on this
    shared CPU took 4-6 minutes per epoch and learnt nothing in 2), and saved with Ultralytics' `YOLO.save`
    (`train_args.imgsz` set to the checkpoint's size); that file is converted back, raw outputs compared
    as in (a) at 640 px and at the training size; then mAP on the whole val split: `optkit val
    yolov8n.pt --trust` (peer venv) against `optkit val converted.pt` (optkit's own venv: no Ultralytics,
    no --trust) and the source checkpoint.

Usage: .venv/bin/python benchmarks/convert_yolov8.py --weights runs/train/exp/weights/best.pt
       [--threads 2] [--scales n,m,x]
Writes results/convert_yolov8.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import detect as peer  # noqa: E402  (benchmarks/detect.py: the peer venv and its environment)

REPO = peer.REPO
RTOL = 1e-4  # max |Δ| allowed, as a fraction of the output scale (issue 15, "Must show")

# Runs in the peer venv. argv[1]: JSON {"scales": [...], "out": folder, "threads": n}: each yolov8<s>.yaml
# with 80 classes, saved by Ultralytics' own YOLO.save.
PEER_SAVE = r"""
import json, sys
import torch
from ultralytics import YOLO
spec = json.loads(open(sys.argv[1]).read())
torch.set_num_threads(spec["threads"])
torch.manual_seed(0)
for scale in spec["scales"]:
    YOLO(f"yolov8{scale}.yaml").save(f"{spec['out']}/yolov8{scale}.pt")
    print(f"[peer] saved yolov8{scale}.pt", flush=True)
"""

# Runs in the peer venv with optkit on PYTHONPATH. argv[1]: JSON {"pairs": [[ultralytics .pt, optkit .pt]],
# "images": [paths], "sizes": [px], "threads": n, "out": json}: raw eval outputs of both, compared.
PEER_COMPARE = r"""
import json, sys
import numpy as np
import torch
from PIL import Image
from optkit.checkpoint import build_model, load_checkpoint
spec = json.loads(open(sys.argv[1]).read())
torch.set_num_threads(spec["threads"])
pixels = [torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1).float() / 255
          for p in spec["images"]]
rows = []
for theirs_path, ours_path in spec["pairs"]:
    raw = torch.load(theirs_path, map_location="cpu", weights_only=False)
    theirs = (raw["ema"] if raw.get("ema") is not None else raw["model"]).float().eval()
    ours = build_model(load_checkpoint(ours_path)).eval()
    for size in spec["sizes"]:
        x = torch.stack([torch.nn.functional.interpolate(p[None], size=(size, size), mode="bilinear",
                                                         align_corners=False)[0] for p in pixels])
        with torch.no_grad():
            a = theirs(x)
            a = a[0] if isinstance(a, (tuple, list)) else a
            b = ours(x)
        delta = (a - b).abs()
        rows.append({"file": theirs_path, "imgsz": size, "images": len(x), "shape": list(a.shape),
                     "max_abs": float(delta.max()), "scale": float(a.abs().max()),
                     "max_rel": float(delta.max() / a.abs().max()),
                     "max_abs_scores": float(delta[:, 4:].max())})
        print(f"[peer] {theirs_path} at {size} px: max |d| {rows[-1]['max_abs']:.3g} "
              f"({rows[-1]['max_rel']:.3g} of {rows[-1]['scale']:.4g})", flush=True)
open(spec["out"], "w").write(json.dumps(rows))
"""


# Runs in the peer venv with optkit on PYTHONPATH. argv[1]: JSON {"weights": optkit .pt, "out": .pt}:
# Ultralytics' yolov8n with the checkpoint's weights (head box/cls -> cv2/cv3; its own DFL bins), saved
# by YOLO.save.
PEER_FROM_OPTKIT = r"""
import json, sys
import torch
from ultralytics import YOLO
from ultralytics.nn.tasks import DetectionModel
from optkit.checkpoint import build_model, load_checkpoint
spec = json.loads(open(sys.argv[1]).read())
ckpt = load_checkpoint(spec["weights"])
ours = build_model(ckpt).state_dict()
model = DetectionModel("yolov8n.yaml", nc=len(ckpt.names), verbose=False)
state = {k.replace("model.22.box.", "model.22.cv2.").replace("model.22.cls.", "model.22.cv3."): v
         for k, v in ours.items()}
state["model.22.dfl.conv.weight"] = model.state_dict()["model.22.dfl.conv.weight"]
model.load_state_dict(state, strict=True)
model.names = dict(enumerate(ckpt.names))
wrapper = YOLO("yolov8n.yaml")
wrapper.model = model
wrapper.ckpt = {"train_args": {"task": "detect", "imgsz": ckpt.imgsz, "model": "yolov8n.yaml"}}
wrapper.save(spec["out"])
print(f"[peer] saved {spec['out']} ({len(ckpt.names)} classes, imgsz {ckpt.imgsz})", flush=True)
"""


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", help="(b): an optkit yolo-det-n checkpoint trained on builtin:shapes-det")
    p.add_argument("--threads", type=int, default=2, help="torch threads of every process")
    p.add_argument("--scales", default="n,m,x", help="scales of (a), from n, s, m, l, x")
    p.add_argument("--out", default=str(REPO / "results" / "convert_yolov8.json"))
    return p.parse_args()


def peer_run(python: Path, env: dict, code: str, spec: dict, work: Path, name: str) -> None:
    script, spec_path = work / f"{name}.py", work / f"{name}.json"
    script.write_text(code)
    spec_path.write_text(json.dumps(spec))
    done = subprocess.run([str(python), str(script), str(spec_path)], env=env, capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if line.startswith("[peer]"):
            peer.say(line)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed in the peer venv:\n{done.stderr[-3000:]}")


def convert(judge: dict, source: Path, target: Path) -> dict:
    """`optkit convert --trust --json` in the peer venv (where the file's classes import)."""
    command = [*judge["command"], "convert", str(source), "--trust", "-o", str(target), "--json"]
    peer.say("peer venv: optkit " + " ".join(command[len(judge["command"]) :]))
    done = subprocess.run(command, env=judge["env"], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"optkit convert failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout)


def ultralytics_from_optkit(python: Path, env: dict, weights: Path, work: Path) -> tuple[Path, int]:
    """Ultralytics' yolov8n holding the checkpoint's weights, saved by Ultralytics; (file, imgsz)."""
    from optkit.checkpoint import load_checkpoint

    imgsz = load_checkpoint(weights).imgsz
    target = work / "yolov8n-trained.pt"
    spec = {"weights": str(weights), "out": str(target), "threads": 2}
    peer_run(python, env, PEER_FROM_OPTKIT, spec, work, "from_optkit")
    return target, imgsz


def main() -> int:
    args = parse_args()
    python = peer.peer_python(peer.PEER_VENV)
    config = peer.peer_config_dir(peer.PEER_VENV, python)
    judge = peer.peer_judge(python, config)
    env = {**judge["env"], "OMP_NUM_THREADS": str(args.threads)}
    judge["env"] = env
    record: dict = {"peer": peer.peer_versions(python), "threads": args.threads, "scales": {}, "trained": {}}
    with tempfile.TemporaryDirectory(prefix="optkit-convert-") as tmp:
        work = Path(tmp)
        root, _ = peer.prepare_data()
        images = sorted((root / "images" / "val").iterdir())[:4]
        scales = [s for s in args.scales.split(",") if s]
        spec = {"scales": scales, "out": str(work), "threads": args.threads}
        peer_run(python, env, PEER_SAVE, spec, work, "save")
        pairs, sizes = [], [640]
        for scale in scales:
            source, target = work / f"yolov8{scale}.pt", work / f"yolov8{scale}-optkit.pt"
            record["scales"][scale] = {"convert": convert(judge, source, target)}
            pairs.append([str(source), str(target)])
        if args.weights:
            weights = work / "source-optkit.pt"
            shutil.copyfile(args.weights, weights)  # a snapshot: the file may be rewritten meanwhile
            best, imgsz = ultralytics_from_optkit(python, env, weights, work)
            trained = work / "yolov8n-trained-optkit.pt"
            record["trained"]["convert"] = convert(judge, best, trained)
            pairs.append([str(best), str(trained)])
            sizes.append(imgsz)
        compare = work / "compare.json"
        spec = {"pairs": pairs, "images": [str(p) for p in images], "sizes": sizes, "threads": args.threads,
                "out": str(compare)}  # fmt: skip
        peer_run(python, env, PEER_COMPARE, spec, work, "compare")
        record["outputs"] = json.loads(compare.read_text())
        if args.weights:
            own = {**peer.own_judge(), "env": {**peer.ORIGINAL_ENV, "OMP_NUM_THREADS": str(args.threads)}}
            record["trained"]["val"] = {
                "ultralytics_trust": peer.run_optkit_val(judge, str(best), peer.DATA, imgsz, trust=True),
                "converted_own_venv": peer.run_optkit_val(own, str(trained), peer.DATA, imgsz, trust=False),
                "source_own_venv": peer.run_optkit_val(own, str(weights), peer.DATA, imgsz, trust=False),
            }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2, default=str))
    print_table(record)
    return 0 if all(r["max_rel"] <= RTOL for r in record["outputs"]) else 1


def print_table(record: dict) -> None:
    print(f"peer: {record['peer']}")
    head = f"{'file':<20} {'imgsz':>5} {'max |d|':>10} {'scale':>8} {'of scale':>10} {'scores |d|':>10}"
    print(head + "  optkit model")
    for row in record["outputs"]:
        name = Path(row["file"]).name
        scale = next((s for s in record["scales"] if name == f"yolov8{s}.pt"), None)
        made = record["scales"][scale]["convert"] if scale else record["trained"]["convert"]
        model = made["arch"] + (f" {made['options']}" if made["options"] else "")
        figures = f"{row['max_abs']:>10.3g} {row['scale']:>8.4g} {row['max_rel']:>10.3g}"
        print(f"{name:<20} {row['imgsz']:>5} {figures} {row['max_abs_scores']:>10.3g}  {model}")
    val = record["trained"].get("val", {})
    labels = {
        "ultralytics_trust": "val --trust (Ultralytics' file)",
        "converted_own_venv": "val (converted, optkit venv)",
        "source_own_venv": "val (source checkpoint)",
    }
    for key, run in val.items():
        label = labels[key]
        if run["ok"]:
            r = run["result"]
            print(f"{label:<36} mAP50-95 {r['map']:.4f}  mAP50 {r['map50']:.4f}  P {r['precision']:.4f}  "
                  f"R {r['recall']:.4f}")  # fmt: skip
        else:
            print(f"{label:<36} failed: {run['error']}")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    sys.exit(main())
