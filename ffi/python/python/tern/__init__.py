"""Tern: run small quantized language models offline, from Python.

    >>> import tern
    >>> model = tern.Model("smollm2-135m")          # a GGUF path or a known model name
    >>> session = model.session(system="You are brief.", temperature=0)
    >>> reply = session.chat("What is the capital of France?")

A :class:`Model` is loaded once (memory-mapped) and shared by any number of
:class:`Session` objects, on any threads; long calls release the GIL. Errors are
subclasses of :class:`TernError`. ``python -m tern chat`` starts the same chat as the
``tern chat`` command.
"""

from . import _errors
from ._errors import (
    BusyError,
    DownloadError,
    InternalError,
    InvalidArgumentError,
    MemoryBudgetError,
    ModelError,
    ModelNotFoundError,
    SessionError,
    SessionFileError,
    SessionFileNotFoundError,
    TernError,
)
from ._tern import (
    DEFAULT_MODEL,
    Model,
    ModelInfo,
    Session,
    Stats,
    Stream,
    boards,
    cache_dir,
    known_models,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "Model",
    "ModelInfo",
    "Session",
    "Stats",
    "Stream",
    "boards",
    "cache_dir",
    "known_models",
]
__all__ += _errors.__all__
