"""Test-session settings shared by every test file."""
import os

import pytest
import torch

from dfs import figures

# `pytest -n 2` on a 2-core machine runs two workers at once: with torch's default of one thread per core each,
# small-model work oversubscribes the CPU and runs several times slower. One thread per worker (and for the
# notebook kernels they start, through OMP_NUM_THREADS) keeps both cores busy without contention.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)


@pytest.fixture
def context():
    """dfs.figures' context set as notebook 03's quick run would (restored afterwards), for tests of recorded tables."""
    old = figures.set_context()
    figures.set_context(notebook="03_elbo_losses", quick=True, seed=0, device="cpu")
    yield
    figures.set_context(**old)
