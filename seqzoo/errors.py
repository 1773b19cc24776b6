"""Errors a user can cause, with messages that say what was wrong and where."""

from __future__ import annotations


class SeqzooError(Exception):
    """Base class of seqzoo's user-facing errors."""


class DataError(SeqzooError, ValueError):
    """A data file or directory is missing or malformed.

    The message names the file, the row/record and what was expected.
    """


class ConfigError(SeqzooError, ValueError):
    """A configuration or command-line value is invalid (unknown key, name, combination)."""


class UnknownBackboneError(ConfigError, KeyError):
    """A backbone name is not in the registry; the message lists the known names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ExportError(SeqzooError, RuntimeError):
    """ONNX export failed a check (specialised length, parity with onnxruntime)."""


class TrainingError(SeqzooError, RuntimeError):
    """Training cannot go on (a non-finite loss); the message names the step and likely causes."""


def user_error(err: BaseException) -> SeqzooError | None:
    """The seqzoo error behind ``err`` (jsonargparse and Lightning wrap what they call)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, SeqzooError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None
