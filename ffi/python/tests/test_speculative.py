"""Speculative decoding from Python: a draft model (here the model itself, so every proposal
is right) gives the same greedy replies as the model alone; bad drafts raise."""

import pytest

import tern


def replies(model, **kwargs):
    s = model.session(temperature=0, max_tokens=32, **kwargs)
    return [s.chat("Name three colours of the sea."), s.chat("And of the sky?")]


def test_a_draft_gives_the_model_alone_replies(model):
    alone = replies(model)
    assert all(alone)
    assert replies(model, draft=model) == alone
    assert replies(model, draft=model, draft_k=3) == alone


def test_bad_drafts_raise(model):
    with pytest.raises(tern.InvalidArgumentError):
        model.session(draft=model, draft_k=17)
    with pytest.raises(TypeError):
        model.session(draft="not a model")
