"""dfs.data.digits: scikit-learn's digits as images, a resumable batch sampler, and the digit judge."""
import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from dfs.data.digits import (
    DigitJudge,
    batch_sampler,
    digits_images,
    to_8x8,
)
from dfs.stats import wilson_interval


def test_digits_images_are_sklearn_digits_scaled_to_minus1_1():
    x8, y = digits_images(8)
    d = load_digits()
    assert x8.shape == (1797, 1, 8, 8) and x8.dtype == torch.float32
    np.testing.assert_allclose(x8[:, 0].numpy(), d.images / 8 - 1, atol=1e-6)
    assert torch.equal(y, torch.from_numpy(d.target).long())
    x16, _ = digits_images(16)
    assert x16.shape == (1797, 1, 16, 16) and x16.min() >= -1 and x16.max() <= 1
    # bilinear ×2 then a 2×2 area average returns close to the original grid
    assert np.abs(to_8x8(x16) - x8.flatten(1).numpy()).mean() < 0.15
    with pytest.raises(ValueError, match="size"):
        digits_images(1)


def test_batch_sampler_is_a_function_of_the_generator():
    x, y = torch.arange(100.0), torch.arange(100) % 7
    data = batch_sampler(x, y, batch_size=10)
    a = data(0, torch.Generator().manual_seed(5))
    b = data(3, torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], a[0].long() % 7)
    assert isinstance(batch_sampler(x, batch_size=4)(0, torch.Generator()), torch.Tensor)
    with pytest.raises(ValueError, match="same first dimension"):
        batch_sampler(x, y[:5], batch_size=2)


def test_digit_judge_tells_digits_from_noise():
    x, y = digits_images(16)
    judge = DigitJudge(x[:1400], y[:1400])
    held_out, labels = x[1400:], y[1400:]
    assert judge.accuracy(held_out, labels) > 0.85
    assert judge.accuracy(held_out, (labels + 1) % 10) < 0.1
    acc, lo, hi = judge.accuracy_interval(held_out, labels)     # the accuracy and its Wilson interval over 397 digits
    assert acc == judge.accuracy(held_out, labels) and lo < acc < hi
    assert (lo, hi) == wilson_interval(round(acc * len(labels)), len(labels))
    noise = torch.rand(len(held_out), 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    fd_real, fd_noise = judge.fd(held_out), judge.fd(noise)
    assert fd_real < 0.2 * fd_noise
    assert judge.fd(x[:1400]) == pytest.approx(0.0, abs=1e-6)   # the same sample as the reference
    s = judge.scores(held_out, labels)
    assert set(s) == {"digit_fd", "confidence", "accuracy", "acc_low", "acc_high"} and 0.1 <= s["confidence"] <= 1
    assert s["acc_low"] < s["accuracy"] < s["acc_high"]
    # the real-vs-real floor: as many real digits score about what the held-out ones do, far below noise
    floor, spread = judge.fd_floor(len(held_out), held_out)
    draws = judge.fd_floor_draws(len(held_out), held_out)
    assert len(draws) == 5 and (floor, spread) == (np.mean(draws), np.std(draws))   # the same draws (judge's seed)
    assert spread >= 0 and floor < 0.2 * fd_noise and abs(floor - fd_real) < 0.5 * max(floor, fd_real)
    with pytest.raises(ValueError, match="n must be"):
        judge.fd_floor(1, held_out)
