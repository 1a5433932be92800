"""Shared fixtures: the default model, loaded once per test run through the catalog (it is
pulled into $XDG_CACHE_HOME on first use, like every Tern test's model)."""

import pytest

import tern


@pytest.fixture(scope="session")
def model():
    return tern.Model(tern.DEFAULT_MODEL)
