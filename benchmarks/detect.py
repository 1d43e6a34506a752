"""Detection benchmark (issue 14): optkit's detector trainer against Ultralytics' own trainer, in one run.

(a) optkit: `optkit train --model yolo-det-n --data builtin:shapes-det --imgsz S --epochs E --batch-size B
    --cache --device cpu --json` (a subprocess of the repo's .venv/bin/optkit; OPTKIT_CACHE is honoured),
    then `optkit val <its best.pt> --data builtin:shapes-det --imgsz S --json`.
(b) the peer: Ultralytics' trainer, yolov8n built from its yaml (nothing pretrained), on the same images
    (a folder of links to the shapes-det images, with a data.yaml holding an absolute `path`), the same
    imgsz, epochs and batch, close_mosaic as optkit's default (10), the same seed (--seed, 0), amp off,
    plots off, workers 0, CPU, images cached in RAM as optkit's --cache does, its other settings its own
    (optimizer "auto": AdamW at lr0 0.002*5/(4+nc), 0.001 for the 6 classes, where optkit's detectors
    default to 0.002; 3 warm-up epochs, ...); --peer-lr0 gives it optkit's lr0. Torch threads: as many
    as `optkit train` uses (on the CPU Ultralytics would itself take cores - 1, one thread on 2 cores;
    --peer-threads 0 keeps that). It runs
    in a venv of its own, built on first use (benchmarks/.peer-venv: `pip install torch==2.14.1
    torchvision==0.29.1 ultralytics`), as a separate process: Ultralytics is AGPL, and optkit never
    imports it.
    YOLO_OFFLINE=1, a local font placed where Ultralytics looks for Arial.ttf, and HTTP(S) proxies pointed
    at a closed local port, so nothing is downloaded (an attempt fails and shows in
    results/detect-ultralytics.log, which is scanned for it).
(c) judge: both best.pt files through `optkit val` (the same letterbox, NMS and COCO mAP), the peer's
    with --trust, in two places: optkit's own venv, and the peer's venv (optkit's source on PYTHONPATH,
    typer / rich / faster-coco-eval installed there at this venv's versions). optkit reads a trusted
    Ultralytics best.pt by unpickling it, which imports Ultralytics' classes: only the peer's venv has
    them, so only there can optkit val judge it, and the comparison row uses the first place that judged
    both files. Ultralytics' own figure for its best.pt (its final validation) is shown beside it.
(d) training images/s of each trainer: images trained / seconds spent in the training part of the epochs
    (summed over all epochs; set-up, validation and checkpoint saving excluded). optkit: `images_per_s`
    of `optkit train --json` (the trainer clocks each epoch's batch loop). Ultralytics: its own callbacks
    on_train_epoch_start and on_train_epoch_end, hooked by the peer driver, bound the same part of each of
    its epochs (batch loop, plus its scheduler step and mosaic switch); images per epoch = its train
    split's size (its loader keeps the last partial batch). Wall time: each training process, start to
    exit (imports, data scan and RAM cache, every epoch's validation and saving; Ultralytics' final
    validation of best.pt too).
(e) overhead: a real 1-epoch `Trainer.run()` (in this process, loader workers 0 as on 2 cores) in lockstep
    with two bare loops (forward, loss, backward, AdamW step every `accumulate` batches as the trainer
    steps; no clipping, EMA, schedule or bookkeeping): after the trainer's batch i, the bare loop trains
    on batch i of the same batches pre-collated in memory from optkit's own train loader (same seed,
    epoch 0, mosaic on as in most epochs of a run, same fraction), and a second bare loop on batch i of
    its own DataLoader built as the trainer's (their order swapped every batch). A shared VM's speed
    swings 20-30% within seconds; stepping the three together puts every swing on all of them, where
    whole runs one after the other put it on one. The trainer's images/s: its own clock of its batch
    loop, less the bare loops' seconds inside it. The ratio is the median over rounds of trainer / bare
    (each round: fresh models from the same seed). The trainer's figure includes its data pipeline
    (decode from the RAM cache, mosaic, affine, HSV, collate) and the bare one does not; the loop fed by
    a DataLoader says how much of the gap is the data pipeline (no target).

Targets (issue 14, "Must show"): optkit mAP50-95 >= 0.60 and mAP50 >= 0.90 (optkit val on its val split);
`optkit train` done within --time-limit-min (5) minutes; optkit mAP50-95 >= Ultralytics'; optkit training
img/s >= Ultralytics'; trainer / bare >= 0.85.

Usage: .venv/bin/python benchmarks/detect.py [--imgsz 96] [--epochs 12] [--batch 32] [--time-limit-min 5]
       [--seed 0] [--skip-peer] [--skip-overhead] [--peer-venv PATH] [--peer-lr0 LR] [--rounds 7]
       [--overhead-fraction 0.25]
Smoke test (not a benchmark: a subset of the images, marked "smoke" in the table):
       .venv/bin/python benchmarks/detect.py --epochs 1 --imgsz 64 --batch 8 --fraction 0.05 --rounds 1
Writes results/detect.json and results/detect.md (atomically), results/detect-ultralytics.log.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ORIGINAL_ENV = dict(os.environ)  # before optkit.threads sets its spin count for this process
DATA = "builtin:shapes-det"
MODEL = "yolo-det-n"
PEER_MODEL = "yolov8n.yaml"  # Ultralytics' model yaml: built from scratch, no weights, no download
PEER_PACKAGES = ["torch==2.14.1", "torchvision==0.29.1", "ultralytics"]  # both torch wheels lie on disk
PEER_VENV = REPO / "benchmarks" / ".peer-venv"
PEER_CACHE = "ram"  # Ultralytics' image cache, as optkit's --cache (decoded images kept in RAM)
CLOSED_PROXY = "http://127.0.0.1:9"  # discard port, nothing listens: any download the peer tries fails
DOWNLOAD_MARKS = ("Downloading", "download", "ConnectionError", "ProxyError", "Max retries")
SEED = 0

# The run the issue judges: `make demo`'s detector step (DET_IMGSZ, DET_EPOCHS, DET_BATCH; update both
# together). 17 epochs took 298.7 s of optkit train on 2 idle cores on 2026-12-03, 360-430 s in slow
# phases of the VM; at the detectors' lr0 of 0.002, 11 epochs reached mAP50 0.898 (seed 0), under
# the 0.90 target, so 12.
IMGSZ, EPOCHS, BATCH = 96, 12, 32
TIME_LIMIT_MIN = 5.0  # minutes: the budget for `optkit train` on 2 idle cores
MIN_MAP, MIN_MAP50 = 0.60, 0.90  # optkit's best.pt on the shapes-det val split (optkit val)
MIN_RATIO = 0.85  # trainer images/s over bare-loop images/s
OVERHEAD_FRACTION = 0.25  # of the train split per overhead run: 750 of 3,000 images
ROUNDS = 7  # (e): a noisy VM needs several pairs


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--imgsz", type=int, default=IMGSZ, help="input size, pixels (both trainers)")
    p.add_argument("--epochs", type=int, default=EPOCHS, help="epochs (both trainers)")
    p.add_argument(
        "--batch", type=int, default=BATCH, help="batch size (both trainers and the overhead runs)"
    )
    p.add_argument(
        "--time-limit-min", type=float, default=TIME_LIMIT_MIN, help="target: optkit train minutes"
    )
    p.add_argument(
        "--seed",
        type=int,
        default=SEED,
        help="seed of both trainers (order, augmentation, initial weights): repeat with others to see the "
        "spread of mAP between seeds",
    )
    p.add_argument("--skip-peer", action="store_true", help="skip (b): no Ultralytics run")
    p.add_argument("--skip-overhead", action="store_true", help="skip (e): no trainer-vs-bare comparison")
    p.add_argument("--peer-venv", default=str(PEER_VENV), help="the peer's venv (built there if missing)")
    p.add_argument(
        "--peer-lr0",
        type=float,
        default=None,
        help="Ultralytics at this AdamW lr0 instead of its automatic choice (0.002*5/(4+nc)): is a gap the "
        "default learning rate or the trainer?",
    )
    p.add_argument(
        "--peer-threads",
        type=int,
        default=None,
        help="torch threads of the peer's training (default: optkit's count; 0: Ultralytics' own choice)",
    )
    p.add_argument("--rounds", type=int, default=ROUNDS, help="(e): lockstep rounds (one trainer epoch each)")
    p.add_argument(
        "--overhead-fraction", type=float, default=OVERHEAD_FRACTION, help="(e): share of the train split"
    )
    p.add_argument(
        "--fraction",
        type=float,
        default=1.0,
        help="smoke tests only: both trainers use the first FRACTION of each split (not the benchmark)",
    )
    p.add_argument("--work", default=None, help="folder for the runs (default: a temporary one, removed)")
    p.add_argument("--out", default="results/detect.json", help="JSON file to write (and .md beside it)")
    args = p.parse_args()
    if args.imgsz % 32 or args.imgsz < 32:
        p.error("--imgsz must be a multiple of 32")
    if args.peer_threads is not None and args.peer_threads < 0:
        p.error("--peer-threads must be >= 0")
    if args.epochs < 1 or args.batch < 2 or args.rounds < 1 or args.time_limit_min <= 0:
        p.error("--epochs and --rounds must be >= 1, --batch >= 2, --time-limit-min > 0")
    if not 0 < args.fraction <= 1 or not 0 < args.overhead_fraction <= 1:
        p.error("--fraction and --overhead-fraction must be in (0, 1]")
    return args


def say(message: str) -> None:
    from optkit.report.console import err

    err().print(message, markup=False, highlight=False)


# ---------------------------------------------------------------------------------------------- data


def prepare_data() -> tuple[Path, float | None]:
    """The shapes-det folder, generated before any clock starts; (root, seconds spent generating it, None
    when it was cached)."""
    from optkit.data.shapes import builtin_root

    generated: list[str] = []

    def log(message: str) -> None:
        generated.append(message)
        say(message)

    t0 = time.perf_counter()
    root = builtin_root(DATA.split(":", 1)[1], log=log)
    return root, (time.perf_counter() - t0 if generated else None)


def mirror_dataset(root: Path, dest: Path, fraction: float) -> Path:
    """A YOLO folder for the peer with the same images: dest/images/<split>/<file> links to root's images
    (a real folder of links, so Ultralytics' resolve() of the split folder stays in dest and its label
    cache is written here, never into optkit's data), dest/labels/<split>/ copies of the label files, and
    dest/data.yaml with an absolute `path`. With fraction < 1 (smoke tests) only the first images of each
    split (sorted by name). Returns the yaml."""
    import yaml

    source = yaml.safe_load((root / "data.yaml").read_text())
    splits = {"train": source["train"], "val": source["val"]}  # e.g. images/train, relative to root
    for split, rel in splits.items():
        images = sorted(p for p in (root / rel).iterdir() if p.is_file())
        keep = images[: max(2, round(len(images) * fraction))]
        image_dir = dest / "images" / split
        label_dir = dest / "labels" / split
        image_dir.mkdir(parents=True)
        label_dir.mkdir(parents=True)
        source_labels = root / label_folder(rel)
        for image in keep:
            (image_dir / image.name).symlink_to(image)
            label = source_labels / f"{image.stem}.txt"
            if label.exists():  # a missing label file is a background image for both trainers
                shutil.copyfile(label, label_dir / label.name)
    names = source["names"]
    record = {"path": str(dest), "train": "images/train", "val": "images/val", "names": names}
    yaml_path = dest / "data.yaml"
    yaml_path.write_text(yaml.safe_dump(record, sort_keys=False))
    return yaml_path


def label_folder(images_rel: str) -> str:
    """images/train -> labels/train (the YOLO rule: the last `images` part becomes `labels`)."""
    parts = Path(images_rel).parts
    i = len(parts) - 1 - parts[::-1].index("images")
    return str(Path(*parts[:i], "labels", *parts[i + 1 :]))


# -------------------------------------------------------------------------------------------- optkit


def optkit_bin() -> Path:
    """The repo's .venv/bin/optkit (else the one beside this interpreter)."""
    repo_bin = REPO / ".venv" / "bin" / "optkit"
    return repo_bin if repo_bin.exists() else Path(sys.executable).with_name("optkit")


def run_optkit_train(args: argparse.Namespace, data: str, project: Path) -> dict:
    """`optkit train` as a user runs it; its display goes to this terminal (stderr), its JSON is read."""
    command = [
        str(optkit_bin()), "train", "--model", MODEL, "--data", data, "--imgsz", str(args.imgsz),
        "--epochs", str(args.epochs), "--batch-size", str(args.batch), "--cache", "--seed", str(args.seed),
        "--device", "cpu", "--project", str(project), "--name", "train", "--exist-ok", "--json",
    ]  # fmt: skip
    say("optkit: " + " ".join(command[1:]))
    t0 = time.perf_counter()
    done = subprocess.run(command, env=ORIGINAL_ENV, stdout=subprocess.PIPE, text=True, check=False)
    wall = time.perf_counter() - t0  # s, process start to exit
    if done.returncode != 0:
        raise SystemExit(f"optkit train failed (exit {done.returncode}); its error is above")
    result = json.loads(done.stdout)
    lr0 = read_lr0(Path(result["save_dir"]) / "args.yaml")
    return {"command": command, "wall_seconds": wall, "result": result, "best": result["best"], "lr0": lr0}


def read_lr0(args_yaml: Path) -> float:
    """The learning rate the run used (--lr0 not given: the task's default, recorded in args.yaml)."""
    import yaml

    return float(yaml.safe_load(args_yaml.read_text())["lr0"])


# Where `optkit val` runs: optkit's own venv, and the peer's venv (optkit's source on PYTHONPATH), where
# Ultralytics' pickled classes import; optkit reads a foreign best.pt only where its package imports.
OWN, BESIDE = "optkit venv", "peer venv"


def own_judge() -> dict:
    return {"where": OWN, "command": [str(optkit_bin())], "env": ORIGINAL_ENV}


def peer_judge(python: Path, config: Path) -> dict:
    env = peer_env(config)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), ORIGINAL_ENV.get("PYTHONPATH")) if p)
    return {"where": BESIDE, "command": [str(python), "-m", "optkit"], "env": env}


