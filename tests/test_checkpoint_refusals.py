"""Files the checkpoint loader refuses: optkit.checkpoint raises errors carrying the facts and naming no
command or option; the workflow (optkit.workflows.inputs) words what the user's command can do."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch

from optkit.checkpoint import (
    PickledCheckpointError,
    StateDictError,
    TorchScriptFileError,
    load_checkpoint,
)
from optkit.workflows.inputs import (
    OPEN_MODEL_COMMANDS,
    TRUSTING_COMMANDS,
    load_optkit_checkpoint,
    open_model,
    optkit_checkpoints_only,
)

OPTKIT = Path(__file__).resolve().parents[1] / "optkit"
FLAG = re.compile(r"(^|[\s(`])--[a-z]")  # an option such as --trust in a message


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    pickled, state, script = tmp_path / "pickled.pt", tmp_path / "state.pt", tmp_path / "script.pt"
    torch.save({"model": torch.nn.Linear(2, 2), "epoch": 1}, pickled)
    torch.save(torch.nn.Linear(2, 2).state_dict(), state)
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), script)
    return {"pickled": pickled, "state": state, "script": script}


def test_refusals_carry_the_facts_and_name_no_option(files):
    with pytest.raises(PickledCheckpointError) as pickled:
        load_checkpoint(files["pickled"], reader="train --weights")
    assert (
        pickled.value.path == files["pickled"] and pickled.value.culprit == "torch.nn.modules.linear.Linear"
    )
    assert pickled.value.reader == "train --weights"
    with pytest.raises(StateDictError) as state:
        load_checkpoint(files["state"])
    with pytest.raises(TorchScriptFileError) as script:
        load_checkpoint(files["script"])
    for error in (pickled.value, state.value, script.value):
        assert str(error) == error.facts and str(error.path) in str(error)
        assert not FLAG.search(str(error)), str(error)


def test_checkpoint_module_names_no_option_or_command_list():
    """optkit.checkpoint (layer 2) words no option: no message it raises or builds holds one."""
    tree = ast.parse((OPTKIT / "checkpoint.py").read_text())
    messages = [  # the strings in raise statements and in every f-string
        n.value
        for top in ast.walk(tree)
        if isinstance(top, (ast.Raise, ast.JoinedStr))
        for n in ast.walk(top)
        if isinstance(n, ast.Constant) and isinstance(n.value, str)
    ]
    assert messages and not [t for t in messages if FLAG.search(t)]
    assert "TRUSTING_COMMANDS" not in (OPTKIT / "checkpoint.py").read_text()


def test_commands_without_trust_say_they_read_optkit_checkpoints_only(files):
    with pytest.raises(PickledCheckpointError) as info:
        load_optkit_checkpoint(files["pickled"], "benchmark")
    message = str(info.value)
    assert message.startswith(info.value.facts)  # the facts, then the words for this command
    assert "`optkit benchmark` reads optkit checkpoints only" in message
    assert f"({TRUSTING_COMMANDS} take such a file with --trust)" in message
    assert "rerun with --trust" not in message  # never an option the command lacks
    with pytest.raises(StateDictError, match=r"`optkit qat` reads optkit checkpoints only .* --model NAME"):
        load_optkit_checkpoint(files["state"], "qat")
    with pytest.raises(TorchScriptFileError, match="optkit reads those only in profile and export"):
        load_optkit_checkpoint(files["script"], "benchmark")


def test_the_reader_recorded_on_the_error_is_the_one_named(files):
    with pytest.raises(
        PickledCheckpointError, match=r"`optkit train --resume` reads optkit checkpoints only"
    ):
        with optkit_checkpoints_only("train"):
            load_checkpoint(files["pickled"], reader="train --resume")


def test_commands_with_trust_say_rerun_with_trust(files):
    with pytest.raises(PickledCheckpointError) as info:
        open_model(files["pickled"], command="info")
    assert str(info.value) == (
        f"{info.value.facts} If you trust the file, rerun with --trust "
        "(and --code-dir DIR when its model code is not importable)"
    )
    with pytest.raises(StateDictError, match="; give --model NAME"):
        open_model(files["state"], command="info")


def test_the_trusting_commands_are_those_that_open_any_model_file():
    trusting = "info, fuse, prune, strip, export, profile, val, predict, ptq-calibrate and convert"
    assert TRUSTING_COMMANDS == trusting
    assert set(OPEN_MODEL_COMMANDS) | {"convert"} == {
        c.strip() for c in TRUSTING_COMMANDS.replace(" and ", ", ").split(",")
    }
