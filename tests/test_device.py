import random

import numpy as np
import pytest
import torch

from dfs.device import autocast, get_device, seed_everything


def test_seed_everything_repeats_all_generators():
    def draw():
        seed_everything(123)
        return random.random(), np.random.rand(), torch.rand(3)

    a, b = draw(), draw()
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])
    seed_everything(124)
    assert not torch.equal(torch.rand(3), a[2])


def test_device_choice_and_errors(monkeypatch):
    monkeypatch.delenv("DFS_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert get_device().type == expected
    assert get_device("cpu").type == "cpu"
    monkeypatch.setenv("DFS_DEVICE", "cpu")
    assert get_device().type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            get_device("cuda")


def test_autocast_is_noop_on_cpu():
    with autocast("cpu"):
        y = torch.ones(2, 2) @ torch.ones(2, 2)
    assert y.dtype == torch.float32
