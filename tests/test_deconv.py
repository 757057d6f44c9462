"""Blind kernel estimation: the scalable EM against the dense reference (the seed's method
with N x N matrices), EM monotonicity, recovery of a known kernel, kernel metrics (the
script: test_estimate_kernel_script.py)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import random_kernel
from scipy import linalg, optimize

from gmmrestore import deconv as D
from gmmrestore.deconv import mstep
from gmmrestore.h5io import GmmRestoreError
from gmmrestore.operators import blur, blur_dense_matrix, gaussian_kernel, motion_kernel


def small_problem(rng, shape=(7, 8), s=3, n=3, eta=0.05, prior_std=0.3):
    kernel = random_kernel(rng, s)
    x = rng.random((n,) + shape)
    y = blur(x, kernel) + eta * rng.standard_normal(x.shape)
    return y, kernel, eta, prior_std


# ---------------------------------------------------------------- dense reference itself

def test_finite_difference_matrices_match_numpy_diff(rng):
    x = rng.random((4, 5))
    dh, dv = D.finite_difference_matrices(x.shape)
    np.testing.assert_allclose(dh @ x.ravel(), np.diff(x, axis=1).ravel())
    np.testing.assert_allclose(dv @ x.ravel(), np.diff(x, axis=0).ravel())


def test_tap_selectors_rebuild_the_convolution_matrix(rng):
    kernel = random_kernel(rng, 3)
    S = D.tap_selection_matrices(3, (5, 6))
    T = np.tensordot(kernel.ravel(), S, axes=1)
    np.testing.assert_allclose(T, blur_dense_matrix(kernel, (5, 6)), atol=1e-15)


def test_reference_estep_solves_the_normal_equations(rng):
    y, kernel, eta, ps = small_problem(rng)
    mu, C = D.reference_estep(y, kernel, eta, ps)
    A = D.reference_precision(kernel, y.shape[1:], eta, ps)
    T = blur_dense_matrix(kernel, y.shape[1:])
    for yi, mi in zip(y, mu, strict=True):
        np.testing.assert_allclose(A @ mi.ravel(), T.T @ yi.ravel() / eta**2, rtol=1e-9)
    np.testing.assert_allclose(C @ A, np.eye(len(A)), atol=1e-9)


def test_reference_objective_is_the_log_marginal_likelihood(rng):
    """At the exact E-step the ELBO equals log p(y | k) in closed form."""
    y, kernel, eta, ps = small_problem(rng, n=1)
    shape = y.shape[1:]
    N = shape[0] * shape[1]
    R = D._n_grad_rows(shape)
    A = D.reference_precision(kernel, shape, eta, ps)
    b = blur_dense_matrix(kernel, shape).T @ y.ravel() / eta**2
    logdet_A = 2 * np.sum(np.log(np.diag(linalg.cholesky(A))))
    logml = (0.5 * b @ np.linalg.solve(A, b) - 0.5 * y.ravel() @ y.ravel() / eta**2
             + N / 2 * np.log(2 * np.pi) - 0.5 * logdet_A
             - N / 2 * np.log(2 * np.pi * eta**2) - R / 2 * np.log(2 * np.pi * ps**2))
    mu, C = D.reference_estep(y, kernel, eta, ps)
    assert D.reference_objective(y, kernel, mu, C, eta, ps) == pytest.approx(logml, rel=1e-10)
    # any other q gives a lower bound
    assert D.reference_objective(y, kernel, mu + 0.01, C, eta, ps) < logml


def test_reference_mstep_is_the_expected_data_term(rng):
    """k^T A k - 2 b^T k + |y|^2 = E_q |k * x - y|^2, checked by Monte Carlo-free algebra:
    E|Tx - y|^2 = |T mu - y|^2 + tr(T C T^T)."""
    y, kernel, eta, ps = small_problem(rng, n=2)
    mu, C = D.reference_estep(y, kernel, eta, ps)
    A, b = D.reference_mstep_system(y, mu, C, 3)
    k = random_kernel(rng, 3)
    T = blur_dense_matrix(k, y.shape[1:])
    expected = sum(np.sum((T @ m.ravel() - yi.ravel()) ** 2) + np.trace(T @ C @ T.T)
                   for yi, m in zip(y, mu, strict=True))
    assert k.ravel() @ A @ k.ravel() - 2 * b @ k.ravel() + np.sum(y**2) == \
        pytest.approx(expected, rel=1e-10)


# ------------------------------------------------------------- fast against reference

@pytest.mark.parametrize("precondition", [True, False])
def test_estep_mean_matches_reference(rng, precondition):
    y, kernel, eta, ps = small_problem(rng, shape=(9, 8), n=4)
    mu_ref, _ = D.reference_estep(y, kernel, eta, ps)
    mu, info = D.estep_mean(y, kernel, eta, ps, tol=1e-13, precondition=precondition)
    np.testing.assert_allclose(mu, mu_ref, atol=1e-8 * np.abs(mu_ref).max())
    assert info["residual"] <= 1e-13
    # single image, warm start
    mu1, _ = D.estep_mean(y[0], kernel, eta, ps, x0=mu_ref[0] + 0.1, tol=1e-13)
    np.testing.assert_allclose(mu1, mu_ref[0], atol=1e-8 * np.abs(mu_ref).max())


def test_fft_convolution_path_matches_operators_blur(rng):
    kernel = random_kernel(rng, 9)  # 81 taps: FFT path
    assert kernel.size >= D.FFT_MIN_TAPS
    x = rng.random((2, 12, 11))
    np.testing.assert_allclose(D._conv(x, kernel), blur(x, kernel), atol=1e-13)
    u = rng.random((2, 12, 11))
    assert np.sum(D._conv(x, kernel) * u) == pytest.approx(np.sum(x * D._corr(u, kernel)))


def test_estep_mean_large_kernel_matches_reference(rng):
    y, kernel, eta, ps = small_problem(rng, shape=(10, 10), s=9, n=2)
    mu_ref, _ = D.reference_estep(y, kernel, eta, ps)
    mu, _ = D.estep_mean(y, kernel, eta, ps, tol=1e-13)
    np.testing.assert_allclose(mu, mu_ref, atol=1e-8 * np.abs(mu_ref).max())


def test_meanfield_variance_is_inverse_precision_diagonal_and_a_lower_bound(rng):
    y, kernel, eta, ps = small_problem(rng)
    shape = y.shape[1:]
    A = D.reference_precision(kernel, shape, eta, ps)
    var = D.estep_variance(kernel, shape, eta, ps)
    np.testing.assert_allclose(var.ravel(), 1.0 / np.diag(A), rtol=1e-12)
    _, C = D.reference_estep(y, kernel, eta, ps)
    assert np.all(var.ravel() <= np.diag(C) * (1 + 1e-12))


def test_stationary_covariance_approximates_exact_interior_covariance(rng):
    """The periodic-model covariance is close to the exact zero-boundary one away from the
    border (loose check: it is an approximation, not the exact diagonal)."""
    shape = (15, 15)
    kernel = gaussian_kernel(3, 0.8)
    eta, ps = 0.05, 0.3
    C = np.linalg.inv(D.reference_precision(kernel, shape, eta, ps))
    ac = D.stationary_covariance(kernel, shape, eta, ps, 1)
    centre = 7 * 15 + 7
    exact = np.array([[C[centre, centre - 15 - 1 + 15 * i + j] for j in range(3)]
                      for i in range(3)])
    np.testing.assert_allclose(ac, exact, rtol=0.25)
    var = D.estep_variance(kernel, shape, eta, ps)
    assert var[7, 7] < 0.9 * C[centre, centre]  # mean field underestimates more


def test_mstep_system_meanfield_matches_reference(rng):
    y, kernel, eta, ps = small_problem(rng, shape=(7, 9), n=3)
    mu, _ = D.reference_estep(y, kernel, eta, ps)
    var = D.estep_variance(kernel, y.shape[1:], eta, ps)
    A_ref, b_ref = D.reference_mstep_system(y, mu, np.diag(var.ravel()), 3)
    A, b = D.mstep_system(y, mu, var, 3)
    np.testing.assert_allclose(A, A_ref, atol=1e-8 * np.abs(A_ref).max(), rtol=0)
    np.testing.assert_allclose(b, b_ref, atol=1e-8 * np.abs(b_ref).max(), rtol=0)
    # per-image variances and tiny chunks give the same system
    A2, b2 = D.mstep_system(y, mu, np.broadcast_to(var, y.shape), 3, chunk_bytes=1)
    np.testing.assert_allclose(A2, A_ref, atol=1e-8 * np.abs(A_ref).max(), rtol=0)
    np.testing.assert_allclose(b2, b_ref, atol=1e-8 * np.abs(b_ref).max(), rtol=0)


@pytest.mark.parametrize("s", [3, 5])
def test_mstep_system_stationary_matches_reference(rng, s):
    y, kernel, eta, ps = small_problem(rng, shape=(8, 7), s=s, n=2)
    mu, _ = D.reference_estep(y, kernel, eta, ps)
    ac = D.stationary_covariance(kernel, y.shape[1:], eta, ps, s - 1)
    # the same covariance as a dense matrix: C[q1, q2] = ac[q2 - q1] within the offsets
    r, c = np.divmod(np.arange(56), 7)
    dr, dc = r[None, :] - r[:, None], c[None, :] - c[:, None]
    m = s - 1
    inside = (np.abs(dr) <= m) & (np.abs(dc) <= m)
    C = np.where(inside, ac[np.clip(dr + m, 0, 2 * m), np.clip(dc + m, 0, 2 * m)], 0.0)
    A_ref, b_ref = D.reference_mstep_system(y, mu, C, s)
    A, b = D.mstep_system(y, mu, None, s, autocov=ac)
    np.testing.assert_allclose(A, A_ref, atol=1e-8 * np.abs(A_ref).max(), rtol=0)
    np.testing.assert_allclose(b, b_ref, atol=1e-8 * np.abs(b_ref).max(), rtol=0)


def test_em_objective_matches_reference_with_diagonal_covariance(rng):
    y, kernel, eta, ps = small_problem(rng)
    mu, _ = D.reference_estep(y, kernel, eta, ps)
    var = D.estep_variance(kernel, y.shape[1:], eta, ps)
    ref = D.reference_objective(y, kernel, mu, np.diag(var.ravel()), eta, ps)
    assert D.em_objective(y, kernel, mu, var, eta, ps) == pytest.approx(ref, rel=1e-12)


# ------------------------------------------------------------------- spectral prior

def test_spectral_prior_is_restricted_circulant(rng):
    shape, grid = (5, 6), (9, 11)
    prior = D.SpectralPrior.from_images(rng.random((7,) + shape), grid=grid)
    q = np.fft.irfft2(prior.precision, s=grid)  # first column of Circ(1 / spectrum)
    r, c = np.divmod(np.arange(30), 6)
    dense = q[(r[:, None] - r[None, :]) % grid[0], (c[:, None] - c[None, :]) % grid[1]]
    np.testing.assert_allclose(prior.dense(shape), dense, atol=1e-12 * np.abs(dense).max())
    x = rng.random((2,) + shape)
    np.testing.assert_allclose(prior.apply(x).reshape(2, -1), x.reshape(2, -1) @ dense,
                               atol=1e-10 * np.abs(dense).max())
    np.testing.assert_allclose(prior.diag(shape), np.diag(dense).reshape(shape))
    assert np.all(np.linalg.eigvalsh(dense) > 0)


def test_spectral_prior_of_impulses_is_white():
    x = np.zeros((1, 4, 6))
    x[0, 2, 3] = 1.0
    prior = D.SpectralPrior.from_images(x)
    np.testing.assert_allclose(prior.dense((4, 6)), 24 * np.eye(24), atol=1e-9)
    with pytest.raises(GmmRestoreError, match="learned for"):
        prior.apply(np.zeros((1, 5, 6)))


def test_fast_matches_reference_with_spectral_prior(rng, digits):
    y, kernel, eta, _ = small_problem(rng, shape=(8, 9), n=3)
    prior = D.SpectralPrior.from_images(digits[:40, 10:18, 10:19])
    mu_ref, C = D.reference_estep(y, kernel, eta, prior)
    mu, _ = D.estep_mean(y, kernel, eta, prior, tol=1e-13)
    np.testing.assert_allclose(mu, mu_ref, atol=1e-8 * np.abs(mu_ref).max())
    var = D.estep_variance(kernel, y.shape[1:], eta, prior)
    A = D.reference_precision(kernel, y.shape[1:], eta, prior)
    np.testing.assert_allclose(var.ravel(), 1.0 / np.diag(A), rtol=1e-10)
    assert np.all(var.ravel() <= np.diag(C) * (1 + 1e-10))
    ref = D.reference_objective(y, kernel, mu_ref, np.diag(var.ravel()), eta, prior)
    assert D.em_objective(y, kernel, mu_ref, var, eta, prior) == pytest.approx(ref, rel=1e-10)
    A_ref, b_ref = D.reference_mstep_system(y, mu_ref, np.diag(var.ravel()), 3)
    A_k, b_k = D.mstep_system(y, mu, var, 3)
    np.testing.assert_allclose(A_k, A_ref, atol=1e-8 * np.abs(A_ref).max(), rtol=0)
    np.testing.assert_allclose(b_k, b_ref, atol=1e-8 * np.abs(b_ref).max(), rtol=0)


def test_project_kernel_clips_and_normalises(rng):
    k = rng.standard_normal((5, 5))
    np.testing.assert_allclose(mstep.project_kernel(k), np.maximum(k, 0) / np.maximum(k, 0).sum())
    delta = mstep.project_kernel(-np.ones((3, 3)))
    assert delta[1, 1] == 1.0 and delta.sum() == 1.0
    flat = mstep.project_kernel(-np.ones(9))
    assert flat[4] == 1.0 and flat.sum() == 1.0


# ------------------------------------------------------------------------ M-step QP

@pytest.mark.parametrize("seed", range(4))
def test_simplex_qp_is_exact(seed):
    rng = np.random.default_rng(seed)
    t = 9
    M = rng.standard_normal((30, t))
    A = M.T @ M
    b = rng.standard_normal(t) * 3
    k = D.solve_kernel_qp(A, b)
    assert np.all(k >= 0) and k.sum() == pytest.approx(1.0, abs=1e-12)

    def f(v):
        return v @ A @ v - 2 * b @ v

    best = min((optimize.minimize(f, x0, jac=lambda v: 2 * A @ v - 2 * b, method="SLSQP",
                                  bounds=[(0, None)] * t,
                                  constraints=[{"type": "eq", "fun": lambda v: v.sum() - 1}],
                                  options={"ftol": 1e-15, "maxiter": 1000})
                for x0 in (np.full(t, 1 / t), np.eye(t)[seed])), key=lambda r: r.fun)
    assert f(k) <= best.fun + 1e-9 * abs(best.fun)
    # KKT: gradient equal on the support, not smaller off it
    g = A @ k - b
    support = k > 1e-12
    assert np.ptp(g[support]) < 1e-8 * np.abs(g).max()
    assert np.all(g[~support] >= g[support].min() - 1e-8 * np.abs(g).max())


def test_nnls_constraint_is_normalised_nnls(rng):
    M = rng.standard_normal((20, 9))
    z = rng.random(20)
    k = D.solve_kernel_qp(M.T @ M, M.T @ z, constraint="nnls")
    ref = optimize.nnls(M, z)[0]
    np.testing.assert_allclose(k, ref / ref.sum(), atol=1e-10)
    with pytest.raises(GmmRestoreError, match="constraint"):
        D.solve_kernel_qp(M.T @ M, M.T @ z, constraint="bogus")


def test_nnls_constraint_without_a_positive_solution_is_the_delta_of_project_kernel(rng):
    """No positive correlation with the data (b < 0, so k = 0 satisfies the KKT conditions
    of the convex problem): the kernel is the same centred delta as the projection's
    fallback."""
    M = rng.standard_normal((20, 9))
    A = M.T @ M + np.eye(9)
    k = D.solve_kernel_qp(A, -np.abs(rng.random(9)) - 0.1, constraint="nnls")
    np.testing.assert_array_equal(k, np.eye(9)[4])
    np.testing.assert_array_equal(k, mstep.project_kernel(np.zeros(9)))


# -------------------------------------------------------------------- monotone EM

def test_reference_em_increases_the_marginal_likelihood(rng):
    y, kernel, eta, ps = small_problem(rng, shape=(8, 8), n=3, eta=0.02)
    _, history = D.reference_em(y, gaussian_kernel(3, 1.0), eta, ps, n_iter=8)
    assert np.all(np.diff(history) >= -1e-9 * np.abs(history).max())
    assert history[-1] > history[0]


@pytest.mark.parametrize("prior", ["gradient", "spectral"])
def test_fast_meanfield_em_objective_does_not_decrease(rng, digits, prior):
    y = blur(digits[:10], gaussian_kernel(5, 1.0)) + 0.02 * rng.standard_normal((10, 28, 28))
    p = 0.3 if prior == "gradient" else D.SpectralPrior.from_images(digits[20:60])
    kernel, mu = gaussian_kernel(5, 0.6), None
    history = []
    for _ in range(8):
        kernel, mu, obj, _ = D._em_step(y, kernel, mu, 0.03, p, covariance="meanfield",
                                        constraint="simplex", cg_tol=1e-10, cg_maxiter=1000)
        history.append(obj)
    history = np.array(history)
    assert np.all(np.diff(history) >= -1e-9 * np.abs(history).max()), np.diff(history)
    assert history[-1] > history[0]


# ----------------------------------------------------------- recovery, flips, shifts

@pytest.mark.parametrize("kernel,prior", [(gaussian_kernel(5, 1.0), "gradient"),
                                          (motion_kernel(5, 30, 5), "spectral")],
                         ids=["gaussian-gradient-prior", "motion-spectral-prior"])
def test_known_kernel_is_recovered(rng, digits, kernel, prior):
    y = blur(digits[:50], kernel) + 0.01 * rng.standard_normal((50, 28, 28))
    prior_images = digits[100:400] if prior == "spectral" else None
    k_est, info = D.estimate_kernel(y, 5, prior_images=prior_images)
    assert k_est.shape == (5, 5) and np.all(k_est >= 0)
    assert k_est.sum() == pytest.approx(1.0)
    assert D.kernel_error(k_est, kernel) < 0.25
    assert info["levels"][-1] == (5, 28, 28) and info["levels"][0][0] == 3
    assert info["noise_floor"] == pytest.approx(0.01, rel=0.3)
    assert len(info["objective"]) == len(info["levels"]) * len(info["noise_schedule"]) * 5


def test_flip_check_keeps_the_better_orientation(rng, digits):
    """Started from the 180-degree rotation of an asymmetric kernel, the flip check must
    come back to the right orientation (the zero boundary and the black background make the
    two orientations distinguishable)."""
    kernel = np.zeros((5, 5))
    kernel[2, 1:4] = [0.6, 0.3, 0.1]
    kernel[1, 3] = 0.0
    y = blur(digits[:40], kernel) + 0.01 * rng.standard_normal((40, 28, 28))
    k_est, info = D.estimate_kernel(
        y, 5, D.GaussianBlindSettings(n_levels=1, noise_schedule=(0.01,)),
        init_kernel=kernel[::-1, ::-1])
    assert D.kernel_error(k_est, kernel) < D.kernel_error(k_est, kernel[::-1, ::-1])


def test_kernel_error_is_zero_for_shifted_and_scaled_copies(rng):
    k = random_kernel(rng, 5)
    big = np.zeros((9, 9))
    big[3:8, 1:6] = 2.5 * k
    assert D.kernel_error(big, k) == pytest.approx(0.0, abs=1e-7)
    assert D.kernel_error(k, big) == pytest.approx(0.0, abs=1e-7)
    other = random_kernel(rng, 5)
    direct = np.linalg.norm(other - k) / np.linalg.norm(k)
    assert 0 < D.kernel_error(other, k) <= direct + 1e-12
    assert D.kernel_error(np.ones((1, 1)), np.ones((1, 1))) == 0.0


def test_recenter_kernel_moves_centre_of_mass_to_the_middle(rng):
    k = np.zeros((7, 7))
    k[0:3, 4:7] = random_kernel(rng, 3)
    out = D.recenter_kernel(k)
    r = np.arange(7) @ out.sum(axis=1)
    c = np.arange(7) @ out.sum(axis=0)
    assert abs(r - 3) <= 0.5 and abs(c - 3) <= 0.5
    assert D.kernel_error(out, k) == pytest.approx(0.0, abs=1e-7)


def brute_force_recentring(k, max_lost):
    """Try every placement (dr, dc) on the support, the full shift towards centring the
    centre of mass first; keep the largest shift per axis that loses at most max_lost of
    the mass along that axis."""
    k = k / k.sum()
    n0, n1 = k.shape
    best = []
    for axis, n in ((1, n0), (0, n1)):
        mass = k.sum(axis=axis)
        want = int(np.round(n // 2 - np.arange(n) @ mass))
        chosen = 0
        for d in range(1, abs(want) + 1):
            shifted = np.zeros(3 * n)
            shifted[n + np.sign(want) * d:2 * n + np.sign(want) * d] = mass
            if mass.sum() - shifted[n:2 * n].sum() > max_lost + 1e-12:
                break
            chosen = int(np.sign(want)) * d
        best.append(chosen)
    canvas = np.zeros((3 * n0, 3 * n1))
    canvas[n0 + best[0]:2 * n0 + best[0], n1 + best[1]:2 * n1 + best[1]] = k
    out = canvas[n0:2 * n0, n1:2 * n1]
    return out / out.sum()


@pytest.mark.parametrize("max_lost", [0.0, 0.02, 0.1, 1.0])
def test_recenter_kernel_limited_loss_matches_brute_force(rng, max_lost):
    for _ in range(30):
        n = int(rng.integers(3, 10))
        m = int(rng.integers(1, n + 1))
        r, c = rng.integers(0, n - m + 1, 2)
        k = np.zeros((n, n))
        k[r:r + m, c:c + m] = rng.random((m, m)) * (rng.random((m, m)) < 0.7) + 1e-3
        np.testing.assert_allclose(D.recenter_kernel(k, max_lost),
                                   brute_force_recentring(k, max_lost), atol=1e-12)


def test_recenter_kernel_keeps_a_kernel_that_fills_its_support():
    # a hook: its centre of mass is off the middle although it spans the whole 9 x 9
    hook = np.zeros((9, 9))
    hook[0, :] = 1.0
    hook[:, 0] = 1.0
    hook[0:3, 0:3] += 2.0
    hook /= hook.sum()
    np.testing.assert_allclose(D.recenter_kernel(hook, max_lost=0.0), hook, atol=1e-15)
    cut = D.recenter_kernel(hook)           # the full shift drops the hook's far ends
    assert cut[0, :].sum() < hook[0, :].sum() and D.kernel_error(cut, hook) > 0.1
    with pytest.raises(GmmRestoreError, match="max_lost"):
        D.recenter_kernel(hook, max_lost=1.5)


def brute_force_kernel_error(k_est, k_true):
    """min over every overlapping integer placement of |a - b| / |b|, both summing to 1,
    each placement drawn explicitly on a zero canvas."""
    a, b = k_est / k_est.sum(), k_true / k_true.sum()
    (ha, wa), (hb, wb) = a.shape, b.shape
    best = np.inf
    for r in range(hb + ha - 1):
        for c in range(wb + wa - 1):
            canvas_a = np.zeros((hb + 2 * (ha - 1), wb + 2 * (wa - 1)))
            canvas_b = np.zeros_like(canvas_a)
            canvas_b[ha - 1:ha - 1 + hb, wa - 1:wa - 1 + wb] = b
            canvas_a[r:r + ha, c:c + wa] = a
            best = min(best, np.linalg.norm(canvas_a - canvas_b) / np.linalg.norm(b))
    return best


@pytest.mark.parametrize("shapes", [((5, 5), (5, 5)), ((3, 5), (7, 7)), ((9, 9), (5, 3))])
def test_kernel_error_matches_brute_force_shift_search(rng, shapes):
    for _ in range(5):
        k_est = rng.random(shapes[0]) ** 3
        k_true = rng.random(shapes[1]) ** 3
        assert D.kernel_error(k_est, k_true) == pytest.approx(
            brute_force_kernel_error(k_est, k_true), rel=1e-10, abs=1e-12)


def test_error_ratio(rng):
    clean = rng.random((2, 5, 5))
    true = clean + 0.1
    est = clean + 0.2
    assert D.error_ratio(est, true, clean) == pytest.approx(4.0)
    assert D.error_ratio(true, true, clean) == pytest.approx(1.0)


def test_error_ratio_matches_the_ssd_formula(rng):
    clean = rng.random((4, 6, 7))
    est = clean + 0.2 * rng.standard_normal(clean.shape)
    true = clean + 0.1 * rng.standard_normal(clean.shape)
    per_image = D.error_ratio(est, true, clean, per_image=True)
    assert per_image.shape == (4,)
    for i in range(4):
        ssd_est = sum((est[i, r, c] - clean[i, r, c]) ** 2 for r in range(6) for c in range(7))
        ssd_true = sum((true[i, r, c] - clean[i, r, c]) ** 2 for r in range(6) for c in range(7))
        assert per_image[i] == pytest.approx(ssd_est / ssd_true, rel=1e-12)
    pooled = np.sum((est - clean) ** 2) / np.sum((true - clean) ** 2)
    assert D.error_ratio(est, true, clean) == pytest.approx(pooled, rel=1e-12)
    # an exact true-kernel restoration: inf when the blind one is not exact, else 1
    exact = D.error_ratio(np.stack([est[0], clean[1]]), clean[:2], clean[:2], per_image=True)
    assert exact[0] == np.inf and exact[1] == 1.0
    with pytest.raises(GmmRestoreError, match="one shape"):
        D.error_ratio(est, true[:3], clean)


def test_blind_scores_shifted_ratio_forgives_a_translated_restoration(rng):
    clean = rng.random((2, 70, 72))
    true = clean + 0.05 * rng.standard_normal(clean.shape)
    est = np.roll(clean, (1, -2), axis=(1, 2)) + 0.1 * rng.standard_normal(clean.shape)
    k = gaussian_kernel(5, 1.0)
    scores = D.blind_scores(clean, est, true, k[None], np.zeros(2, dtype=int), k)
    for i in range(2):
        m = 13  # border 10 + shifts 3
        inner = clean[i, m:-m, m:-m]
        best = min(np.sum((est[i, m + a:70 - m + a, m + b:72 - m + b] - inner) ** 2)
                   for a in range(-3, 4) for b in range(-3, 4))
        ref = min(np.sum((true[i, m + a:70 - m + a, m + b:72 - m + b] - inner) ** 2)
                  for a in range(-3, 4) for b in range(-3, 4))
        assert scores["shifted_error_ratio"][i] == pytest.approx(best / ref, rel=1e-12)
        assert 3.0 < scores["shifted_error_ratio"][i] < 5.0 < scores["error_ratio"][i]


def test_blind_scores_use_each_image_batch_kernel(rng):
    n = 9
    clean = rng.random((n, 6, 6))
    est = clean + 0.3 * rng.standard_normal(clean.shape)
    true = clean + 0.1 * rng.standard_normal(clean.shape)
    k_true = gaussian_kernel(5, 1.0)
    batch_kernels = np.stack([random_kernel(rng, 5), k_true, random_kernel(rng, 5)])
    batch_index = np.array([2, 0, 1, 1, 0, 2, 2, 0, 1])
    scores = D.blind_scores(clean, est, true, batch_kernels, batch_index, k_true)
    np.testing.assert_array_equal(scores["kernel_batch"], batch_index)
    for i in range(n):
        b = batch_index[i]
        # abs: the square root of a rounding-level difference for identical kernels
        assert scores["kernel_error"][i] == pytest.approx(
            brute_force_kernel_error(batch_kernels[b], k_true), rel=1e-10, abs=1e-7)
        assert scores["error_ratio"][i] == pytest.approx(
            np.sum((est[i] - clean[i]) ** 2) / np.sum((true[i] - clean[i]) ** 2), rel=1e-12)
        members = batch_index == b
        assert scores["batch_error_ratio"][i] == pytest.approx(
            np.sum((est[members] - clean[members]) ** 2)
            / np.sum((true[members] - clean[members]) ** 2), rel=1e-12)
    assert scores["kernel_error"][2] == pytest.approx(0.0, abs=1e-7)
    assert np.all(np.isnan(scores["shifted_error_ratio"]))  # digits: too small to shift
    with pytest.raises(GmmRestoreError, match="batch_index"):
        D.blind_scores(clean, est, true, batch_kernels, batch_index[:5], k_true)
    with pytest.raises(GmmRestoreError, match=r"\[0, 3\)"):
        D.blind_scores(clean, est, true, batch_kernels, batch_index + 1, k_true)


def test_pyramid_levels_are_odd_and_shrink_by_sqrt2():
    levels = D.pyramid_levels(15, (255, 255))
    assert [ks for ks, _ in levels] == [3, 5, 7, 11, 15]
    assert levels[-1][1] == (255, 255)
    for (_, a), (_, b) in zip(levels[:-1], levels[1:], strict=True):
        assert a[0] / b[0] == pytest.approx(2**-0.5, abs=0.02)
    assert D.pyramid_levels(7, (28, 28), n_levels=1) == [(7, (28, 28))]


def test_noise_estimate(rng):
    y = 0.03 * rng.standard_normal((5, 40, 40))
    assert D.estimate_noise_sigma(y) == pytest.approx(0.03, rel=0.1)


def test_bad_inputs_raise_clear_errors(rng):
    y = rng.random((2, 10, 10))
    with pytest.raises(GmmRestoreError, match="odd"):
        D.estimate_kernel(y, 4)
    with pytest.raises(GmmRestoreError, match="schedule"):
        D.estimate_kernel(y, 3, D.GaussianBlindSettings(noise_schedule=()))
    with pytest.raises(GmmRestoreError, match="NaN"):
        D.estimate_kernel(np.full((2, 10, 10), np.nan), 3)
    with pytest.raises(GmmRestoreError, match="covariance"):
        D.estimate_kernel(y, 3, D.GaussianBlindSettings(covariance="full"))
    with pytest.raises(GmmRestoreError, match="sizes must match"):
        D.estimate_kernel(y, 3, prior_images=rng.random((3, 8, 8)))
    with pytest.raises(GmmRestoreError, match="prior std"):
        D.estimate_kernel(y, 3, D.GaussianBlindSettings(prior_std=0.0))


def test_deconvolve_gaussian_beats_the_blurred_input(rng, digits):
    kernel = gaussian_kernel(5, 1.0)
    y = blur(digits[:10], kernel) + 0.01 * rng.standard_normal((10, 28, 28))
    x = D.deconvolve_gaussian(y, kernel, 0.01, prior=0.3)
    assert np.sum((x - digits[:10]) ** 2) < 0.5 * np.sum((y - digits[:10]) ** 2)
