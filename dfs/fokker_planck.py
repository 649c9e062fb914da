"""Thesis Appendix 2, checked numerically: the 1-D Fokker–Planck equation and Langevin dynamics.

For the SDE  dx = f(x, t) dt + g(t) dW  (thesis App. 2, first display) the density p(x, t) of x obeys the
Fokker–Planck equation (thesis App. 2, Theorem 0.1; Särkkä & Solin 2019, ch. 5)

    ∂p/∂t = −∂/∂x (f p) + ½ g² ∂²p/∂x²  =  −∂J/∂x,   J = f p − ½ g² ∂p/∂x  (the probability flux).

Two independent ways to get p(x, t), compared here:

* :func:`fp_solve` — finite volumes on a uniform grid: the flux J at each cell face from central differences,
  zero flux at the two ends (mass is conserved to rounding), explicit Euler in time with
  dt = ``cfl`` · h² / g²; the error is O(h²) (dt ∝ h²);
* :func:`euler_maruyama` — particles,  x ← x + f(x, t) dt + g(t) √dt z,  and their histogram
  (:func:`histogram_density`); the error is O(√(bins / N)) sampling noise plus O(bin width) and O(dt) bias.

Langevin dynamics is the special case g = 1, f = ½ ∂ₓ log p*(x) for a **fixed** target density p*:
then J = ½ (p ∂ₓ log p* − ∂ₓ p) vanishes at p = p*, so p* is stationary, and from any start p(·, t) → p*.
The draft (App. 2, l.307–311) takes instead f = ½ ∂ₓ log p(x|t), the score of the *evolving* density. Then
J = ½ (p ∂ₓ log p − ∂ₓ p) = 0 for **every** p: the equation says ∂p/∂t = 0 whatever p is, so "the distribution
is preserved" holds for any start and tells nothing about a target (:func:`draft_langevin_rhs`
vanishes, up to the O(h²) discretisation, at every density it is given). Everything here is NumPy float64.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Drift = Callable[[np.ndarray, float], np.ndarray]      # f(x, t)
Noise = Callable[[float], float]                        # g(t)
_TINY = 1e-300


@dataclass(frozen=True)
class Grid:
    """``n`` cells of width h = (hi − lo)/n on [lo, hi]; ``x`` the cell centres, ``faces`` the n − 1 inner faces."""

    lo: float
    hi: float
    n: int

    def __post_init__(self):
        if not (self.hi > self.lo and isinstance(self.n, int) and self.n >= 8):
            raise ValueError(f"a grid needs hi > lo and at least 8 cells; got lo={self.lo}, hi={self.hi}, n={self.n!r}")

    @property
    def h(self) -> float:
        return (self.hi - self.lo) / self.n

    @property
    def x(self) -> np.ndarray:
        return self.lo + (np.arange(self.n) + 0.5) * self.h

    @property
    def faces(self) -> np.ndarray:
        return self.lo + np.arange(1, self.n) * self.h

    @property
    def edges(self) -> np.ndarray:
        return self.lo + np.arange(self.n + 1) * self.h


def normal_pdf(x: np.ndarray, mean: float, var: float) -> np.ndarray:
    return np.exp(-0.5 * (x - mean) ** 2 / var) / math.sqrt(2 * math.pi * var)


def l1_distance(p: np.ndarray, q: np.ndarray, h: float) -> float:
    """∫ |p − q| dx on a grid of spacing h (0 for equal densities, 2 for disjoint ones)."""
    return float(np.abs(np.asarray(p) - np.asarray(q)).sum() * h)


# ----------------------------------------------------------------------------------------------------------
# Finite volumes
# ----------------------------------------------------------------------------------------------------------


def fp_rhs(p: np.ndarray, grid: Grid, f_faces: np.ndarray, g2: float) -> np.ndarray:
    """−∂J/∂x on the cells for J = f p − ½ g² ∂ₓp at the inner faces (zero flux at both ends).

    ``f_faces``: the drift at the n − 1 inner faces; ``g2`` = g². Face values of p are the mean of the two cells.
    """
    h = grid.h
    flux = f_faces * 0.5 * (p[1:] + p[:-1]) - 0.5 * g2 * (p[1:] - p[:-1]) / h
    flux = np.concatenate([[0.0], flux, [0.0]])
    return -(flux[1:] - flux[:-1]) / h


def fp_solve(drift: Drift, g: Noise, p0: np.ndarray, grid: Grid, t_end: float, times=(), cfl: float = 0.2,
             t0: float = 0.0) -> dict[float, np.ndarray]:
    """Integrate the Fokker–Planck equation from ``p0`` (densities at the cell centres) to ``t_end``.

    Returns {t: p(·, t)} for every t in ``times`` (each ≤ t_end) and for ``t_end``. The time step is
    dt = cfl · h² / max g², shortened so that the requested times are hit exactly. Explicit Euler is stable for
    cfl ≤ ½ as long as the cell Péclet number |f| h / g² stays below 2 (checked: a clear error otherwise).
    """
    p = np.asarray(p0, dtype=np.float64).copy()
    if p.shape != (grid.n,):
        raise ValueError(f"p0 must hold one density value per cell, shape ({grid.n},); got {p.shape}")
    if not 0 < cfl <= 0.5:
        raise ValueError(f"cfl must lie in (0, 0.5] for the explicit scheme to be stable; got {cfl}")
    stops = sorted({float(s) for s in times} | {float(t_end)})
    if stops[0] < t0:
        raise ValueError(f"requested times {stops} start before t0 = {t0}")
    out, t = {}, t0
    for stop in stops:
        while t < stop - 1e-12:
            g2 = float(g(t)) ** 2
            if g2 <= 0:
                raise ValueError(f"g(t) must be > 0 for this diffusion solver; g({t}) = {g(t)}")
            f_faces = np.asarray(drift(grid.faces, t), dtype=np.float64)
            peclet = float(np.max(np.abs(f_faces))) * grid.h / g2
            if peclet >= 2:
                raise ValueError(f"cell Péclet number {peclet:.2f} ≥ 2 at t = {t:.3g}: refine the grid or shrink the domain")
            dt = min(cfl * grid.h ** 2 / g2, stop - t)
            p = p + dt * fp_rhs(p, grid, f_faces, g2)
            t += dt
        out[stop] = p.copy()
    return out


# ----------------------------------------------------------------------------------------------------------
# Particles
# ----------------------------------------------------------------------------------------------------------


def euler_maruyama(drift: Drift, g: Noise, x0: np.ndarray, t_end: float, dt: float,
                   rng: np.random.Generator, t0: float = 0.0) -> np.ndarray:
    """Simulate dx = f dt + g dW for every particle of ``x0`` with x ← x + f(x, t) dt + g(t) √dt z."""
    if dt <= 0 or t_end <= t0:
        raise ValueError(f"need dt > 0 and t_end > t0; got dt={dt}, t0={t0}, t_end={t_end}")
    x = np.asarray(x0, dtype=np.float64).copy()
    steps = math.ceil((t_end - t0) / dt - 1e-9)
    dt = (t_end - t0) / steps
    t = t0
    for _ in range(steps):
        x = x + drift(x, t) * dt + float(g(t)) * math.sqrt(dt) * rng.standard_normal(x.shape)
        t += dt
    return x


def histogram_density(samples: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Normalised histogram (a density: integrates to the fraction of samples inside the edges)."""
    counts, _ = np.histogram(samples, bins=edges)
    return counts / (len(samples) * np.diff(edges))


