"""Fixtures shared by the core (headless) tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread, and on a busy machine far more predictably."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
