"""scikit-learn's handwritten digits (bundled, no download) as small images for the quick notebooks.

    x, y = digits_images(size=16)          # (1797, 1, 16, 16) float32 in [-1, 1], labels 0–9
    data = batch_sampler(x, y, 64)         # data(step, generator) -> (x_batch, y_batch) for dfs.train.Trainer

The originals are 8 × 8 with 17 grey levels (0–16). They are scaled to [−1, 1] (0 ↦ −1, 16 ↦ 1) and resized
bilinearly to ``size`` × ``size`` (antialiased when shrinking), so an autoencoder with factor f = 8 still has a
latent of size/8 pixels per side. The resize adds no information: a 16 × 16 digit has the 64 numbers of the
original, smoothly interpolated.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from dfs.stats import wilson_interval

N_CLASSES = 10


def digits_images(size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 digits as a float32 tensor (N, 1, size, size) in [−1, 1] and their labels (N,) as int64."""
    from sklearn.datasets import load_digits

    if not (isinstance(size, int) and size >= 2):
        raise ValueError(f"size must be an integer ≥ 2, got {size!r}")
    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32)).unsqueeze(1) / 8.0 - 1.0
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=size < 8)
    return x.clamp(-1, 1).contiguous(), torch.from_numpy(d.target.astype(np.int64))


def batch_sampler(*tensors: torch.Tensor, batch_size: int):
    """A data callable for :class:`dfs.train.Trainer`: ``data(step, generator)`` draws ``batch_size`` rows with
    replacement using the trainer's per-step generator (so resumed runs see the same batches)."""
    if not tensors or any(len(t) != len(tensors[0]) for t in tensors):
        raise ValueError("pass one or more tensors with the same first dimension")
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    n = len(tensors[0])

    def data(step: int, generator: torch.Generator):
        idx = torch.randint(0, n, (batch_size,), generator=generator)
        out = tuple(t[idx] for t in tensors)
        return out if len(out) > 1 else out[0]

    return data


def to_8x8(x: torch.Tensor) -> np.ndarray:
    """Images (N, 1, S, S) in [−1, 1] back to the digits' native 8 × 8 grid (area average), flattened (N, 64)."""
    return F.adaptive_avg_pool2d(x.detach().float().cpu().clamp(-1, 1), 8).flatten(1).numpy().astype(np.float64)


class DigitJudge:
    """Sample quality on digits without downloaded weights: a clearly labelled substitute for FID and for
    classifier-based scores. Everything is fitted on the real digits you pass, at their native 8 × 8 resolution
    (images of any size are area-averaged to 8 × 8 first, :func:`to_8x8`):

    * **accuracy**: an RBF support-vector classifier (scikit-learn ``SVC``, C = 10, sigmoid-calibrated
      probabilities) labels each image; for reconstructions or class-conditional samples, the fraction labelled
      as the true or requested class (:meth:`accuracy_interval` adds a Wilson interval). **confidence**: the mean
      top class probability — weak on its own: the classifier is confident on some noise images too.
    * **digit FD**: the Fréchet distance (:func:`dfs.metrics.frechet_distance`, FID's formula) between Gaussians
      fitted to the first ``n_components`` principal-component coordinates of real and of generated images. It is
      *not* FID (other features, tiny images) and, like FID, biased upwards at small sample sizes: compare it with
      :meth:`fd_floor`, the FD of as many *real* digits.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, n_components: int = 16, seed: int = 0):
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.decomposition import PCA
        from sklearn.svm import SVC

        self.real = to_8x8(x)
        self.seed = seed
        self.pca = PCA(n_components, random_state=seed).fit(self.real)
        self.real_features = self.pca.transform(self.real)
        self.classifier = CalibratedClassifierCV(SVC(C=10.0, gamma="scale"), ensemble=False).fit(
            self.real, np.asarray(y))

    def features(self, x: torch.Tensor) -> np.ndarray:
        return self.pca.transform(to_8x8(x))

    def fd(self, x: torch.Tensor, real: torch.Tensor | None = None) -> float:
        """digit FD of ``x`` to the judge's real digits (or to ``real``)."""
        from dfs.metrics import frechet_distance

        ref = self.real_features if real is None else self.features(real)
        return frechet_distance(ref, self.features(x))

    def fd_floor_draws(self, n: int, real: torch.Tensor, draws: int = 5) -> list[float]:
        """The digit FD that ``n`` real digits (drawn without replacement from the judge's own) score against
        ``real``, once per draw: what a perfect generator of n samples scores, with its sampling noise."""
        from dfs.metrics import frechet_distance

        if not 2 <= n <= len(self.real_features):
            raise ValueError(f"n must be in [2, {len(self.real_features)}], got {n}")
        ref, rng = self.features(real), np.random.default_rng(self.seed)
        return [frechet_distance(ref, self.real_features[rng.choice(len(self.real_features), n, replace=False)])
                for _ in range(draws)]

    def fd_floor(self, n: int, real: torch.Tensor, draws: int = 5) -> tuple[float, float]:
        """(mean, standard deviation) of :meth:`fd_floor_draws` over ``draws`` draws."""
        v = self.fd_floor_draws(n, real, draws)
        return float(np.mean(v)), float(np.std(v))

    def predict(self, x: torch.Tensor) -> np.ndarray:
        return self.classifier.predict(to_8x8(x))

    def accuracy(self, x: torch.Tensor, y: torch.Tensor) -> float:
        return float((self.predict(x) == np.asarray(y)).mean())

    def accuracy_interval(self, x: torch.Tensor, y: torch.Tensor, level: float = 0.95) -> tuple[float, float, float]:
        """(accuracy, low, high): the fraction of ``x`` classified as ``y`` and its Wilson interval (:func:`dfs.stats.wilson_interval`)."""
        k, n = int((self.predict(x) == np.asarray(y)).sum()), len(x)
        return (k / n, *wilson_interval(k, n, level))

    def confidence(self, x: torch.Tensor) -> float:
        return float(self.classifier.predict_proba(to_8x8(x)).max(1).mean())

    def scores(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict:
        out = {"digit_fd": self.fd(x), "confidence": self.confidence(x)}
        if y is not None:
            out["accuracy"], out["acc_low"], out["acc_high"] = self.accuracy_interval(x, y)
        return out