def cell_average(p_fine: np.ndarray, factor: int) -> np.ndarray:
    """Average ``factor`` neighbouring cells of a fine-grid density into one coarse bin."""
    if len(p_fine) % factor:
        raise ValueError(f"{len(p_fine)} cells cannot be grouped by {factor}")
    return p_fine.reshape(-1, factor).mean(1)


# ----------------------------------------------------------------------------------------------------------
# Closed forms used as references
# ----------------------------------------------------------------------------------------------------------


def ou_density(x: np.ndarray, t: float, theta: float, g: float, mean0: float, var0: float) -> np.ndarray:
    """Exact p(x, t) of the Ornstein–Uhlenbeck SDE dx = −θ x dt + g dW from p(x, 0) = N(mean0, var0):
    N(mean0 e^{−θt}, var0 e^{−2θt} + g²(1 − e^{−2θt})/(2θ))."""
    decay = math.exp(-theta * t)
    return normal_pdf(x, mean0 * decay, var0 * decay ** 2 + g ** 2 * (1 - decay ** 2) / (2 * theta))


@dataclass(frozen=True)
class Mixture1D:
    """p*(x) = Σ_k w_k N(μ_k, σ_k²) in 1-D, with its exact score ∂ₓ log p* (the Langevin target)."""

    means: tuple
    stds: tuple
    weights: tuple

    def pdf(self, x: np.ndarray) -> np.ndarray:
        w = np.asarray(self.weights) / np.sum(self.weights)
        return sum(wk * normal_pdf(x, m, s ** 2) for wk, m, s in zip(w, self.means, self.stds))

    def score(self, x: np.ndarray) -> np.ndarray:
        w = np.asarray(self.weights) / np.sum(self.weights)
        comps = [wk * normal_pdf(x, m, s ** 2) for wk, m, s in zip(w, self.means, self.stds)]
        num = sum(c * (m - x) / s ** 2 for c, m, s in zip(comps, self.means, self.stds))
        return num / np.maximum(sum(comps), _TINY)


# ----------------------------------------------------------------------------------------------------------
# Langevin: fixed target (the real statement) vs the evolving density (the draft's, l.307–311)
# ----------------------------------------------------------------------------------------------------------


def langevin_drift(target_score: Callable[[np.ndarray], np.ndarray]) -> Drift:
    """f(x, t) = ½ ∂ₓ log p*(x) for a fixed p* (with g = 1): p* is the stationary density."""
    return lambda x, t: 0.5 * target_score(x)


def _score_of_density_at_faces(p: np.ndarray, grid: Grid) -> np.ndarray:
    """∂ₓ log p at the inner faces, from the cell values of p (central difference of log p)."""
    logp = np.log(np.maximum(p, _TINY))
    return (logp[1:] - logp[:-1]) / grid.h


def draft_langevin_rhs(p: np.ndarray, grid: Grid) -> np.ndarray:
    """The draft's right-hand side (App. 2, l.309): −∂ₓ(½ ∂ₓ log p · p) + ½ ∂ₓ²p with p the *current* density.

    Zero up to the O(h²) discretisation for every positive p: the identity p ∂ₓ log p = ∂ₓ p."""
    return fp_rhs(p, grid, 0.5 * _score_of_density_at_faces(p, grid), 1.0)


def fixed_target_rhs(p: np.ndarray, grid: Grid, target_score: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """The Langevin right-hand side with a fixed target: −∂ₓ(½ ∂ₓ log p* · p) + ½ ∂ₓ²p; zero only at p = p*."""
    return fp_rhs(p, grid, 0.5 * target_score(grid.faces), 1.0)


def rhs_norm(rhs: np.ndarray, grid: Grid) -> float:
    """∫ |∂p/∂t| dx: how fast the density is changing (0 for a stationary density)."""
    return float(np.abs(rhs).sum() * grid.h)
