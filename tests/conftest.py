"""Fixtures shared by the whole suite: deterministic torch, limited to the two shared cores."""

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed_torch():
    """Every test starts from the same random state, so a failure reproduces."""
    torch.manual_seed(0)
