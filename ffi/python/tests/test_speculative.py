"""Speculative decoding from Python: a draft model (here the model itself, so every proposal
is right) gives the same greedy replies as the model alone, restored sessions included; bad drafts
raise."""

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


def test_a_restored_session_goes_on_with_a_draft(model, tmp_path):
    s = model.session(temperature=0, max_tokens=32)
    s.chat("Name three colours of the sea.")
    path = tmp_path / "chat.tern"
    s.save(path)
    alone = tern.Session.restore(model, path)
    drafted = tern.Session.restore(model, path, draft=model, draft_k=3)
    assert drafted.chat("And of the sky?") == alone.chat("And of the sky?")
    assert alone.stats.draft_proposed == 0
    assert drafted.stats.draft_proposed > 0
    # The restored draft was fed the history afresh, the model's cache came from the file:
    # near-ties may differ, so not every proposal need be kept.
    assert 0 < drafted.stats.draft_accepted <= drafted.stats.draft_proposed
    with pytest.raises(tern.InvalidArgumentError):
        tern.Session.restore(model, path, draft=model, draft_k=17)
