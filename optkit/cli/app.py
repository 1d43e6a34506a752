"""The root `optkit` command: registers one module per command and maps errors to exit codes.

Exit codes: 0 success; 1 an error the user can fix (`error: <message>` on stderr); 2 a usage
error (unknown option, bad value); 130 interrupted (Ctrl-C); 143 terminated (SIGTERM, handled like
Ctrl-C). Tracebacks only with --debug.
"""

from __future__ import annotations

import functools
import gc
import importlib
import sys
import traceback

import typer

from optkit import __version__

app = typer.Typer(
    name="optkit",
    help="Take a PyTorch vision model from training checkpoint to a fast, small, verified artifact.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        print(f"optkit {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """optkit: train, prune, fuse, quantize, strip, export and profile vision models."""


# One line per command: "name": "module:function". Command modules import heavy packages lazily.
COMMANDS = {
    "train": "optkit.cli.train:train",
    "val": "optkit.cli.val:val",
    "predict": "optkit.cli.predict:predict",
    "info": "optkit.cli.info:info",
    "models": "optkit.cli.models:models",
    "fuse": "optkit.cli.fuse:fuse",
    "prune": "optkit.cli.prune:prune",
    "strip": "optkit.cli.strip:strip",
    "benchmark": "optkit.cli.benchmark:benchmark",
    "export": "optkit.cli.export:export",
    "profile": "optkit.cli.profile:profile",
    "ptq-calibrate": "optkit.cli.ptq:ptq_calibrate",
    "qat": "optkit.cli.qat:qat",
    "convert": "optkit.cli.convert:convert",
    "deploy": "optkit.cli.deploy:deploy",
}


def _checked(name: str, func):
    """`func` with the shared option range checks (optkit.cli.checks) run before its body."""

    @functools.wraps(func)  # Typer reads the options from the wrapped function's signature
    def command(**kwargs):
        from optkit.cli.checks import check_arguments

        check_arguments(name, kwargs)
        return func(**kwargs)

    return command


for _name, _target in COMMANDS.items():
    _module, _func = _target.split(":")
    app.command(_name)(_checked(_name, getattr(importlib.import_module(_module), _func)))


def run() -> int:
    """The `optkit` program (console script and `python -m optkit`): main(), then the exit a
    torchrun process needs (see optkit.train.distributed.end_process)."""
    from optkit.threads import DATA_LOOP_COMMANDS, prepare_cpu_threading
    from optkit.train.distributed import end_process

    args = sys.argv[1:]
    command = next((a for a in args if not a.startswith("-")), None)
    if "--help" in args or "-h" in args:
        command = None  # help: no CPU sample, no allocator settings
    prepare_cpu_threading(command)
    if command in DATA_LOOP_COMMANDS:
        from optkit.heap import keep_freed_memory

        keep_freed_memory()  # no page faults for the same activations every batch (optkit.heap)
    return end_process(main())


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit code instead of raising (tests call this in-process).

    While it runs, SIGTERM raises Terminated, a KeyboardInterrupt: the same cleanup as Ctrl-C, one line
    (`error: terminated`, or train's message naming the saved epoch) and exit code 143."""
    from optkit.errors import Terminated
    from optkit.train.interrupt import quiet_cut_short_loaders, sigterm_raises

    with sigterm_raises() as sigterm, quiet_cut_short_loaders():
        code = _run_app(list(sys.argv[1:] if argv is None else argv), sigterm)
        if code in (130, Terminated.exit_code):  # free what the interrupt cut short while that is quiet
            gc.collect()
        return code


def _run_app(argv: list[str], sigterm) -> int:
    from optkit.errors import Interrupted, OptkitError, QuietExit, Terminated, error_behind

    debug = "--debug" in argv
    try:
        code = app(args=argv, prog_name="optkit", standalone_mode=False)
        if code == 130:  # Typer turns Ctrl-C (and Terminated) into a silent 130; commands return None
            return _interrupted(terminated=sigterm.received)
        return code if isinstance(code, int) else 0
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        return _fail("aborted", 130)
    except KeyboardInterrupt as e:
        return _interrupted(terminated=sigterm.received or isinstance(e, Terminated))
    except typer.TyperException as e:  # usage errors: unknown option, bad value, missing argument
        if debug:
            traceback.print_exc()
        return _fail(_usage_message(e, argv), getattr(e, "exit_code", 2))
    except QuietExit as e:
        return e.exit_code
    except OptkitError as e:
        if debug:
            traceback.print_exc()
        if isinstance(e, Interrupted):  # train's message (the saved epoch); 143 when SIGTERM stopped it
            terminated = sigterm.received or isinstance(error_behind(e, KeyboardInterrupt), Terminated)
            return _fail(str(e), Terminated.exit_code if terminated else e.exit_code)
        return _fail(str(e), getattr(e, "exit_code", 1))
    except Exception as e:  # a bug, not the user's fault: say so in one line
        if debug:
            traceback.print_exc()
        interrupt = error_behind(e, KeyboardInterrupt)
        if interrupt is not None:  # raised while stopping for Ctrl-C or SIGTERM: that is what happened
            return _interrupted(terminated=sigterm.received or isinstance(interrupt, Terminated))
        if debug:
            return _fail(f"{type(e).__name__}: {e}", 1)
        return _fail(f"unexpected {type(e).__name__}: {e} (rerun with --debug for the traceback)", 1)


def _interrupted(terminated: bool) -> int:
    from optkit.errors import Terminated

    return _fail("terminated", Terminated.exit_code) if terminated else _fail("interrupted", 130)


def _usage_message(e: Exception, argv: list[str]) -> str:
    message = e.format_message() if hasattr(e, "format_message") else str(e)
    command = next((a for a in argv if not a.startswith("-")), None)
    where = f"optkit {command} --help" if command in app_commands() else "optkit --help"
    return f"{message} (see: {where})"


def app_commands() -> set[str]:
    return {c.name for c in app.registered_commands if c.name}


def _fail(message: str, code: int) -> int:
    message = " ".join(message.split())  # always one line, even if a library message spans several
    print(f"error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
