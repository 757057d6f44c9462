"""Blind deblurring of photographs: valid model, sparse gradient prior, variational EM,
hyper-Laplacian restoration and the field's scores, against dense references."""

import numpy as np
import pytest
from scipy import stats

from gmmrestore import deconv as D
from gmmrestore.deconv import nonblind, sparse, sparse_pyramid, valid
from gmmrestore.deconv.scores import shifted_error_ratio, ssd_upto_shift, success_rates
from gmmrestore.h5io import GmmRestoreError
from gmmrestore.operators import blur_valid, blur_valid_adjoint, gaussian_kernel, quantize


@pytest.fixture
def rng():
    return np.random.default_rng(21)


def curved_kernel(size: int = 9) -> np.ndarray:
    """An asymmetric camera-shake-like kernel: a quarter-circle arc with a heavier end,
    rasterised with bilinear weights (drawn here, not by the library)."""
    k = np.zeros((size, size))
    r = size - 2.0
    for t in np.linspace(0.0, np.pi / 2, 200):
        pr, pc = 0.5 + r * (1 - np.cos(t)), 0.5 + r * np.sin(t) * 0.8
        i, j = int(pr), int(pc)
        fr, fc = pr - i, pc - j
        wgt = 1.0 + 2.0 * (t > np.pi / 3)
        for di, dj, ww in ((0, 0, (1 - fr) * (1 - fc)), (1, 0, fr * (1 - fc)),
                           (0, 1, (1 - fr) * fc), (1, 1, fr * fc)):
            if i + di < size and j + dj < size:
                k[i + di, j + dj] += wgt * ww
    k = D.recenter_kernel(k)
    return k / k.sum()


