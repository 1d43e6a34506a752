"""The project's error types. Library code raises these with a message a user can act on;
`optkit.cli.app` prints them as one line (`error: <message>`) and exits with code 1."""


def error_behind(error: BaseException | None, kind: type[BaseException]):
    """`error` itself if it is a `kind`, else the first `kind` it was raised from or while handling
    (following __cause__, else __context__), or None. E.g. the Ctrl-C behind a write that then failed."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, kind):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


class OptkitError(Exception):
    """Base class: an error the user can fix (bad file, bad option, missing data)."""


class CheckpointError(OptkitError):
    """A file is missing, truncated, unsafe to load, or not an optkit checkpoint."""


class ModelError(OptkitError):
    """Unknown model name or model option, or an input size the model cannot take."""


class DatasetError(OptkitError):
    """A dataset is missing, empty, or does not match the checkpoint."""


class ConfigError(OptkitError):
    """An option value is out of range or inconsistent with another option."""


class DeviceError(OptkitError):
    """A device was requested that this machine does not have (e.g. CUDA without a GPU)."""


class Interrupted(OptkitError):
    """The user pressed Ctrl-C (SIGINT); the message says what was kept. Exit code 130, as shells use
    (143 when a SIGTERM, a Terminated, was the interrupt: optkit.cli.app)."""

    exit_code = 130


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (`kill`, `timeout`, `docker stop`, a CI job cancelled). A KeyboardInterrupt, so it
    takes Ctrl-C's path and its cleanup (atomic writes remove their temp files); the CLI installs the
    handler (optkit.train.interrupt.sigterm_raises) and exits with 143 = 128 + 15, as shells report it."""

    exit_code = 143


class QuietExit(OptkitError):
    """End the command with `exit_code` and print nothing: another process (torchrun's rank 0) reports."""

    def __init__(self, exit_code: int) -> None:
        super().__init__("")
        self.exit_code = exit_code
