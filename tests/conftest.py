"""Test-session settings shared by every test file."""
import os

import torch

# `pytest -n 2` on a 2-core machine runs two workers at once: with torch's default of one thread per core each,
# small-model work oversubscribes the CPU and runs several times slower. One thread per worker (and for the
# notebook kernels they start, through OMP_NUM_THREADS) keeps both cores busy without contention.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
