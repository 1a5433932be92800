"""The exceptions of :mod:`tern`. Every one derives from :class:`TernError`; some also derive
from the built-in exception a Python programmer would expect (``ValueError`` for an invalid
argument, ``FileNotFoundError`` for a missing file), so either ``except`` clause catches them.
"""

__all__ = [
    "TernError",
    "InvalidArgumentError",
    "ModelNotFoundError",
    "ModelError",
    "DownloadError",
    "SessionError",
    "SessionFileError",
    "SessionFileNotFoundError",
    "BusyError",
    "MemoryBudgetError",
    "InternalError",
]


class TernError(Exception):
    """Base class of every error the Tern runtime reports."""


class InvalidArgumentError(TernError, ValueError):
    """An argument is out of range or not one of the accepted values."""


class ModelNotFoundError(TernError, FileNotFoundError):
    """The model is neither an existing file nor a known model name."""


class ModelError(TernError):
    """The model file is corrupt, truncated, or of an architecture Tern does not support."""


class DownloadError(TernError):
    """A known model could not be fetched (network, index, checksum)."""


class SessionError(TernError):
    """The runtime failed while running the model (tokenizer, chat template, cache)."""


class SessionFileError(TernError):
    """A session file is corrupt, of another format version, saved with another model, or
    cannot be read or written."""


class SessionFileNotFoundError(SessionFileError, FileNotFoundError):
    """The session file to restore does not exist."""


class BusyError(TernError):
    """The session is running another call (in another thread, or an unfinished stream)."""


class MemoryBudgetError(TernError, MemoryError):
    """The model and the smallest useful KV cache do not fit the board's memory budget."""


class InternalError(TernError):
    """A bug in Tern, caught before it could crash the interpreter."""
