"""Ctrl-C (SIGINT) during chat or stream stops the generation and raises KeyboardInterrupt;
the session keeps working, and what was said stays in the conversation."""

import os
import signal
import threading
import time

import pytest


@pytest.fixture(autouse=True)
def _sigint_raises():
    """Python's own Ctrl-C handler for these tests, whatever the process inherited: a shell
    that starts a job in the background has it ignore SIGINT, and Python then keeps it
    ignored (the interrupts below would land nowhere)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _interrupt_after(seconds):
    t = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGINT))
    t.start()
    return t


def _first_token_seconds(model, text):
    """How long a reply to `text` takes to its first token on this machine now: the
    interrupts below land well after it, so that some tokens were generated however
    loaded the machine is."""
    s = model.session(temperature=0.8, seed=1, max_tokens=1)
    t0 = time.monotonic()
    s.chat(text)
    return time.monotonic() - t0


def _interrupt_during_reply(model, text):
    return _interrupt_after(2 * _first_token_seconds(model, text) + 0.15)


def test_ctrl_c_during_chat(model):
    s = model.session(temperature=0.8, seed=5, max_tokens=4000)
    text = "Write a very long story about the sea."
    timer = _interrupt_during_reply(model, text)
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        s.chat(text)
    timer.join()
    assert time.monotonic() - t0 < 5, "the interrupt did not stop the generation promptly"
    assert 0 < s.stats.generated_tokens < 4000
    assert s.chat("Thanks.") != ""


def test_ctrl_c_during_stream(model):
    s = model.session(temperature=0.8, seed=6, max_tokens=4000)
    pieces = []
    text = "Write a very long poem about the wind."
    timer = _interrupt_during_reply(model, text)
    with pytest.raises(KeyboardInterrupt):
        # Unnamed: the interrupt may land in this loop's body rather than in the stream's
        # wait; either way the stream is dropped, which stops it.
        for piece in s.stream(text):
            pieces.append(piece)
    timer.join()
    assert pieces and s.last_stop_reason == "cancelled"
    assert s.stats.generated_tokens < 4000
    assert s.chat("Thanks.") != ""


def test_ctrl_c_in_a_with_block(model):
    s = model.session(temperature=0.8, seed=7, max_tokens=4000)
    text = "Describe every planet in great detail."
    timer = _interrupt_during_reply(model, text)
    with pytest.raises(KeyboardInterrupt):
        with s.stream(text) as stream:
            for _ in stream:
                pass
    timer.join()
    assert stream.stop_reason == "cancelled" and s.last_stop_reason == "cancelled"
    assert s.chat("Thanks.") != ""