def blocky_image(rng, shape, n_rect=40) -> np.ndarray:
    """A piecewise-constant image (sparse gradients): random overlapping rectangles."""
    x = np.full(shape, 0.5)
    for _ in range(n_rect):
        r0, c0 = rng.integers(0, shape[0] - 4), rng.integers(0, shape[1] - 4)
        h, w = rng.integers(3, shape[0] // 2), rng.integers(3, shape[1] // 2)
        x[r0:r0 + h, c0:c0 + w] = rng.uniform(0.0, 1.0)
    return x


def blurred_blocks(rng, size=9) -> tuple[np.ndarray, np.ndarray]:
    """A blocky 88x88 scene blurred by :func:`curved_kernel` (valid), 1% noise, 8 bits;
    returns the photograph and the kernel."""
    k = curved_kernel(size)
    scene = blocky_image(rng, (88, 88), n_rect=60)
    n = 88 - size + 1
    return quantize(blur_valid(scene, k) + 0.01 * rng.standard_normal((n, n)), 8), k


# ---------------------------------------------------------------- valid observation model

def test_valid_convolution_matches_operators_and_dense_matrix(rng):
    k = rng.random((5, 5))
    x = rng.random((9, 11))
    np.testing.assert_allclose(valid.conv_valid(x, k), blur_valid(x, k), atol=1e-12)
    big = rng.random((11, 11))  # FFT path (121 taps)
    xb = rng.random((20, 23))
    np.testing.assert_allclose(valid.conv_valid(xb, big), blur_valid(xb, big), atol=1e-12)
    u = rng.random((5, 7))
    np.testing.assert_allclose(valid.corr_full(u, k), blur_valid_adjoint(u, k), atol=1e-12)
    T = valid.valid_conv_matrix(k, x.shape)
    np.testing.assert_allclose(T @ x.ravel(), valid.conv_valid(x, k).ravel(), atol=1e-12)
    np.testing.assert_allclose(np.diag(T.T @ T).reshape(x.shape),
                               valid.valid_tap_counts(k, (5, 7)), atol=1e-12)
    for kern, img in ((k, x), (big, xb)):
        op = valid.ValidConvolution(kern, img.shape)
        stack = np.stack([img, 2 * img])
        np.testing.assert_allclose(op.forward(stack), valid.conv_valid(stack, kern), atol=1e-11)
        out = rng.random(op.forward(img).shape)
        np.testing.assert_allclose(op.adjoint(out), valid.corr_full(out, kern), atol=1e-11)


# a core window shared by all taps (s = 3, 5 on 6 x 7; 12 x 9), core rows only (12 x 3),
# none (s = 7), none and images smaller than the edge bands (3 x 4)
@pytest.mark.parametrize(("s", "h", "w"), [(3, 6, 7), (5, 6, 7), (7, 6, 7), (5, 12, 9), (5, 12, 3),
                                           (7, 3, 4)])
def test_valid_mstep_system_is_the_expected_squared_residual(rng, s, h, w):
    y = rng.random((2, h, w))
    mu = rng.standard_normal((2, h + s - 1, w + s - 1))
    var = rng.random(mu.shape)
    A, b = valid.valid_mstep_system(y, mu, var, s)
    for _ in range(3):
        k = rng.random((s, s))
        T = valid.valid_conv_matrix(k, mu.shape[1:])
        dense = sum(np.sum((T @ m.ravel() - yi.ravel()) ** 2) + np.sum(v.ravel() * np.diag(T.T @ T))
                    for yi, m, v in zip(y, mu, var, strict=True))
        kk = k.ravel()
        assert kk @ A @ kk - 2 * b @ kk + np.sum(y**2) == pytest.approx(dense, rel=1e-10)
    np.testing.assert_allclose(A, A.T)


def test_valid_mstep_rejects_mismatched_shapes(rng):
    with pytest.raises(GmmRestoreError, match="expected"):
        valid.valid_mstep_system(rng.random((1, 5, 5)), rng.random((1, 5, 5)), None, 3)


# ---------------------------------------------------------------- the scale mixture prior

def test_responsibilities_and_log_pdf_match_scipy(rng):
    mix = sparse.ScaleMixture((0.5, 0.3, 0.2), (0.01, 0.05, 0.2))
    z = rng.standard_normal(50) * 0.1
    dens = np.array([w * stats.norm.pdf(z, 0, s) for w, s in zip(mix.w, mix.s, strict=True)])
    np.testing.assert_allclose(mix.log_pdf(z), np.log(dens.sum(axis=0)), rtol=1e-10)
    np.testing.assert_allclose(sparse.responsibilities(z**2, mix), dens / dens.sum(axis=0),
                               rtol=1e-10)


def test_fit_scale_mixture_recovers_a_known_mixture(rng):
    w_true, s_true = np.array([0.6, 0.3, 0.1]), np.array([0.01, 0.05, 0.25])
    labels = rng.choice(3, size=100_000, p=w_true)
    z = rng.standard_normal(len(labels)) * s_true[labels]
    mix = sparse.fit_scale_mixture(z, 3)
    order = np.argsort(mix.s)
    np.testing.assert_allclose(mix.s[order], s_true, rtol=0.06)
    np.testing.assert_allclose(mix.w[order], w_true, atol=0.03)


def test_scale_mixture_rejects_bad_parameters():
    with pytest.raises(GmmRestoreError, match="sum to 1"):
        sparse.ScaleMixture((0.5, 0.6), (0.1, 0.2))


# ---------------------------------------------------------------- variational E-step, F

def test_sparse_estep_matches_the_dense_reference(rng):
    s, h, w = 3, 5, 6
    k = rng.random((s, s))
    k /= k.sum()
    yf = rng.standard_normal((1, h, w)) * 0.1
    mix = sparse.ScaleMixture((0.5, 0.5), (0.02, 0.2))
    state = sparse.VariationalState(rng.standard_normal((1, h + 2, w + 2)) * 0.05,
                                    rng.random((1, h + 2, w + 2)) * 1e-3, None)
    new, _ = sparse.sparse_estep(yf, k, state, 0.03, mix, cg_iter=500, cg_tol=1e-13)
    prec = sparse.prior_precision(state.mu**2 + state.var, mix)
    mu_ref, var_ref = sparse.reference_sparse_estep(yf[0], k, prec[0], 0.03)
    np.testing.assert_allclose(new.mu[0], mu_ref, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(new.var[0], var_ref, rtol=1e-12)
    np.testing.assert_allclose(new.prec, prec)


def test_free_energy_data_term_matches_dense(rng):
    s, h, w = 3, 4, 5
    k = rng.random((s, s))
    yf = rng.standard_normal((1, h, w))
    mu = rng.standard_normal((1, h + 2, w + 2))
    var = rng.random(mu.shape) + 0.1
    mix = sparse.ScaleMixture((1.0,), (0.5,))
    T = valid.valid_conv_matrix(k, mu.shape[1:])
    eta = 0.3
    data = np.sum((T @ mu[0].ravel() - yf[0].ravel()) ** 2) + var[0].ravel() @ np.diag(T.T @ T)
    # a single Gaussian component: the prior term is E_q[-log N(x; 0, 0.25)]
    prior = np.sum(0.5 * np.log(2 * np.pi * 0.25) + (mu**2 + var) / (2 * 0.25))
    entropy = 0.5 * np.sum(np.log(2 * np.pi * np.e * var))
    expected = data / (2 * eta**2) + yf.size / 2 * np.log(2 * np.pi * eta**2) + prior - entropy
    assert sparse.free_energy(yf, k, mu, var, eta, mix) == pytest.approx(expected, rel=1e-12)


def test_free_energy_does_not_increase_over_iterations_at_fixed_noise(rng):
    k_true = curved_kernel(7)
    x = blocky_image(rng, (46, 46))
    y = blur_valid(x, k_true) + 0.005 * rng.standard_normal((40, 40))
    yf = sparse.derivative_images(y)
    settings = sparse_pyramid.SparseSettings(n_iter=6, e_iter=1, cg_iter=10, trace=True)
    state = sparse.initial_state((2, 39 + 6, 39 + 6), settings.mixture)
    records = []
    sparse_pyramid.em_level(yf, gaussian_kernel(7, 1.0), state, [0.02], settings, records.append)
    energies = np.array([r["free_energy"] for r in records])
    assert len(energies) == 6
    assert np.all(np.diff(energies) <= 1e-9 * np.abs(energies[:-1]))
    assert energies[-1] < energies[0]


# ---------------------------------------------------------------- kernel recovery

def test_sparse_prior_recovers_a_curved_kernel_where_the_gaussian_prior_does_not(rng):
    k_true = curved_kernel(9)
    assert D.kernel_error(k_true, k_true[::-1, ::-1]) > 0.5  # asymmetric
    x = blocky_image(rng, (88, 88), n_rect=60)
    y = blur_valid(x, k_true) + 0.005 * rng.standard_normal((80, 80))
    y = quantize(y, 8)
    settings = sparse_pyramid.SparseSettings(eta_factors=(8.0, 4.0, 2.0, 1.0), n_iter=2,
                                             kernel_threshold=0.0)
    k_sparse, _ = sparse_pyramid.estimate_kernel_sparse(y, 9, settings)
    k_gauss, _ = D.estimate_kernel(y, 9, D.GaussianBlindSettings(prior_std=0.1, n_iter=3))
    err_sparse = D.kernel_error(k_sparse, k_true)
    err_gauss = D.kernel_error(k_gauss, k_true)
    assert err_sparse < 0.4
    assert err_gauss > err_sparse + 0.25


# ---------------------------------------------------------------- noise, restoration, scores

def test_noise_estimate_on_8bit_images_is_never_zero(rng):
    flat = quantize(np.full((64, 64), 0.3) + 0.001 * rng.standard_normal((64, 64)), 8)
    assert D.estimate_noise_sigma(flat) == 0.0  # the seed's estimator
    floor = sparse_pyramid.QUANTISATION_STD_8BIT
    assert floor <= sparse_pyramid.estimate_noise_8bit(flat) < 0.004
    assert sparse_pyramid.estimate_noise_8bit(np.full((32, 32), 0.3)) == floor
    noisy = quantize(0.5 + 0.01 * rng.standard_normal((128, 128)), 8)
    assert sparse_pyramid.estimate_noise_8bit(noisy) == pytest.approx(0.01, rel=0.15)


def test_deconvolve_sparse_with_alpha_2_solves_the_quadratic_problem(rng):
    k = rng.random((3, 3))
    k /= k.sum()
    y = rng.random((6, 7))
    st = nonblind.SparseDeconvSettings(weight=0.05, alpha=2.0, n_outer=2, cg_iter=400)
    x = nonblind.deconvolve_sparse(y, k, st, crop=False)
    T = valid.valid_conv_matrix(k, (8, 9))
    dh, dv = D.finite_difference_matrices((8, 9))
    A = T.T @ T + 0.05 * (dh.T @ dh + dv.T @ dv)
    np.testing.assert_allclose(x.ravel(), np.linalg.solve(A, T.T @ y.ravel()), atol=1e-8)


def test_deconvolve_sparse_beats_the_blurred_input(rng):
    k = curved_kernel(7)
    x = blocky_image(rng, (56, 56))
    y = blur_valid(x, k) + 0.01 * rng.standard_normal((50, 50))
    clean = valid.crop_centre(x, 7)
    restored = nonblind.deconvolve_sparse(y, k)
    assert np.sum((restored - clean) ** 2) < 0.5 * np.sum((y - clean) ** 2)


def test_shifted_error_ratio_forgives_a_known_shift(rng):
    clean = blocky_image(rng, (60, 60))
    noise = 0.01 * rng.standard_normal((2, 60, 60))
    true = clean + noise[0]
    shifted = np.roll(clean, (2, -1), axis=(0, 1)) + noise[1]
    ssd, shift = ssd_upto_shift(shifted, clean, max_shift=3, border=5)
    assert shift == (2, -1)
    ratio = shifted_error_ratio(shifted, true, clean, max_shift=3, border=5)
    assert ratio == pytest.approx(1.0, abs=0.2)
    m = 8
    unshifted = D.error_ratio(shifted[m:-m, m:-m], true[m:-m, m:-m], clean[m:-m, m:-m])
    assert unshifted > 20


def test_success_rates():
    assert success_rates([1.0, 2.0, 2.5, 4.0]) == {"le2": 0.5, "le3": 0.75}
    with pytest.raises(GmmRestoreError, match="no error ratios"):
        success_rates([])


# ---------------------------------------------------------------- the estimate_kernel script

@pytest.mark.parametrize("prior", D.PHOTOGRAPH_PRIORS)
def test_estimate_kernel_script_with_a_photograph_prior(tmp_path, rng, prior):
    import os
    import subprocess
    import sys

    from conftest import python_env

    from gmmrestore.h5io import read_h5, write_h5

    script = os.path.join(os.path.dirname(__file__), os.pardir, "scripts", "estimate_kernel.py")
    k_true = curved_kernel(7)
    scenes = np.stack([blocky_image(rng, (46, 46)) for _ in range(2)])
    corrupted = blur_valid(scenes, k_true) + 0.005 * rng.standard_normal((2, 40, 40))
    path = tmp_path / "corrupted.h5"
    write_h5(path, "corrupted", {"corrupted": corrupted}, attrs={"blur": "shake"})
    out = tmp_path / "kernel.h5"
    base = [sys.executable, script, "--corrupted", str(path), "--out", str(out),
            "--kernel-size", "7", "--prior", prior]
    bad = subprocess.run(base, capture_output=True, text=True, timeout=120, env=python_env())
    assert bad.returncode != 0 and "--batch-size 1" in bad.stderr and not out.exists()
    base += ["--batch-size", "1"]
    if prior in D.JUDGED_PRIORS:
        missing = subprocess.run(base, capture_output=True, text=True, timeout=120,
                                 env=python_env())
        assert missing.returncode != 0 and "needs --judge-gmm" in missing.stderr
        assert not out.exists()
        base += ["--judge-gmm", str(judge_gmm_file(tmp_path, rng))]
    good = subprocess.run(base, capture_output=True, text=True, timeout=300,
                          env=python_env())
    assert good.returncode == 0, good.stderr
    arrays, attrs = read_h5(out, "kernel", ["kernel", "batch_kernels"])
    assert attrs["prior"] == prior and attrs["n_batches"] == 2
    assert arrays["batch_kernels"].shape == (2, 7, 7)
    np.testing.assert_allclose(arrays["batch_kernels"].sum(axis=(1, 2)), 1.0)
    assert np.all(arrays["batch_kernels"] >= 0)
    if prior in D.JUDGED_PRIORS:
        judged, attrs = read_h5(out, "kernel", ["judge_candidates", "judge_scores",
                                                "judge_chosen"])
        n_candidates = len(D.JudgeSettings().candidate_labels())  # two TV runs and L0
        assert judged["judge_candidates"].shape == (2, n_candidates, 7, 7)
        assert judged["judge_scores"].shape == (2, n_candidates)
        for b in range(2):
            chosen = judged["judge_chosen"][b]
            assert chosen == np.argmax(judged["judge_scores"][b])
            np.testing.assert_array_equal(arrays["batch_kernels"][b],
                                          judged["judge_candidates"][b, chosen])
        assert list(attrs["judge_lam_factors"]) == list(D.JudgeSettings().lam_factors)
        assert list(attrs["judge_candidate_labels"]) == ["tv growth 1.9", "tv growth 1.05",
                                                         "l0"]
        assert attrs["judge_blur_std"] == D.JudgeSettings().blur_std
        assert attrs["judge_stride"] == D.JudgeSettings().stride


def judge_gmm_file(tmp_path, rng):
    """A small zero-mean 4x4 patch GMM file (kind 'gmm') for the kernel judge."""
    from gmmrestore.gmm import GaussianMixture
    from gmmrestore.gmm.io import save_gmm

    A = rng.standard_normal((2, 16, 16))
    cov = A @ A.transpose(0, 2, 1) / 16 * 1e-2 + 1e-4 * np.eye(16)
    path = tmp_path / "judge_gmm.h5"
    save_gmm(path, GaussianMixture(np.array([0.4, 0.6]), np.zeros((2, 16)), cov), None,
             {"remove_dc": True})
    return path


def test_sparse_estimation_rejects_bad_input(rng):
    with pytest.raises(GmmRestoreError, match="too small for a 9x9 kernel"):
        sparse_pyramid.estimate_kernel_sparse(rng.random((12, 30)), 9)
    with pytest.raises(GmmRestoreError, match="non-increasing"):
        sparse_pyramid.SparseSettings(eta_factors=(1.0, 2.0))
    with pytest.raises(GmmRestoreError, match="level_noise"):
        sparse_pyramid.SparseSettings(level_noise="median")


def test_blind_natural_config_estimates_with_the_default_prior_one_photograph_at_a_time(
        tmp_path):
    import os
    import subprocess
    import sys

    from conftest import ROOT, snakemake_env

    snakemake = os.path.join(os.path.dirname(sys.executable), "snakemake")
    result = subprocess.run(
        [snakemake, "-s", os.path.join(ROOT, "Snakefile"), "--directory", str(tmp_path),
         "--configfile", os.path.join(ROOT, "configs", "blind_natural.yaml"), "-n", "-p",
         "--cores", "1"], capture_output=True, text=True, env=snakemake_env(), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    commands = [line for line in result.stdout.splitlines()
                if "estimate_kernel.py" in line and "--kernel-size" in line]
    assert len(commands) == 8
    prior = f"--prior {D.DEFAULT_PHOTOGRAPH_PRIOR}"
    assert all("--batch-size 1" in c and prior in c for c in commands)
    # the judge is the restoration prior of the first sweep setting (m 8, K 50)
    assert all("--judge-gmm results/blind_natural/bsd_blind/gmm/m8_K50.h5" in c
               for c in commands)
