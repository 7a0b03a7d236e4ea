"""The checkpoint shipped inside the package loads offline, with its metadata."""

from __future__ import annotations

import os

import pytest

from composition_gym.agents import TransformerLM, pretrained
from composition_gym.agents.checkpoints import available, pretrained_info


def test_pretrained_small_loads_offline_with_metadata():
    assert "small" in available()
    lm = pretrained("small")
    assert isinstance(lm, TransformerLM) and not lm.training
    info = pretrained_info("small")
    for key in ("env_id", "recipe", "seed", "date", "heldout_greedy_success"):
        assert key in info, key
    path = os.path.join(os.path.dirname(__import__("composition_gym.agents.checkpoints",
                                                   fromlist=["x"]).__file__), "small.pt")
    assert os.path.getsize(path) < 1_000_000


def test_unknown_pretrained_name_lists_the_shipped_ones():
    with pytest.raises(ValueError, match="shipped"):
        pretrained("huge")
