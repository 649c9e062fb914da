"""Thesis App. 2 checked: the finite-volume Fokker–Planck solution converges (to the exact Ornstein–Uhlenbeck
density, and for a nonlinear drift to a finer grid), Euler–Maruyama histograms converge to it, Langevin with a
fixed p* keeps p* and moves other densities towards it, and the draft's evolving-density version is zero for any p."""
import math

import numpy as np
import pytest

from dfs import fokker_planck as F

DOUBLE_WELL = (lambda x, t: x - x ** 3, lambda t: 0.7)       # f(x) = x − x³, g = 0.7
TARGET = F.Mixture1D((-0.8, 1.0), (0.5, 0.6), (0.7, 0.3))


def test_grid_error_against_the_exact_ou_density_falls_as_h_squared():
    theta, g, m0, v0, t = 1.0, 0.8, 1.0, 0.1, 1.0
    errors = []
    for n in (40, 80, 160):
        grid = F.Grid(-4, 4, n)
        p = F.fp_solve(lambda x, s: -theta * x, lambda s: g, F.normal_pdf(grid.x, m0, v0), grid, t)[t]
        errors.append(F.l1_distance(p, F.ou_density(grid.x, t, theta, g, m0, v0), grid.h))
        assert abs(p.sum() * grid.h - F.normal_pdf(grid.x, m0, v0).sum() * grid.h) < 1e-12   # mass conserved
    assert errors[0] > 3 * errors[1] > 9 * errors[2], errors      # second order: ×4 per halving of h


def test_ou_reference_is_the_closed_form():
    # at t = 0 it is the start, as t → ∞ the stationary N(0, g²/(2θ))
    x = np.linspace(-3, 3, 7)
    assert np.allclose(F.ou_density(x, 0.0, 1.3, 0.5, 0.4, 0.2), F.normal_pdf(x, 0.4, 0.2))
    assert np.allclose(F.ou_density(x, 50.0, 1.3, 0.5, 0.4, 0.2), F.normal_pdf(x, 0.0, 0.25 / 2.6))


def test_nonlinear_drift_grid_error_falls_against_a_finer_grid():
    drift, g = DOUBLE_WELL
    t, ref_n = 0.5, 640
    ref_grid = F.Grid(-2.5, 2.5, ref_n)
    ref = F.fp_solve(drift, g, F.normal_pdf(ref_grid.x, 0.3, 0.04), ref_grid, t)[t]
    errors = []
    for n in (80, 160):
        grid = F.Grid(-2.5, 2.5, n)
        p = F.fp_solve(drift, g, F.normal_pdf(grid.x, 0.3, 0.04), grid, t)[t]
        errors.append(F.l1_distance(p, F.cell_average(ref, ref_n // n), grid.h))
    assert errors[0] > 2.5 * errors[1], errors


def test_euler_maruyama_histogram_error_falls_with_particles():
    drift, g = DOUBLE_WELL
    t, ref_n = 1.0, 320
    ref_grid = F.Grid(-2.5, 2.5, ref_n)
    ref = F.fp_solve(drift, g, F.normal_pdf(ref_grid.x, 0.3, 0.04), ref_grid, t)[t]
    rng = np.random.default_rng(0)
    errors = []
    bins = 20       # sampling noise of the histogram ≈ √(2·bins/(π N)): 0.08 at N = 1000, 0.02 at N = 16 000
    edges = F.Grid(-2.5, 2.5, bins).edges
    for n_particles in (1000, 16000):
        x = F.euler_maruyama(drift, g, rng.normal(0.3, 0.2, n_particles), t, 5e-3, rng)
        errors.append(F.l1_distance(F.histogram_density(x, edges), F.cell_average(ref, ref_n // bins), 5 / bins))
    assert errors[0] > 2 * errors[1], errors
    assert errors[1] < 0.04, errors


def test_langevin_with_a_fixed_target_keeps_it_and_attracts_other_densities():
    grid = F.Grid(-5, 5, 200)
    pstar, p0 = TARGET.pdf(grid.x), F.normal_pdf(grid.x, 2.0, 0.25)
    drift = F.langevin_drift(TARGET.score)
    from_star = F.fp_solve(drift, lambda t: 1.0, pstar, grid, 4.0)[4.0]
    from_p0 = F.fp_solve(drift, lambda t: 1.0, p0, grid, 4.0, times=(1.0,))
    assert F.l1_distance(from_star, pstar, grid.h) < 5e-3
    d0, d1, d4 = (F.l1_distance(q, pstar, grid.h) for q in (p0, from_p0[1.0], from_p0[4.0]))
    assert d0 > d1 > d4 and d4 < 0.6 * d0, (d0, d1, d4)


def test_the_drafts_evolving_density_version_vanishes_for_every_density():
    # the draft's right-hand side is O(h²) for any density; the fixed-target one only at p*
    for n in (100, 400):
        grid = F.Grid(-5, 5, n)
        densities = [TARGET.pdf(grid.x), F.normal_pdf(grid.x, 2.0, 0.25), F.normal_pdf(grid.x, -1.0, 4.0)]
        draft = [F.rhs_norm(F.draft_langevin_rhs(p, grid), grid) for p in densities]
        fixed = [F.rhs_norm(F.fixed_target_rhs(p, grid, TARGET.score), grid) for p in densities]
        assert max(draft) < 20 * grid.h ** 2, draft
        assert fixed[0] < 20 * grid.h ** 2 and min(fixed[1:]) > 0.5, fixed


def test_mixture_score_is_the_derivative_of_log_pdf():
    x, h = np.linspace(-3, 3, 13), 1e-5
    numeric = (np.log(TARGET.pdf(x + h)) - np.log(TARGET.pdf(x - h))) / (2 * h)
    assert np.allclose(TARGET.score(x), numeric, atol=1e-6)
    assert math.isclose(TARGET.pdf(np.linspace(-10, 10, 20001)).sum() * 1e-3, 1.0, rel_tol=1e-6)


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="8 cells"):
        F.Grid(0, 1, 4)
    grid = F.Grid(-5, 5, 20)
    with pytest.raises(ValueError, match="Péclet"):
        F.fp_solve(lambda x, t: 100 * x, lambda t: 1.0, F.normal_pdf(grid.x, 0, 1), grid, 0.1)
    with pytest.raises(ValueError, match="one density value per cell"):
        F.fp_solve(lambda x, t: -x, lambda t: 1.0, np.ones(5), grid, 0.1)