def run_optkit_val(judge: dict, weights: str, data: str, imgsz: int, trust: bool) -> dict:
    """`optkit val --json` on a best.pt: {"ok": True, "result": ...} or {"ok": False, "error": ...}."""
    command = [*judge["command"], "val", weights, "--data", data, "--imgsz", str(imgsz), "--device", "cpu"]
    command += ["--trust", "--json"] if trust else ["--json"]
    say(f"judge ({judge['where']}): optkit " + " ".join(command[len(judge["command"]) :]))
    done = subprocess.run(command, env=judge["env"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        error = lines[-1] if lines else f"exit {done.returncode}, nothing on stderr"
        say(f"judge ({judge['where']}): optkit val failed on {weights}: {error}")
        return {"ok": False, "command": command, "error": error, "stderr": done.stderr[-4000:]}
    return {"ok": True, "command": command, "result": json.loads(done.stdout)}


# ---------------------------------------------------------------------------------------------- peer

# Runs in the peer's venv, never imported here. argv[1]: a JSON file {"train": Ultralytics train
# arguments, "out": where to write the summary}. Lines starting "[peer]" are shown; the rest is logged.
PEER_DRIVER = r'''
"""Ultralytics' own trainer on the benchmark's data (written and run by optkit's benchmarks/detect.py)."""
import json
import sys
import time

spec = json.loads(open(sys.argv[1]).read())
from ultralytics import YOLO, __version__, settings  # noqa: E402
import torch  # noqa: E402

# no analytics, no integrations (settings live in this run's YOLO_CONFIG_DIR)
settings.update({k: False for k in ("sync", "clearml", "comet", "dvc", "mlflow", "raytune", "tensorboard",
                                    "wandb", "vscode_msg")})
epochs = []


def set_threads(trainer):
    """Before the first epoch (Ultralytics' select_device has set its own count by now)."""
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])


def epoch_start(trainer):
    trainer.bench_t0 = time.perf_counter()


def epoch_end(trainer):
    seconds = time.perf_counter() - trainer.bench_t0  # the training part of the epoch, s
    images = len(trainer.train_loader.dataset)  # every train image once per epoch (no drop_last)
    threads = torch.get_num_threads()
    epochs.append({"epoch": trainer.epoch + 1, "seconds": seconds, "images": images, "threads": threads})
    rate = images / seconds
    print(f"[peer] epoch {trainer.epoch + 1}/{trainer.epochs}: {rate:.1f} img/s training", flush=True)


model = YOLO(spec["model"])
model.add_callback("on_train_start", set_threads)
model.add_callback("on_train_epoch_start", epoch_start)
model.add_callback("on_train_epoch_end", epoch_end)
t0 = time.perf_counter()
model.train(**spec["train"])
seconds = time.perf_counter() - t0
trainer = model.trainer
own = {k: float(v) for k, v in (trainer.metrics or {}).items() if isinstance(v, (int, float))}
summary = {
    "ultralytics": __version__, "torch": torch.__version__, "torch_threads": epochs[-1]["threads"],
    "train_call_seconds": seconds, "epochs": epochs, "save_dir": str(trainer.save_dir),
    "best": str(trainer.best), "own_metrics_of_best": own,
    "args": {k: str(v) for k, v in vars(trainer.args).items()},
}
open(spec["out"], "w").write(json.dumps(summary, indent=2))
'''


def peer_python(venv: Path) -> Path:
    """The peer venv's python: the venv is built when missing, and what it cannot import is installed
    (Ultralytics and its torch; optkit's own val needs beside them, pinned to this venv's versions)."""
    python = venv / "bin" / "python"
    if not python.exists():
        base = getattr(sys, "_base_executable", None) or "python3"  # not this venv: the base interpreter
        say(f"peer: building its venv in {venv} (Ultralytics is AGPL: it runs there, as a separate process)")
        run_step([base, "-m", "venv", str(venv)])
    missing = peer_missing(python)
    if "ultralytics" in missing:
        run_step([str(python), "-m", "pip", "install", *PEER_PACKAGES])
    judge = [pin for module, pin in judge_pins().items() if module in missing]
    if judge:  # to run optkit val there, where Ultralytics' pickled classes can be imported
        run_step([str(python), "-m", "pip", "install", *judge])
    still = peer_missing(python)
    if still:
        raise SystemExit(f"{venv}: {', '.join(still)} still do not import after the installs above")
    return python


def run_step(command: list[str]) -> None:
    say("peer: " + " ".join(command))
    subprocess.run(command, check=True, env=ORIGINAL_ENV)


def judge_pins() -> dict[str, str]:
    """module -> pip requirement: what `optkit val` imports that the peer venv lacks, at this venv's versions
    (faster-coco-eval computes the mAP: the same version on both sides)."""
    from importlib.metadata import version

    packages = {"typer": "typer", "rich": "rich", "faster_coco_eval": "faster-coco-eval"}
    return {module: f"{package}=={version(package)}" for module, package in packages.items()}


def peer_missing(python: Path) -> list[str]:
    """The modules of the peer's side that its python cannot import (all of them when it cannot start)."""
    modules = ["ultralytics", *judge_pins()]
    probe = (
        "import importlib.util, json; "
        f"print(json.dumps([m for m in {modules!r} if importlib.util.find_spec(m) is None]))"
    )
    done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=False)
    return json.loads(done.stdout) if done.returncode == 0 else modules


def peer_versions(python: Path) -> str:
    probe = (
        "import ultralytics, torch; print('Ultralytics', ultralytics.__version__, 'torch', torch.__version__)"
    )
    return subprocess.run(
        [str(python), "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()


def peer_config_dir(venv: Path, python: Path) -> Path:
    """YOLO_CONFIG_DIR for the peer (its settings.json, inside its venv), with a font in place of Arial.ttf:
    Ultralytics' dataset check asks for that font and downloads it when missing, plots or not."""
    config = venv / "ultralytics-config"
    fonts = config / "Ultralytics"  # Ultralytics' own sub-folder of YOLO_CONFIG_DIR
    fonts.mkdir(parents=True, exist_ok=True)
    probe = "import matplotlib, pathlib; print(pathlib.Path(matplotlib.get_data_path(), 'fonts/ttf'))"
    done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=True)
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        if not (fonts / name).exists():
            shutil.copyfile(Path(done.stdout.strip()) / "DejaVuSans.ttf", fonts / name)
    return config


def peer_env(config: Path) -> dict:
    env = dict(ORIGINAL_ENV)
    env.update(YOLO_OFFLINE="1", YOLO_CONFIG_DIR=str(config), PYTHONUNBUFFERED="1", NO_PROXY="", no_proxy="")
    for key in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env[key] = CLOSED_PROXY
    return env


def run_peer(args, python: Path, config: Path, data_yaml: Path, work: Path, log_path: Path) -> dict:
    """Ultralytics' trainer through the driver above; its summary plus wall time, images/s and the log's
    download-like lines."""
    train = dict(
        data=str(data_yaml), imgsz=args.imgsz, epochs=args.epochs, batch=args.batch, workers=0, device="cpu",
        amp=False, plots=False, close_mosaic=close_mosaic(), seed=args.seed, cache=PEER_CACHE,
        pretrained=False, project=str(work / "ultralytics"), name="train", exist_ok=True,
    )  # fmt: skip
    if args.peer_lr0:  # what its "auto" picks for a short run (AdamW, beta1 0.9, bias lr from 0), at this lr0
        train.update(optimizer="AdamW", lr0=args.peer_lr0, momentum=0.9, warmup_bias_lr=0.0)
    driver, spec, out = work / "peer_driver.py", work / "peer_spec.json", work / "peer_summary.json"
    driver.write_text(PEER_DRIVER)
    threads = peer_threads(args.peer_threads)
    spec.write_text(json.dumps({"model": PEER_MODEL, "train": train, "threads": threads, "out": str(out)}))
    command = [str(python), str(driver), str(spec)]
    say(f"peer: {peer_versions(python)}, {threads or 'its own count of'} threads, {PEER_MODEL}: {train}")
    say(f"peer: its output goes to {log_path}")
    t0 = time.perf_counter()
    rc = stream_to_log(command, peer_env(config), log_path)
    wall = time.perf_counter() - t0  # s, process start to exit
    downloads = download_attempts(log_path)
    if rc != 0:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-15:]
        raise SystemExit(f"the Ultralytics run failed (exit {rc}); end of {log_path}:\n" + "\n".join(tail))
    summary = json.loads(out.read_text())
    record = {"command": command, "train_args": train, "wall_seconds": wall, "downloads": downloads}
    return {**record, **summary, "images_per_s": peer_throughput(summary["epochs"])}


def peer_threads(asked: int | None) -> int:
    """Torch threads for the peer's training: as many as `optkit train` uses (torch's default, one per
    core) unless asked; 0 keeps Ultralytics' own choice (on the CPU it sets cores - 1, one on 2 cores)."""
    import torch

    return torch.get_num_threads() if asked is None else asked


def close_mosaic() -> int:
    """optkit's default --close-mosaic, so both trainers stop mosaic for the same last epochs."""
    from optkit.train.config import TrainConfig

    return TrainConfig().close_mosaic


def stream_to_log(command: list[str], env: dict, log_path: Path) -> int:
    """Run `command`, every output line into log_path; the driver's "[peer]" lines shown here too."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            log.write(line)
            if line.startswith("[peer]"):
                say(line.rstrip())
        return proc.wait()


def download_attempts(log_path: Path) -> list[str]:
    """Log lines that look like a download or a network attempt (none expected)."""
    lines = log_path.read_text(errors="replace").splitlines()
    return [line.strip()[:200] for line in lines if any(mark in line for mark in DOWNLOAD_MARKS)]


def peer_throughput(epochs: list[dict]) -> float:
    """Ultralytics' training images/s: images over training seconds, summed over its epochs."""
    images = sum(e["images"] for e in epochs)
    seconds = sum(e["seconds"] for e in epochs)
    return images / seconds if seconds else 0.0


# ------------------------------------------------------------------------------------------ overhead


def overhead_config(args: argparse.Namespace, data: str, project: Path):
    """One epoch with mosaic on (close_mosaic 0), as most epochs of the benchmark's run train. Loader
    workers 0, as the trainer's default on 2 cores: in lockstep (Lockstep), a worker process would make
    the trainer's next batches while the bare loops run, on their time."""
    from optkit.tasks import get_task
    from optkit.train.config import TrainConfig

    return TrainConfig(
        model=MODEL, data=data, imgsz=args.imgsz, batch_size=args.batch, epochs=1, close_mosaic=0,
        seed=args.seed, fraction=args.overhead_fraction, cache=True, device="cpu", project=str(project),
        name="trainer", exist_ok=True, workers=0,
    ).validate().with_task_lr0(get_task("detect"))  # fmt: skip


def train_loader(cfg, task, data):
    """optkit's own train loader for cfg (what Trainer builds), at epoch 0."""
    loader, sampler = task.train_loader(
        data, list(data.names), cfg.imgsz, cfg.batch_size, cfg.workers, cfg.seed,
        fraction=cfg.fraction, cache=cfg.cache, options=cfg.task_options(),
    )  # fmt: skip
    sampler.set_epoch(0)
    return loader, sampler


class BareLoop:
    """The plainest training loop, one batch per step(): forward, loss, backward, and an AdamW step every
    `accumulate` batches (and after the last) as the trainer steps; no clipping, EMA, schedule or
    bookkeeping. `batches`: pre-collated batches in memory, or a DataLoader (its fetch is then timed)."""

    def __init__(self, cfg, task, data, batches):
        import torch

        from optkit.models import create_model
        from optkit.train.memory_format import training_memory_format
        from optkit.train.optim import accumulate_steps, build_optimizer

        torch.manual_seed(cfg.seed)  # the trainer's initial weights
        self.nb, self.batches = len(batches), iter(batches)
        self.layout = training_memory_format(torch.device("cpu"))  # the trainer's (channels-last on CPU)
        model = create_model(cfg.model, num_classes=len(data.names))
        self.model = model.train().to(memory_format=self.layout)
        self.optimizer = build_optimizer(self.model, cfg, cfg.batch_size)
        self.criterion = task.loss(cfg.task_options(), self.model)
        self.accumulate = accumulate_steps(cfg.batch_size)
        self.steps = self.images = 0
        self.seconds = 0.0

    def step(self) -> None:
        t0 = time.perf_counter()
        images, targets = next(self.batches)
        loss, _ = self.criterion(self.model(images.contiguous(memory_format=self.layout)), targets)
        (loss / self.accumulate).backward()
        self.steps += 1
        if self.steps % self.accumulate == 0 or self.steps == self.nb:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.images += len(images)
        self.seconds += time.perf_counter() - t0

    def images_per_s(self) -> float:
        return self.images / self.seconds


class Lockstep:
    """The trainer's train loader with bare loops stepped between its batches: once the trainer has
    trained on batch i, each loop trains on its own batch i (their order swapped every batch), so the
    phases of a shared VM, which swing throughput by 20-30% within seconds, fall on all of them alike.
    The loops' seconds are inside the trainer's clock and are taken out of it (lockstep_round)."""

    def __init__(self, loader, loops: list[BareLoop]):
        self.loader, self.loops, self.images = loader, loops, 0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for i, batch in enumerate(self.loader):
            self.images += len(batch[0])
            yield batch  # the trainer trains on it before asking for the next one
            for loop in self.loops if i % 2 == 0 else self.loops[::-1]:
                loop.step()


def lockstep_trainer(cfg, loops: list[BareLoop]):
    """optkit's Trainer for `cfg`, its train loader a Lockstep with `loops`."""
    from optkit.train.trainer import Trainer

    class LockstepTrainer(Trainer):
        def _build_loaders(self) -> None:
            super()._build_loaders()
            self.train_loader = Lockstep(self.train_loader, loops)

    return LockstepTrainer(cfg)


def lockstep_round(cfg, task, data, batches) -> dict:
    """One 1-epoch Trainer.run() in lockstep with a bare loop over the pre-collated `batches` and one fed
    by a DataLoader built as the trainer builds its own; images/s of each."""
    bare = BareLoop(cfg, task, data, batches)
    fed = BareLoop(cfg, task, data, train_loader(cfg, task, data)[0])
    trainer = lockstep_trainer(cfg, [bare, fed])
    result = trainer.run()
    lockstep = trainer.train_loader
    train_seconds = lockstep.images / result.images_per_s  # the trainer's own clock of its batch loop
    trainer_seconds = train_seconds - bare.seconds - fed.seconds
    return {
        "trainer": lockstep.images / trainer_seconds,
        "bare": bare.images_per_s(),
        "bare_loader": fed.images_per_s(),
        "images": [lockstep.images, bare.images, fed.images],
    }


def run_overhead(args: argparse.Namespace, data_spec: str, project: Path) -> dict:
    from dataclasses import replace

    from optkit.tasks import get_task

    cfg = overhead_config(args, data_spec, project)
    task = get_task("detect")
    data = task.resolve_data(data_spec)
    loader, _ = train_loader(cfg, task, data)
    say(f"overhead: pre-collating {len(loader)} batches of {cfg.batch_size} from optkit's train loader")
    batches = list(loader)  # float32 images [B, 3, S, S] and targets [M, 6], in memory
    say("overhead: warm-up round on 2 batches (untimed) ...")
    n_train = len(data.splits["train"].images)
    small = replace(cfg, fraction=min(1.0, 2 * cfg.batch_size / n_train))
    lockstep_round(small, task, data, list(train_loader(small, task, data)[0]))
    rounds = []
    for r in range(args.rounds):
        rounds.append(lockstep_round(cfg, task, data, batches))
        say(
            f"overhead round {r + 1}/{args.rounds}: trainer {rounds[-1]['trainer']:.1f}, bare "
            f"{rounds[-1]['bare']:.1f}, bare through the loader {rounds[-1]['bare_loader']:.1f} img/s"
        )
    column = {key: [x[key] for x in rounds] for key in ("trainer", "bare", "bare_loader")}
    return {
        "config": cfg.to_dict(),
        "batches": len(batches),
        "images": sum(len(images) for images, _ in batches),
        "rounds": args.rounds,
        "trainer_images_per_s": column["trainer"],
        "bare_images_per_s": column["bare"],
        "bare_loader_images_per_s": column["bare_loader"],
        "trainer_median": statistics.median(column["trainer"]),
        "bare_median": statistics.median(column["bare"]),
        "bare_loader_median": statistics.median(column["bare_loader"]),
        "ratio": statistics.median(x["trainer"] / x["bare"] for x in rounds),  # paired, per round
        "loader_ratio": statistics.median(x["trainer"] / x["bare_loader"] for x in rounds),
    }


# -------------------------------------------------------------------------------------------- report


def judged(val: dict | None) -> dict | None:
    """mAP50-95 and mAP50 from an `optkit val --json` record, None when it did not run or failed."""
    if not val or not val["ok"]:
        return None
    return {"map": val["result"]["map"], "map50": val["result"]["map50"]}


def judged_pair(optkit: dict, peer: dict | None) -> tuple[str, dict, dict] | None:
    """(where, optkit's, Ultralytics') from the first place optkit val judged both: its own venv, else
    the peer's venv. None when no place judged both."""
    if not peer:
        return None
    for where in (OWN, BESIDE):
        mine, theirs = judged(optkit["val"].get(where)), judged(peer["val"].get(where))
        if mine and theirs:
            return where, mine, theirs
    return None


def comparison_rows(optkit: dict, peer: dict | None) -> list[dict]:
    """One row per figure: optkit's value, Ultralytics' value (None: not measured), unit."""
    p = peer or {}
    rows = []
    for where in (OWN, BESIDE):
        mine, theirs = judged(optkit["val"].get(where)), judged(p.get("val", {}).get(where))
        if mine or theirs:
            rows.append(
                _cmp(f"mAP50-95 (optkit val, {where})", mine and mine["map"], theirs and theirs["map"])
            )
            rows.append(
                _cmp(f"mAP50 (optkit val, {where})", mine and mine["map50"], theirs and theirs["map50"])
            )
    own = p.get("own_metrics_of_best", {})
    if peer:
        rows.append(_cmp("mAP50-95 (Ultralytics' own val)", None, own.get("metrics/mAP50-95(B)")))
        rows.append(_cmp("mAP50 (Ultralytics' own val)", None, own.get("metrics/mAP50(B)")))
    rows += [
        _cmp("train img/s", optkit["result"]["images_per_s"], peer and peer["images_per_s"], "img/s"),
        _cmp("torch threads", optkit["result"].get("threads"), peer and peer["torch_threads"]),
        _cmp("train wall time", optkit["wall_seconds"], peer and peer["wall_seconds"], "s"),
        _cmp("epochs", optkit["result"]["epoch"], peer and len(peer["epochs"])),
        _cmp("lr0", optkit["lr0"], peer and float(peer["args"]["lr0"]), "lr"),
    ]
    return rows


def _cmp(name: str, mine, theirs, unit: str = "") -> dict:
    return {"name": name, "optkit": mine, "ultralytics": theirs, "unit": unit}


def target_rows(args, optkit: dict, peer: dict | None, overhead: dict | None, smoke: bool) -> list[dict]:
    """One row per target: name, value, unit, target (text), ok (None: no target or not measured)."""
    tag = " (smoke)" if smoke else ""
    rows = []
    mine = judged(optkit["val"][OWN])
    if mine:
        rows.append(_row(f"optkit mAP50-95{tag}", mine["map"], "", f">= {MIN_MAP}", mine["map"] >= MIN_MAP))
        ok50 = mine["map50"] >= MIN_MAP50
        rows.append(_row(f"optkit mAP50{tag}", mine["map50"], "", f">= {MIN_MAP50}", ok50))
    limit = 60 * args.time_limit_min  # s
    wall = optkit["wall_seconds"]
    rows.append(_row(f"optkit train wall time{tag}", wall, "s", f"<= {limit:.0f} s", wall <= limit))
    pair = judged_pair(optkit, peer)
    if pair:
        where, mine_p, theirs = pair
        diff = mine_p["map"] - theirs["map"]
        rows.append(_row(f"mAP50-95 optkit - Ultralytics ({where}){tag}", diff, "", ">= 0", diff >= 0))
    elif peer:
        rows.append(_row("mAP50-95 optkit - Ultralytics (not judged)", None, "", ">= 0", None))
    if peer:
        ratio = optkit["result"]["images_per_s"] / peer["images_per_s"]
        rows.append(_row(f"train img/s optkit / Ultralytics{tag}", ratio, "x", ">= 1", ratio >= 1))
    if overhead:
        rows.append(_row("bare loop (pre-collated), median", overhead["bare_median"], "img/s"))
        rows.append(_row("trainer, median", overhead["trainer_median"], "img/s"))
        rows.append(_row("bare loop through the loader, median", overhead["bare_loader_median"], "img/s"))
        ratio = overhead["ratio"]
        rows.append(_row(f"trainer / bare{tag}", ratio, "x", f">= {MIN_RATIO}", ratio >= MIN_RATIO))
        rows.append(_row("trainer / bare through the loader", overhead["loader_ratio"], "x"))
    return rows


def _row(name: str, value, unit: str, target: str | None = None, ok: bool | None = None) -> dict:
    return {"name": name, "value": value, "unit": unit, "target": target, "ok": ok}


def fmt(value, unit: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        text = str(value)
    elif unit in ("img/s", "s"):
        text = f"{value:,.1f}"
    elif unit == "lr":  # a learning rate: its own digits, no unit
        return f"{value:g}"
    else:
        text = f"{value:.3f}"
    return f"{text} {unit}".strip()


def ok_text(ok: bool | None, no: str) -> str:
    return "" if ok is None else ("yes" if ok else no)


def print_tables(title: str, comparison: list[dict], targets: list[dict], notes: list[str]) -> None:
    from rich.table import Table

    from optkit.report.console import out

    table = Table(title=title)
    for col in ("figure", "optkit", "Ultralytics"):
        table.add_column(col, justify="left" if col == "figure" else "right")
    for r in comparison:
        table.add_row(r["name"], fmt(r["optkit"], r["unit"]), fmt(r["ultralytics"], r["unit"]))
    out().print(table)
    table = Table(title="targets (issue 14)")
    for col in ("figure", "value", "target", "ok"):
        table.add_column(col, justify="right" if col == "value" else "left")
    for r in targets:
        table.add_row(
            r["name"], fmt(r["value"], r["unit"]), r["target"] or "", ok_text(r["ok"], "[red]NO[/red]")
        )
    out().print(table)
    for note in notes:
        out().print(f"note: {note}", markup=False, highlight=False)


def markdown(title: str, comparison: list[dict], targets: list[dict], notes: list[str], env: dict) -> str:
    lines = [
        f"# {title}",
        "",
        f"{env['timestamp']}; torch {env['torch']}; {env['cpus_usable']} CPUs; "
        f"load average at start {env['load_average_start']}",
        "",
        "| figure | optkit | Ultralytics |",
        "|---|---:|---:|",
    ]
    for r in comparison:
        lines.append(f"| {r['name']} | {fmt(r['optkit'], r['unit'])} | {fmt(r['ultralytics'], r['unit'])} |")
    lines += ["", "| target | value | wanted | ok |", "|---|---:|---|---|"]
    for r in targets:
        ok = ok_text(r["ok"], "**NO**")
        lines.append(f"| {r['name']} | {fmt(r['value'], r['unit'])} | {r['target'] or ''} | {ok} |")
    lines += ["", *[f"- {note}" for note in notes]]
    lines += ["", "How each figure is measured: the docstring of benchmarks/detect.py."]
    return "\n".join(lines) + "\n"


def run_notes(optkit: dict, peer: dict | None, env: dict) -> list[str]:
    notes = []
    if env["load_average_start"][0] > 0.5:  # 1-minute average
        notes.append(
            f"load average {env['load_average_start']} at start: the machine was not idle, so the img/s "
            "figures are not comparable (under contention Ultralytics' threads spin at libgomp's default "
            "and slow down far more than optkit's, which take a thread fewer and spin less when other "
            "processes are busy at their start: optkit.threads)"
        )
    for where, val in optkit["val"].items():
        if not val["ok"]:
            notes.append(f"optkit val ({where}) failed on optkit's best.pt: {val['error']}")
    own, beside = (judged(optkit["val"].get(where)) for where in (OWN, BESIDE))
    if own and beside and abs(own["map"] - beside["map"]) > 0.002:  # the two judges disagree
        notes.append(
            f"optkit val of optkit's best.pt: mAP50-95 {own['map']:.4f} ({OWN}) "
            f"vs {beside['map']:.4f} ({BESIDE})"
        )
    if peer:
        for where, val in peer["val"].items():
            if not val["ok"]:
                notes.append(f"optkit val ({where}) could not judge Ultralytics' best.pt: {val['error']}")
        if peer["downloads"]:
            lines = "; ".join(peer["downloads"][:3])
            notes.append(f"the peer's log has {len(peer['downloads'])} download-like lines: {lines}")
        notes.append(
            f"Ultralytics {peer['ultralytics']}, torch {peer['torch']}, {peer['torch_threads']} threads "
            "(optkit: torch of its venv, its default threads)"
        )
    return notes


def environment() -> dict:
    """benchmarks/train.py's facts of the machine, plus the load when the run starts and optkit's spin."""
    from train import environment as machine  # benchmarks/ is the script's folder: on sys.path

    return {
        **machine(),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
        "gomp_spincount_optkit": os.environ.get("GOMP_SPINCOUNT"),
    }


def write_results(json_path: Path, record: dict, md: str) -> None:
    from optkit.io import atomic_write_text

    atomic_write_text(json_path, json.dumps(record, indent=2, default=str) + "\n")  # creates the folder
    atomic_write_text(json_path.with_suffix(".md"), md)


# ---------------------------------------------------------------------------------------------- main


def run_all(args: argparse.Namespace, root: Path, work: Path, log_path: Path) -> tuple:
    """(optkit's record, the peer's or None, the overhead's or None)."""
    peer_side = None
    if not args.skip_peer:  # built or checked first: a failed install costs no training run
        venv = Path(args.peer_venv).expanduser().resolve()
        python = peer_python(venv)
        peer_side = (python, peer_config_dir(venv, python))
    mirror = mirror_dataset(root, work / "data", args.fraction)
    data_spec = str(mirror) if args.fraction < 1 else DATA  # smoke: both trainers on the same subset
    optkit = run_optkit_train(args, data_spec, work / "optkit")
    judges = [own_judge()] + ([peer_judge(*peer_side)] if peer_side else [])
    optkit["val"] = {
        j["where"]: run_optkit_val(j, optkit["best"], data_spec, args.imgsz, False) for j in judges
    }
    peer = None
    if peer_side:
        peer = run_peer(args, *peer_side, mirror, work, log_path)
        peer["val"] = {
            j["where"]: run_optkit_val(j, peer["best"], data_spec, args.imgsz, True) for j in judges
        }
    overhead = None if args.skip_overhead else run_overhead(args, data_spec, work / "overhead")
    return optkit, peer, overhead


def main() -> int:
    args = parse_args()
    from optkit.heap import keep_freed_memory
    from optkit.threads import prepare_cpu_threading

    prepare_cpu_threading("train")  # this process's overhead runs wait as `optkit train`'s threads do
    keep_freed_memory()  # and allocate as its process does
    env = environment()
    if env["load_average_start"][0] > 0.5:  # 1-minute average
        say(f"note: load average {env['load_average_start']}: the timings need an idle machine")
    root, generation_s = prepare_data()
    smoke = args.fraction < 1
    json_path = Path(args.out)
    log_path = json_path.with_name("detect-ultralytics.log")
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="optkit-bench-det-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        optkit, peer, overhead = run_all(args, root, work, log_path)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    title = f"optkit detect benchmark: {MODEL} vs Ultralytics {PEER_MODEL}, imgsz {args.imgsz}, "
    title += f"{args.epochs} epochs, batch {args.batch}" + (
        f", SMOKE (fraction {args.fraction})" if smoke else ""
    )
    comparison = comparison_rows(optkit, peer)
    targets = target_rows(args, optkit, peer, overhead, smoke)
    notes = run_notes(optkit, peer, env)
    print_tables(title, comparison, targets, notes)
    record = {
        **env,
        "args": vars(args),
        "smoke": smoke,
        "data_generation_seconds": generation_s,
        "optkit": optkit,
        "ultralytics": peer,
        "overhead": overhead,
        "comparison": comparison,
        "targets": targets,
        "notes": notes,
    }
    write_results(json_path, record, markdown(title, comparison, targets, notes, env))
    say(f"wrote {json_path} and {json_path.with_suffix('.md')}")
    return 0 if judged(optkit["val"][OWN]) and (peer is None or judged_pair(optkit, peer)) else 1


if __name__ == "__main__":
    sys.exit(main())
