"""Shared fixtures. Tests run offline and on CPU; plugins registered by a test are removed after it."""

import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def restore_attention_registry():
    """Undo any attention registrations a test makes, so tests stay independent."""
    from methods import ATTENTION

    before = set(ATTENTION.names())
    yield
    for name in set(ATTENTION.names()) - before:
        ATTENTION.remove(name)
