"""The suite leaves the checkout as it found it: every test writes under its own temporary folder."""

import pytest

from checkout import checkout_state


def test_the_checkout_is_left_as_found(request):
    """Runs last (conftest orders it): what `git status --porcelain --ignored` lists now that it did not list
    when the session started (byte-code caches, pytest's cache and .venv aside) was written by a test."""
    before = request.config.checkout_before
    if before is None:
        pytest.skip("not a git checkout: nothing to compare with")
    written = sorted(checkout_state() - before)
    assert not written, f"tests wrote into the checkout: {written}"
