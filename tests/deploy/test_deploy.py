"""`optkit deploy` (issue 17) on tiny real models: the search, its resume after a kill, an impossible
budget, and the output file against a fresh `optkit val` of it (a classifier and a detector)."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

# small enough for a test: 16 calibration images, one timing round of two runs, no loader processes
FAST = ["--num-images", "16", "--rounds", "1", "--runs", "2", "--warmup", "0", "--workers", "0",
        "--batch-size", "16"]  # fmt: skip
KILL_WAIT_S = 600  # the first candidate's JSON must appear within this (a loaded 2-core machine)


def _args(weights, data, work: Path, out: Path, *extra) -> list[str]:
    return [str(a) for a in ("deploy", weights, "--data", data, "--work", work, "-o", out, *FAST, *extra)]


def _check_output(out: Path, result: dict, data, cli) -> dict:
    """The output reloads (onnx checker, ONNX Runtime), records the search, and its recorded accuracy
    is what a fresh `optkit val` of the file measures."""
    import onnx

    from optkit.onnxrt import load_optkit_onnx

    onnx.checker.check_model(onnx.load(str(out)))
    _, meta = load_optkit_onnx(out)
    record = json.loads(meta["deploy"])
    chosen = next(c for c in result["candidates"] if c["key"] == result["chosen"])
    assert record["chosen"]["key"] == chosen["key"] and record["max_drop"] == result["max_drop"]
    assert [c["key"] for c in record["candidates"]] == [c["key"] for c in result["candidates"][1:]]
    val = cli("val", out, "--data", data, "--workers", "0", "--json")
    assert val.code == 0, val.err
    measured = val.json()
    key = result["fitness_key"]
    assert measured[key] == pytest.approx(record["chosen"]["fitness"], abs=1e-9)
    assert measured[key] == pytest.approx(record["chosen"]["metrics"][key], abs=1e-9)
    assert record["chosen"]["drop"] == pytest.approx((record["baseline"]["fitness"] - measured[key]) * 100)
    return record


def _run_until(args: list[str], cwd: Path, stored: Path, more_than: int, sig: int):
    """Start `optkit ARGS` as a process, send it `sig` once `stored` holds more than `more_than` JSON
    files; returns the finished process (stdout and stderr read)."""
    proc = subprocess.Popen([sys.executable, "-m", "optkit", *args], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + KILL_WAIT_S
    while len(list(stored.glob("*.json"))) <= more_than and proc.poll() is None:
        assert time.monotonic() < deadline, "no candidate was stored in time"
        time.sleep(0.05)
    proc.send_signal(sig)
    proc.stdout_text, proc.stderr_text = proc.communicate(timeout=KILL_WAIT_S)
    return proc


def _mtimes(folder: Path, pattern: str) -> dict[str, int]:
    return {p.stem: p.stat().st_mtime_ns for p in folder.glob(pattern)}


@pytest.mark.slow
def test_resume_after_kill_and_ctrl_c_reuses_finished_candidates(tmp_path, cls_data, learned_cls, cli):
    """A classifier's search (INT8, then a 30% structured prune with a 1-epoch fine-tune and INT8):
    killed (SIGKILL) once its first candidate is stored, nothing is written; run again and interrupted
    (SIGINT, Ctrl-C) once a new candidate is stored, it writes the best so far and says it was
    interrupted; run a third time, it reuses every stored candidate (JSON and ONNX files untouched) and
    makes the rest. Latency is timed at 64 px (a free-size export) while accuracy is at 32 px."""
    work, out = tmp_path / "work", tmp_path / "model.onnx"
    stored = work / "candidates"
    args = _args(learned_cls, cls_data, work, out, "--max-drop", "100", "--prune", "0.3", "--finetune-epochs",
                 "1", "--qat-epochs", "0", "--imgsz", "64")  # fmt: skip
    killed = _run_until(args, tmp_path, stored, 0, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL, "the search ended before it could be killed"
    assert not out.exists()
    first = _mtimes(stored, "*.json")

    stopped = _run_until([*args, "--json"], tmp_path, stored, len(first), signal.SIGINT)
    assert stopped.returncode == 0, stopped.stderr_text
    partial = json.loads(stopped.stdout_text)
    assert partial["interrupted"] and "interrupted" in " ".join(partial["notes"])
    assert {c["key"] for c in partial["candidates"] if c["reused"]} == set(first)
    assert partial["chosen"] is not None and out.exists()  # the best so far, within the budget
    finished = _mtimes(stored, "*.json")
    files = _mtimes(work / "files", "*.onnx")
    assert set(first) < set(finished) and set(finished) <= set(files)

    r = cli(*args, "--json")
    assert r.code == 0, r.err
    result = r.json()
    assert {c["key"] for c in result["candidates"] if c["reused"]} == set(finished)
    assert not result["interrupted"]
    # fp32, then INT8 in both SiLU forms (test-tiny has SiLU); within the budget, so the pruned branch
    assert [c["label"] for c in result["candidates"]] == [
        "fp32", "int8 (quickgelu)", "int8 (qlinear)", "prune0.3+int8 (quickgelu)", "prune0.3+int8 (qlinear)"
    ]  # fmt: skip
    assert {k: v for k, v in _mtimes(stored, "*.json").items() if k in finished} == finished
    assert {k: v for k, v in _mtimes(work / "files", "*.onnx").items() if k in finished} == {
        k: files[k] for k in finished
    }
    assert "reused" in r.err  # the progress line of each reused candidate
    assert result["latency_imgsz"] == 64 and result["imgsz"] == 32
    assert all(c["status"] == "ok" and c["within"] for c in result["candidates"])
    chosen = next(c for c in result["candidates"] if c["key"] == result["chosen"])
    assert chosen["speedup"] == max(c["speedup"] for c in result["candidates"][1:])
    _check_output(out, result, cls_data, cli)

    again = cli(*args, "--json")  # a finished search, repeated: nothing is remeasured
    assert again.code == 0 and all(c["reused"] for c in again.json()["candidates"])


@pytest.mark.slow
def test_impossible_budget_exits_1_names_the_closest_and_writes_nothing(
    tmp_path, cls_data, int8_breaking_cls, cli
):
    """A classifier whose INT8 form loses accuracy (an activation outlier flattens its INT8 activations)
    with --max-drop 0: no candidate is within the budget, so one error line names the closest candidate
    and its drop, exit 1, and no output file."""
    work, out = tmp_path / "work", tmp_path / "model.onnx"
    args = _args(int8_breaking_cls, cls_data, work, out, "--max-drop", "0", "--no-prune", "--qat-epochs", "0")
    r = cli(*args)
    assert r.code == 1, r.err
    errors = [line for line in r.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in r.err
    assert not out.exists() and not list(tmp_path.glob("*.onnx"))
    record = json.loads((work / "candidates.json").read_text())
    baseline, *tried = record["candidates"]
    assert baseline["fitness"] == 1.0 and tried  # the float model is intact; INT8 was measured
    assert all(c["status"] == "ok" and c["drop"] > 0 for c in tried)
    closest = min(tried, key=lambda c: c["drop"])
    assert f"closest is {closest['label']} (drop {closest['drop']:.2f} pp" in errors[0], errors[0]
    assert record["chosen"] is None and record["output"] is None

    # a budget above 0 leaves room to back off: the same candidates are reused (the budget is not in
    # their keys), then PTQ keeps the most sensitive layer float (the block that reads the outlier), and
    # its exported files are as accurate as the float model: what that layer reads stays unrounded in
    # them too (optkit.quant.qdq._Graph.float_fed), not only in the fake-quant model
    r = cli(
        *_args(int8_breaking_cls, cls_data, work, out, "--max-drop", "1", "--no-prune", "--qat-epochs", "0")
    )
    record = json.loads((work / "candidates.json").read_text())
    first, backoff = record["candidates"][: len(tried) + 1], record["candidates"][len(tried) + 1 :]
    assert all(c["reused"] for c in first)
    assert [c["label"] for c in backoff] == ["int8 float-skip (quickgelu)", "int8 float-skip (qlinear)"]
    skipped = [json.loads(p.read_text())["auto_skipped"] for p in (work / "steps").glob("*.json")]
    assert ["model.2.cv1.conv"] in skipped or ["model.2.cv2.conv"] in skipped, skipped
    assert all(c["status"] == "ok" and c["within"] and c["drop"] == 0 for c in backoff), backoff
    assert r.code == 0 and out.exists(), r.err


@pytest.mark.slow
def test_detector_end_to_end(tmp_path, det_data, learned_det, cli):
    """A tiny detector through the search: fp32, PTQ INT8 in both SiLU forms (post-processing float);
    mAP50-95 of each exported file; the chosen file and the work folder's table, CSV and Pareto plot.
    (The pruned branch is the classifier's test: the same flows, a detector's fine-tune is slower.)"""
    work, out = tmp_path / "work", tmp_path / "det.onnx"
    args = _args(learned_det, det_data, work, out, "--max-drop", "100", "--no-prune", "--qat-epochs", "0",
                 "--batch-size", "8")  # fmt: skip
    r = cli(*args, "--json")
    assert r.code == 0, r.err
    result = r.json()
    assert result["task"] == "detect" and result["fitness_key"] == "map"
    labels = [c["label"] for c in result["candidates"]]
    assert labels == ["fp32", "int8 (quickgelu)", "int8 (qlinear)"]
    assert all(c["status"] == "ok" for c in result["candidates"])
    assert result["candidates"][0]["fitness"] > 0.3  # the fitted detector finds its objects
    _check_output(out, result, det_data, cli)
    with open(work / "candidates.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["key"] for row in rows] == [c["key"] for c in result["candidates"]]
    assert (work / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = json.loads((work / "candidates.json").read_text())  # names what was written
    assert record["output"] == str(out) and record["plot"] == str(work / "pareto.png")
    for line in (
        "fp32: exporting",
        "int8 (quickgelu): PTQ INT8",
        "int8 (qlinear): mAP50-95 of the ONNX file",
    ):
        assert line in r.err  # a progress line per candidate step


def test_openvino_target_writes_an_ir_that_reloads_and_matches_val(
    tmp_path, cls_data, learned_cls, cli_process
):
    """--target openvino: every candidate is an IR validated and timed by OpenVINO; the chosen one is
    written as an IR folder named after -o, carrying the search in its rt_info, and a fresh `optkit val`
    of that folder measures the accuracy it records."""
    from optkit.ovrt import read_ir

    work, out = tmp_path / "work", tmp_path / "model_openvino"
    args = _args(learned_cls, cls_data, work, out, "--max-drop", "100", "--no-prune", "--qat-epochs", "0")
    r = cli_process(*args, "--target", "openvino", "--json")
    assert r.code == 0, r.err
    result = r.json()
    assert result["target"] == "openvino" and [c["label"] for c in result["candidates"]] == ["fp32", "int8"]
    assert all(Path(c["file"]).is_dir() and c["file"].endswith("_openvino") for c in result["candidates"])
    assert "int8: top-1 of the OpenVINO IR on val" in r.err
    assert sorted(p.name for p in out.iterdir()) == ["model_openvino.bin", "model_openvino.xml"]
    model, meta = read_ir(out)
    assert any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())  # the INT8 candidate
    record = json.loads(meta["deploy"])
    assert record["target"] == "openvino" and record["chosen"]["key"] == result["chosen"]
    val = cli_process("val", out, "--data", cls_data, "--workers", "0", "--json")
    assert val.code == 0, val.err
    assert val.json()["top1"] == pytest.approx(record["chosen"]["fitness"], abs=1e-9)


def test_time_budget_stops_new_candidates(tmp_path, cls_data, learned_cls, cli):
    """--time-budget spent by the baseline: no candidate starts, and with none measured the command
    says so in its one error line and writes nothing."""
    work, out = tmp_path / "work", tmp_path / "model.onnx"
    args = _args(learned_cls, cls_data, work, out, "--max-drop", "1", "--no-prune", "--time-budget", "0.01s")
    r = cli(*args)
    assert r.code == 1
    assert r.err.strip().splitlines()[-1].startswith("error: no candidate is within --max-drop 1")
    record = json.loads((work / "candidates.json").read_text())
    assert len(record["candidates"]) == 1 and record["out_of_time"] and not out.exists()


def test_parse_duration():
    from optkit.errors import ConfigError
    from optkit.workflows.deploy import parse_duration

    assert [parse_duration(t) for t in ("90", "90s", "20m", "1.5h", None)] == [90, 90, 1200, 5400, None]
    for bad in ("0", "-5m", "soon", "5d"):
        with pytest.raises(ConfigError, match="--time-budget"):
            parse_duration(bad)


def test_a_missed_prune_ratio_backs_off_halfway_to_the_last_within_the_budget():
    from optkit.workflows.deploy_search import backoff_ratio

    assert backoff_ratio(0, 0.3) == 0.15 and backoff_ratio(0.3, 0.5) == 0.4
    assert backoff_ratio(0.3, 0.4) is None  # a step under 0.1: the search ends
    assert backoff_ratio(None, 0.3) is None  # the unpruned model missed: pruning cannot rescue it


@pytest.mark.parametrize(
    ("within", "tried"),
    [(0.2, [0, 0.3, 0.15]), (0.45, [0, 0.3, 0.5, 0.4]), (0.9, [0, 0.3, 0.5]), (-1, [0])],
)
def test_the_search_order_with_its_back_off(within, tried):
    """Branches (ratio 0, then --prune's) while within the budget; after the first miss one ratio halfway
    back, then the search ends (a branch within the budget when its ratio is <= `within`)."""
    from types import SimpleNamespace

    from optkit.workflows.deploy_search import Search

    search = Search.__new__(Search)  # the order only: branches stubbed
    search.req, search.out_of_time = SimpleNamespace(prune_ratios=[0.3, 0.5]), False
    search.candidate = lambda config: {"status": "ok"}
    seen = []
    search.branch = lambda ratio: seen.append(ratio) or ratio <= within
    search.run()
    assert seen == tried


def test_a_ctrl_c_while_a_candidate_is_stored_keeps_it_in_the_results(tmp_path):
    """Ctrl-C during the store of a measured candidate (after the rename has made its JSON visible,
    during the folder's fsync) still leaves the candidate among the search's results, so an interrupted
    search can choose it (a CI run once saw 'no candidate ... interrupted' with the JSON on disk)."""
    from types import SimpleNamespace

    from optkit.workflows.deploy_search import Search

    search = Search.__new__(Search)
    search.req, search.src = SimpleNamespace(time_budget_s=None), SimpleNamespace(work=tmp_path)
    search.results, search.progress = [], SimpleNamespace(line=print)
    search.candidate_key = lambda config: dict(config)
    search.measure = lambda key, label, config: {"key": key, "label": label, "status": "ok"}
    real_write = search.write_json

    def write_then_ctrl_c(path, data):
        real_write(path, data)
        raise KeyboardInterrupt

    search.write_json = write_then_ctrl_c
    with pytest.raises(KeyboardInterrupt):
        search.candidate({"prune": 0, "quant": "int8"})
    [result] = search.results
    assert result["label"] == "int8" and result["reused"] is False
    [stored] = (tmp_path / "candidates").glob("*.json")
    assert json.loads(stored.read_text()) == {k: v for k, v in result.items() if k != "reused"}
    assert search.candidate({"prune": 0, "quant": "int8"})["reused"]  # a resume reuses it
