"""Type stubs of the Rust extension ``tern._tern`` (re-exported by ``tern``)."""

import os
import pathlib
from typing import Iterator, List, Literal, Optional, Sequence, Tuple, Union

DEFAULT_MODEL: str

StopReason = Literal["end_of_turn", "stop_string", "max_tokens", "cancelled"]
KvType = Literal["f32", "f16", "q8_0"]

def known_models() -> List[Tuple[str, str]]:
    """The models known by name, as ``(name, description)``; the first is the default."""

def cache_dir() -> pathlib.Path:
    """Where models fetched by name are kept."""

def boards() -> List[str]:
    """The board profile names ``Model(board=...)`` accepts, besides "auto"."""

class ModelInfo:
    """What a model is."""

    path: str
    architecture: str
    size: int
    context_length: int
    has_chat_template: bool
    n_layer: int
    n_embd: int
    n_vocab: int
    threads: int
    board: str
    kernels: str

class Stats:
    """A session's counters as of the end of its last call."""

    tokens: int
    cache_used: int
    cache_capacity: int
    prompt_tokens: int
    prompt_seconds: float
    generated_tokens: int
    generated_seconds: float
    prompt_tokens_per_second: float
    generation_tokens_per_second: float
    draft_proposed: int
    draft_accepted: int

class Stream(Iterator[str]):
    """A reply being generated; iterate for its pieces."""

    text: str
    stop_reason: Optional[StopReason]
    def __iter__(self) -> "Stream": ...
    def __next__(self) -> str: ...
    def __enter__(self) -> "Stream": ...
    def __exit__(self, *exc: object) -> bool: ...
    def close(self) -> None:
        """Stops the generation; what was generated stays in the conversation."""

class Model:
    """A language model, loaded from a GGUF file or fetched by name."""

    def __init__(
        self,
        model: Union[str, "os.PathLike[str]"] = "smollm2-135m",
        *,
        threads: Optional[int] = None,
        board: str = "auto",
    ) -> None: ...
    @property
    def info(self) -> ModelInfo:
        """Architecture, size, context length, chat template presence, …"""
    def session(
        self,
        system: Optional[str] = None,
        *,
        sinks: Optional[int] = 4,
        window: Optional[int] = None,
        kv_type: Optional[KvType] = "f16",
        temperature: float = 0.6,
        top_p: float = 0.95,
        top_k: int = 40,
        min_p: float = 0.05,
        repeat_penalty: float = 1.1,
        seed: Optional[int] = None,
        max_tokens: int = 256,
        stop: Union[None, str, Sequence[str]] = None,
        pin_system: bool = True,
    ) -> "Session":
        """Starts a conversation with this model."""

class Session:
    """One conversation with a model."""

    def chat(self, text: str) -> str:
        """Adds a user message and returns the model's reply."""
    def stream(self, text: str) -> Stream:
        """Adds a user message and yields the reply in pieces as they are generated."""
    def add_message(self, role: Literal["system", "user", "assistant"], text: str) -> None:
        """Adds a message to the conversation and feeds it to the model."""
    def generate(self) -> str:
        """Generates the assistant's reply to the conversation so far."""
    def generate_stream(self) -> Stream:
        """Like ``generate()``, piece by piece."""
    def reset(self) -> None:
        """Forgets the conversation (the system prompt is fed again)."""
    def save(self, path: Union[str, "os.PathLike[str]"]) -> None:
        """Saves the conversation so that ``Session.restore`` continues it exactly."""
    @staticmethod
    def restore(
        model: Model,
        path: Union[str, "os.PathLike[str]"],
        *,
        draft: Optional[Model] = None,
        draft_k: int = 0,
    ) -> "Session":
        """Restores a session saved by ``save`` with the same model file; with ``draft``, it
        goes on decoding speculatively."""
    def cancel(self) -> None:
        """Stops the running call within a token; safe from any thread."""
    @property
    def stats(self) -> Stats:
        """The session's counters."""
    @property
    def last_stop_reason(self) -> Optional[StopReason]:
        """Why the last reply ended."""
