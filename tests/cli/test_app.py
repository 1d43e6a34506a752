"""The CLI shell: fast help without torch, version, exit codes, one-line errors."""

from __future__ import annotations

import subprocess
import sys


def test_help_does_not_import_torch():
    code = (
        "import sys\n"
        "from optkit.cli.app import main\n"
        "rc = main(['--help'])\n"
        "heavy = [m for m in ('torch', 'numpy', 'PIL', 'onnx', 'onnxruntime', 'modelopt')\n"
        "         if m in sys.modules]\n"
        "print('heavy:', heavy, 'rc:', rc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "heavy: [] rc: 0" in proc.stdout, proc.stdout + proc.stderr
    assert "train" in proc.stdout and "val" in proc.stdout


def test_each_command_help_does_not_import_torch():
    code = (
        "import sys\n"
        "from optkit.cli.app import main, app_commands\n"
        "for c in sorted(app_commands()):\n"
        "    assert main([c, '--help']) == 0\n"
        "print('torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip().endswith("False"), proc.stdout + proc.stderr


def test_python_dash_m_and_version():
    proc = subprocess.run(
        [sys.executable, "-m", "optkit", "--version"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0
    assert proc.stdout.startswith("optkit ")


def test_usage_error_is_one_line_and_exit_2(cli):
    r = cli("val", "x.pt", "--bogus-option")
    assert r.code == 2
    assert r.err.strip().count("\n") == 0
    assert r.err.startswith("error: No such option: --bogus-option")
    assert "optkit val --help" in r.err


def test_unknown_command_exit_2(cli):
    r = cli("frobnicate")
    assert r.code == 2 and r.err.startswith("error:")


def test_library_error_is_one_line_exit_1_without_traceback(cli, tmp_path):
    r = cli("info", tmp_path / "missing.pt")
    assert r.code == 1
    assert r.err.strip() == f"error: {tmp_path / 'missing.pt'}: no such file"
    assert "Traceback" not in r.err and r.out == ""


def test_debug_shows_traceback(cli, tmp_path):
    r = cli("info", tmp_path / "missing.pt", "--debug")
    assert r.code == 1
    assert "Traceback" in r.err and "CheckpointError" in r.err
