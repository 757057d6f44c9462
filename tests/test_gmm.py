"""EM training of full-covariance Gaussian mixtures (gmmrestore.gmm, scripts/train_gmm.py)."""

import dataclasses
import json
import logging
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
from conftest import ROOT, python_env, random_gmm
from scipy.stats import multivariate_normal

from gmmrestore import gmm as G
from gmmrestore.gmm.blocks import Blocks
from gmmrestore.gmm.passes import block_rows
from gmmrestore.h5io import GmmRestoreError, read_h5, write_h5

SCRIPT = os.path.join(ROOT, "scripts", "train_gmm.py")


def sample_mixture(rng, weights, means, covs, n):
    labels = rng.choice(len(weights), size=n, p=weights)
    L = np.linalg.cholesky(covs)
    z = rng.normal(size=(n, means.shape[1]))
    return means[labels] + np.einsum("nij,nj->ni", L[labels], z)


@pytest.fixture
def data(rng):
    w, mu, cov = random_gmm(rng, 3, 5)
    return sample_mixture(rng, w, mu * 4, cov, 1500)


def textbook_em_step(X, weights, means, covs, reg_covar):
    """One EM step written one sample at a time (explicit responsibilities, outer products)."""
    N, d = X.shape
    K = len(weights)
    resp = np.empty((N, K))
    for n in range(N):
        p = np.array([weights[k] * multivariate_normal(means[k], covs[k]).pdf(X[n])
                      for k in range(K)])
        resp[n] = p / p.sum()
    new_w, new_mu, new_cov = np.empty(K), np.zeros((K, d)), np.zeros((K, d, d))
    for k in range(K):
        nk = 0.0
        for n in range(N):
            nk += resp[n, k]
            new_mu[k] += resp[n, k] * X[n]
        new_mu[k] /= nk
        for n in range(N):
            diff = X[n] - new_mu[k]
            new_cov[k] += resp[n, k] * np.outer(diff, diff)
        new_cov[k] = new_cov[k] / nk + reg_covar * np.eye(d)
        new_w[k] = nk / N
    return new_w, new_mu, new_cov


def assert_same_mixture(a, b, rtol=1e-10, atol=1e-12):
    np.testing.assert_allclose(a.weights, b.weights, rtol=rtol, atol=atol)
    np.testing.assert_allclose(a.means, b.means, rtol=rtol, atol=atol)
    np.testing.assert_allclose(a.covariances, b.covariances, rtol=rtol, atol=atol)


# ----------------------------------------------------------------------------------- scoring


def test_log_densities_match_scipy(rng):
    w, mu, cov = random_gmm(rng, 4, 6)
    gmm = G.GaussianMixture(w, mu, cov)
    X = rng.normal(size=(301, 6))
    ref = np.stack([np.log(w[k]) + multivariate_normal(mu[k], cov[k]).logpdf(X)
                    for k in range(4)], axis=1)
    for chunk in (7, 64, 1000):
        np.testing.assert_allclose(G.component_log_densities(X, gmm, chunk_size=chunk), ref,
                                   rtol=1e-11, atol=1e-10)
    ref_p = np.log(np.exp(ref).sum(axis=1))
    np.testing.assert_allclose(G.score_samples(X, gmm), ref_p, rtol=1e-11)
    assert G.mean_log_likelihood(X, gmm) == pytest.approx(ref_p.mean(), rel=1e-12)


def test_log_densities_large_offsets(rng):
    """Data far from the origin with small variances: the shifted whitening stays accurate."""
    w, mu, cov = random_gmm(rng, 3, 4)
    mu = mu + 50.0
    cov = cov * 1e-2
    X = sample_mixture(rng, w, mu, cov, 200)
    gmm = G.GaussianMixture(w, mu, cov)
    ref = np.stack([np.log(w[k]) + multivariate_normal(mu[k], cov[k]).logpdf(X)
                    for k in range(3)], axis=1)
    np.testing.assert_allclose(G.component_log_densities(X, gmm), ref, rtol=1e-9, atol=1e-7)


def test_mixture_validates_shapes():
    with pytest.raises(GmmRestoreError, match="expected weights"):
        G.GaussianMixture(np.ones(2) / 2, np.zeros((3, 2)), np.stack([np.eye(2)] * 3))


def test_remove_patch_dc(rng):
    X = rng.normal(size=(10, 9)) + 3.0
    np.testing.assert_allclose(G.remove_patch_dc(X).sum(axis=1), 0.0, atol=1e-12)
    np.testing.assert_allclose(G.remove_patch_dc(X), X - X.mean(axis=1)[:, None])


# ---------------------------------------------------------------------------------------- EM


def test_one_em_step_matches_textbook(rng):
    w, mu, cov = random_gmm(rng, 3, 4)
    X = sample_mixture(rng, w, mu * 3, cov, 200)
    start = G.GaussianMixture(w, mu * 3 + 0.1, cov * 1.5)
    gmm, hist = G.fit_gmm(X, 3, max_iter=1, tol=0, reg_covar=1e-3, init_params=start,
                          chunk_size=37)
    ref = textbook_em_step(X, start.weights, start.means, start.covariances, 1e-3)
    assert hist.n_iter == 1
    np.testing.assert_allclose(gmm.weights, ref[0], rtol=1e-10)
    np.testing.assert_allclose(gmm.means, ref[1], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gmm.covariances, ref[2], rtol=1e-10, atol=1e-12)
    # the history's first entry is the new model's mean log-likelihood, init the start's
    assert hist.loglik_train[0] == pytest.approx(G.mean_log_likelihood(X, gmm), rel=1e-12)
    assert hist.loglik_init == pytest.approx(G.mean_log_likelihood(X, start), rel=1e-12)


def test_matches_sklearn_after_several_iterations(rng):
    sklearn_mixture = pytest.importorskip("sklearn.mixture")
    w, mu, cov = random_gmm(rng, 4, 5)
    X = sample_mixture(rng, w, mu * 3, cov, 1000)
    start = G.GaussianMixture(np.full(4, 0.25), X[:4].copy(), np.stack([np.eye(5)] * 4))
    gmm, _ = G.fit_gmm(X, 4, max_iter=4, tol=0, reg_covar=1e-4, init_params=start)
    sk = sklearn_mixture.GaussianMixture(
        4, covariance_type="full", reg_covar=1e-4, tol=0, max_iter=4,
        weights_init=start.weights, means_init=start.means,
        precisions_init=np.linalg.inv(start.covariances), init_params="random_from_data")
    with pytest.warns(Warning):  # sklearn: "did not converge" (tol=0)
        sk.fit(X)
    np.testing.assert_allclose(gmm.means, sk.means_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(gmm.covariances, sk.covariances_, rtol=1e-8, atol=1e-10)
    assert G.mean_log_likelihood(X, gmm) == pytest.approx(sk.score(X), rel=1e-10)


def test_loglik_non_decreasing(data):
    _, hist = G.fit_gmm(data, 4, max_iter=25, tol=0, seed=3, init="random")
    curve = np.concatenate([[hist.loglik_init], hist.loglik_train])
    assert len(curve) == 26 and not hist.reseeded
    assert np.all(np.diff(curve) >= -1e-12 * np.abs(curve[:-1]))
    assert curve[-1] > curve[0]


def test_convergence_on_tolerance(data):
    _, hist = G.fit_gmm(data, 3, max_iter=500, tol=1e-5, seed=0)
    assert hist.converged and 2 < hist.n_iter < 500
    ll = np.concatenate([[hist.loglik_init], hist.loglik_train])
    rel = np.abs(np.diff(ll)) / np.maximum(np.abs(ll[:-1]), 1.0)
    assert rel[-1] < 1e-5 and np.all(rel[:-1] >= 1e-5)


def test_deterministic_and_seed_matters(data):
    a, ha = G.fit_gmm(data, 3, max_iter=5, seed=11)
    b, hb = G.fit_gmm(data, 3, max_iter=5, seed=11)
    for x, y in ((a.weights, b.weights), (a.means, b.means), (a.covariances, b.covariances)):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(ha.loglik_train, hb.loglik_train)
    c, _ = G.fit_gmm(data, 3, max_iter=5, seed=12, init="random")
    assert not np.array_equal(a.means, c.means)


def test_chunk_size_does_not_change_result(data):
    a, ha = G.fit_gmm(data, 3, max_iter=6, tol=0, seed=2, chunk_size=8192)
    b, hb = G.fit_gmm(data, 3, max_iter=6, tol=0, seed=2, chunk_size=13)
    assert_same_mixture(a, b)
    np.testing.assert_allclose(ha.loglik_train, hb.loglik_train, rtol=1e-12)


def test_thread_count_does_not_change_result(data):
    kw = dict(max_iter=4, tol=0, seed=2, chunk_size=100)
    one, h1 = G.fit_gmm(data, 3, n_threads=1, **kw)
    two, h2 = G.fit_gmm(data, 3, n_threads=2, **kw)
    three, h3 = G.fit_gmm(data, 3, n_threads=3, **kw)
    # partial sums are folded in block order: identical whatever the number of workers
    np.testing.assert_array_equal(two.covariances, three.covariances)
    np.testing.assert_array_equal(h2.loglik_train, h3.loglik_train)
    assert_same_mixture(one, two, rtol=1e-12)


def test_block_buffer_is_bounded():
    # the (rows, K*d) work buffer never grows with N (only with the chunk size, capped)
    for K, d in ((20, 64), (200, 64), (5, 4)):
        rows = block_rows(K, d, 8192)
        assert rows * K * d <= max(G.BLOCK_ELEMENTS, 16 * K * d)


def test_n_init_keeps_best(data):
    gmm, hist = G.fit_gmm(data, 4, max_iter=8, tol=0, n_init=3, seed=5, init="random")
    assert len(hist.final_loglik_all_inits) == 3
    assert hist.loglik_train[-1] == max(hist.final_loglik_all_inits)
    assert hist.final_loglik_all_inits[hist.best_init] == hist.loglik_train[-1]
    assert G.mean_log_likelihood(data, gmm) == pytest.approx(hist.loglik_train[-1], rel=1e-12)


def test_kmeans_plusplus_picks_distinct_far_points(rng):
    centres = np.array([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0]])
    S = np.concatenate([c + rng.normal(size=(50, 2)) for c in centres])
    idx = G.kmeans_plusplus(S, 3, np.random.default_rng(0))
    assert sorted(i // 50 for i in idx) == [0, 1, 2]


def test_heldout_curve(rng, data):
    held = data[:300] + 0.01 * rng.normal(size=(300, data.shape[1]))
    _, hist = G.fit_gmm(data, 3, max_iter=4, tol=0, heldout=held)
    assert hist.loglik_heldout.shape == (4,)
    assert np.isfinite(hist.loglik_init_heldout)
    _, nohist = G.fit_gmm(data, 3, max_iter=4, tol=0)
    assert nohist.loglik_heldout.shape == (0,)


def test_float32_close_to_float64(rng):
    # offsets and small variances make cancellation visible if sums were not float64
    w, mu, cov = random_gmm(rng, 5, 16)
    X = sample_mixture(rng, w, mu * 3 + 0.5, cov * 0.1, 6000)
    a, ha = G.fit_gmm(X, 5, max_iter=10, tol=0, seed=0)
    start = G.fit_gmm(X, 5, max_iter=1, tol=0, seed=0)[0]
    b, hb = G.fit_gmm(X.astype(np.float32), 5, max_iter=10, tol=0, seed=0, dtype=np.float32)
    assert np.abs(hb.loglik_train[-1] / ha.loglik_train[-1] - 1) < 1e-5
    assert np.abs(G.mean_log_likelihood(X, b) / G.mean_log_likelihood(X, a) - 1) < 1e-5
    assert b.means.dtype == np.float64
    del start


def test_reseeds_component_that_loses_all_responsibility(rng, data, caplog):
    d = data.shape[1]
    good = G.fit_gmm(data, 3, max_iter=3, tol=0, seed=0)[0]
    # a fourth component far from every patch gets no responsibility in the first E-step
    start = G.GaussianMixture(
        np.append(good.weights * 0.9, 0.1), np.vstack([good.means, np.full(d, 1e3)]),
        np.concatenate([good.covariances, 0.01 * np.eye(d)[None]]))
    with caplog.at_level(logging.WARNING, logger="gmmrestore"):
        gmm, hist = G.fit_gmm(data, 4, max_iter=5, tol=0, init_params=start)
    assert hist.reseeded == [(1, 3)]
    assert "component 3" in caplog.text and "re-seeded" in caplog.text
    # re-seeded at a data point: inside the data's range, with real responsibility again
    assert np.all(np.abs(gmm.means[3]) < np.abs(data).max() + 1)
    assert gmm.weights[3] > 1e-3
    assert np.all(np.isfinite(hist.loglik_train))


def test_remove_dc_keeps_zero_means(rng, data):
    X = data + rng.normal(size=(len(data), 1)) * 5.0       # random per-patch DC offsets
    gmm, hist = G.fit_gmm(X, 3, max_iter=5, tol=0, remove_dc=True, reg_covar=1e-4)
    np.testing.assert_array_equal(gmm.means, 0.0)
    # zero-sum patches: the constant vector is only in the covariances through reg_covar
    ones = np.ones(X.shape[1])
    np.testing.assert_allclose(gmm.covariances @ ones, np.full((3, X.shape[1]), 1e-4), atol=1e-9)
    assert np.all(np.diff(np.concatenate([[hist.loglik_init], hist.loglik_train])) > -1e-10)
    # trained on DC-removed patches: scoring DC-removed data gives the training curve
    assert G.mean_log_likelihood(G.remove_patch_dc(X), gmm) == pytest.approx(
        hist.loglik_train[-1], rel=1e-10)


def test_k_larger_than_n(rng):
    with pytest.raises(GmmRestoreError, match=r"K=5 larger than the number of training "
                                              r"patches N=3"):
        G.fit_gmm(rng.normal(size=(3, 2)), 5)


def test_bad_arguments(data):
    with pytest.raises(GmmRestoreError, match="init must be"):
        G.fit_gmm(data, 2, init="spectral")
    with pytest.raises(GmmRestoreError, match="dtype"):
        G.fit_gmm(data, 2, dtype=np.float16)
    bad = data.copy()
    bad[5, 1] = np.nan
    with pytest.raises(GmmRestoreError, match="NaN"):
        G.fit_gmm(bad, 2)


# ------------------------------------------------------------------------------- settings


def test_settings_object_equals_keyword_overrides(data):
    a, ha = G.fit_gmm(data, 3, G.EMSettings(max_iter=3, tol=0, seed=2, dtype="float32"))
    b, hb = G.fit_gmm(data, 3, max_iter=3, tol=0, seed=2, dtype=np.float32)
    c, hc = G.fit_gmm(data, 3, G.EMSettings(max_iter=3, seed=7), seed=2, tol=0,
                      dtype="float32")
    for got, hist in ((b, hb), (c, hc)):
        assert_same_mixture(a, got, rtol=0)
        assert hist.settings == ha.settings
    assert ha.settings["dtype"] == "float32" and ha.n_iter == 3


def test_settings_are_checked():
    with pytest.raises(TypeError, match="max_iters"):
        G.fit_gmm(np.zeros((5, 2)), 2, max_iters=3)
    for bad in (dict(max_iter=0), dict(n_init=1.5), dict(tol=-1.0), dict(reg_covar=np.inf),
                dict(memory_budget_mb=0), dict(init="spectral"), dict(dtype="int32")):
        with pytest.raises(GmmRestoreError, match=next(iter(bad))):
            G.EMSettings(**bad)


def test_train_gmm_defaults_are_em_settings():
    """train_gmm.py has one option per EMSettings field, with the field's default."""
    from train_gmm import EM_OPTIONS, build_parser, em_settings

    assert set(EM_OPTIONS) == {f.name for f in dataclasses.fields(G.EMSettings)}
    args = build_parser().parse_args(["--patches", "p.h5", "--out", "g.h5", "-K", "2"])
    assert em_settings(args) == G.EMSettings()


def test_fit_history_state_round_trip(data):
    _, hist = G.fit_gmm(data, 3, max_iter=3, tol=0, heldout=data[:50])
    back = G.FitHistory.from_state(json.loads(json.dumps(hist.to_state())))
    for name in ("loglik_train", "loglik_heldout"):
        np.testing.assert_array_equal(getattr(back, name), getattr(hist, name))
    assert (back.loglik_init, back.loglik_init_heldout, back.converged, back.reseeded) == (
        hist.loglik_init, hist.loglik_init_heldout, hist.converged, hist.reseeded)
    assert back.timing["iteration_seconds"] == hist.timing["iteration_seconds"]
    assert back.n_iter == 3 and back.done(3) and not back.done(4)


# ------------------------------------------------------------------------ streaming from HDF5


def write_dataset(path, X, chunk_rows=64, name="patches"):
    with h5py.File(path, "a") as fh:
        fh.create_dataset(name, data=X, chunks=(chunk_rows, X.shape[1]), compression="gzip")


def test_streamed_equals_in_memory(tmp_path, rng, data):
    path = tmp_path / "patches.h5"
    held = data[:200] + 0.1 * rng.normal(size=(200, data.shape[1]))
    write_dataset(path, data)
    write_dataset(path, held, name="heldout")
    a, ha = G.fit_gmm(data, 3, max_iter=6, tol=0, seed=4, chunk_size=100, heldout=held)
    with h5py.File(path, "r") as fh:
        b, hb = G.fit_gmm(fh["patches"], 3, max_iter=6, tol=0, seed=4, chunk_size=100,
                          heldout=fh["heldout"], memory_budget_mb=None)
        assert hb.timing["streamed"]
        # within the memory budget the dataset is loaded instead: same result
        c, hc = G.fit_gmm(fh["patches"], 3, max_iter=6, tol=0, seed=4, chunk_size=100,
                          heldout=fh["heldout"], memory_budget_mb=100)
        assert not hc.timing["streamed"]
        assert G.mean_log_likelihood(fh["patches"], a) == pytest.approx(
            ha.loglik_train[-1], rel=1e-12)
    assert_same_mixture(a, b, rtol=1e-10)
    assert_same_mixture(a, c, rtol=1e-10)
    np.testing.assert_allclose(ha.loglik_train, hb.loglik_train, rtol=1e-10)
    np.testing.assert_allclose(ha.loglik_heldout, hb.loglik_heldout, rtol=1e-10)


def test_streaming_reads_bounded_chunk_aligned_blocks(tmp_path, data, monkeypatch):
    path = tmp_path / "patches.h5"
    write_dataset(path, data, chunk_rows=64)
    reads = []
    original = Blocks._read

    def spy(self, start, stop):
        if self.is_h5:
            reads.append((start, stop))
        return original(self, start, stop)

    monkeypatch.setattr(Blocks, "_read", spy)
    with h5py.File(path, "r") as fh:
        G.fit_gmm(fh["patches"], 3, max_iter=2, tol=0, chunk_size=150, memory_budget_mb=None)
    assert reads
    # 150 rounded to whole HDF5 chunks of 64 rows: 128-row reads starting on chunk borders
    assert all(start % 64 == 0 and stop - start <= 128 for start, stop in reads)
    assert max(stop for _, stop in reads) == len(data)


def test_streamed_float32_file_with_remove_dc(tmp_path, data):
    path = tmp_path / "p.h5"
    X = data.astype(np.float32)
    write_dataset(path, X, chunk_rows=50)
    a, _ = G.fit_gmm(X, 3, max_iter=3, tol=0, remove_dc=True, chunk_size=200)
    with h5py.File(path, "r") as fh:
        b, _ = G.fit_gmm(fh["patches"], 3, max_iter=3, tol=0, remove_dc=True, chunk_size=200,
                         memory_budget_mb=None)
    assert_same_mixture(a, b, rtol=1e-10)


# ------------------------------------------------------------------------------- checkpoints


class Interrupt(Exception):
    pass


def interrupt_at(run_stop, it_stop):
    def callback(run, it, gmm, ll):
        if (run, it) == (run_stop, it_stop):
            raise Interrupt
    return callback


@pytest.mark.parametrize("n_init,stop", [(1, (0, 3)), (2, (1, 2)), (2, (0, 6))])
def test_resume_from_checkpoint_equals_uninterrupted(tmp_path, data, n_init, stop):
    kwargs = dict(max_iter=6, tol=0, seed=7, n_init=n_init, init="random")
    ref, href = G.fit_gmm(data, 3, **kwargs)
    ckpt = tmp_path / "fit.ckpt.h5"
    with pytest.raises(Interrupt):
        G.fit_gmm(data, 3, checkpoint_path=ckpt, callback=interrupt_at(*stop), **kwargs)
    assert ckpt.exists()
    seen = []
    got, hgot = G.fit_gmm(data, 3, checkpoint_path=ckpt,
                          callback=lambda run, it, g, ll: seen.append((run, it)), **kwargs)
    assert seen and seen[0] > stop                     # resumed, did not start again
    for x, y in ((ref.weights, got.weights), (ref.means, got.means),
                 (ref.covariances, got.covariances)):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(href.loglik_train, hgot.loglik_train)
    assert href.final_loglik_all_inits == hgot.final_loglik_all_inits
    assert href.best_init == hgot.best_init


def test_checkpoint_of_other_settings_is_ignored(tmp_path, data, caplog):
    ckpt = tmp_path / "fit.ckpt.h5"
    with pytest.raises(Interrupt):
        G.fit_gmm(data, 3, max_iter=4, tol=0, checkpoint_path=ckpt,
                  callback=interrupt_at(0, 2))
    ref, _ = G.fit_gmm(data, 3, max_iter=4, tol=0, reg_covar=1e-3)
    with caplog.at_level(logging.WARNING, logger="gmmrestore"):
        got, _ = G.fit_gmm(data, 3, max_iter=4, tol=0, reg_covar=1e-3, checkpoint_path=ckpt)
    assert "other settings" in caplog.text
    np.testing.assert_array_equal(ref.covariances, got.covariances)


# ------------------------------------------------------------------------------------- files


def test_save_load_roundtrip(tmp_path, data):
    gmm, hist = G.fit_gmm(data[:, :4], 2, max_iter=3, tol=0, seed=1)
    path = tmp_path / "gmm.h5"
    G.save_gmm(path, gmm, hist, {"source": "patches.h5"})
    got, attrs = G.load_gmm(path)
    assert_same_mixture(gmm, got, rtol=0, atol=0)
    assert attrs["kind"] == "gmm" and attrs["n_components"] == 2 and attrs["patch_size"] == 2
    assert attrs["n_iter"] == 3 and attrs["seed"] == 1 and attrs["source"] == "patches.h5"
    assert attrs["remove_dc"] is False or attrs["remove_dc"] == 0
    np.testing.assert_array_equal(attrs["loglik_train"], hist.loglik_train)
    arrays, _ = read_h5(path, "gmm", ["loglik_train", "loglik_heldout"])
    assert arrays["loglik_heldout"].shape == (0,)
    prior, remove_dc = G.load_patch_prior(path)
    assert_same_mixture(gmm, prior, rtol=0, atol=0)
    assert remove_dc is False
    G.save_gmm(tmp_path / "zero_mean.h5", gmm, None, {"remove_dc": True})
    assert G.load_patch_prior(tmp_path / "zero_mean.h5")[1] is True


def test_load_gmm_errors_name_file_and_dataset(tmp_path, rng):
    w, mu, cov = random_gmm(rng, 3, 4)
    good = tmp_path / "good.h5"
    G.save_gmm(good, G.GaussianMixture(w, mu, cov), None)
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good.read_bytes()[:600])
    with pytest.raises(GmmRestoreError, match="truncated.h5"):
        G.load_gmm(truncated)
    missing = tmp_path / "missing.h5"
    write_h5(missing, "gmm", {"weights": w, "means": mu})
    with pytest.raises(GmmRestoreError, match=r"missing\.h5.*covariances"):
        G.load_gmm(missing)
    not_pd = tmp_path / "notpd.h5"
    bad = cov.copy()
    bad[1] = -np.eye(4)
    write_h5(not_pd, "gmm", {"weights": w, "means": mu, "covariances": bad})
    with pytest.raises(GmmRestoreError, match=r"notpd\.h5.*covariances.*1 not positive"):
        G.load_gmm(not_pd)
    wrong_shape = tmp_path / "shape.h5"
    write_h5(wrong_shape, "gmm", {"weights": w[:2], "means": mu, "covariances": cov})
    with pytest.raises(GmmRestoreError, match=r"shape\.h5.*'weights'"):
        G.load_gmm(wrong_shape)


# ------------------------------------------------------------------------------------ script


def run_script(*args):
    return subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True,
                          text=True, env=python_env(), timeout=120)


def test_script_help():
    result = run_script("--help")
    assert result.returncode == 0
    for option in ("--patches", "--components", "--max-iter", "--tol", "--reg-covar", "--init",
                   "--n-init", "--seed", "--dtype", "--chunk-size", "--memory-budget-mb",
                   "--remove-dc", "--checkpoint"):
        assert option in result.stdout


@pytest.fixture
def patches_file(tmp_path, rng):
    w, mu, cov = random_gmm(rng, 3, 9)
    X = sample_mixture(rng, w, mu + 0.5, cov * 0.1, 3000).astype(np.float32)
    held = sample_mixture(rng, w, mu + 0.5, cov * 0.1, 500).astype(np.float32)
    path = tmp_path / "patches.h5"
    write_h5(path, "patches", {"patches": X, "heldout": held},
             attrs={"patch_size": 3, "n_images": 10, "seed": 0, "source": "synthetic"})
    return path


def test_script_end_to_end(tmp_path, patches_file):
    out = tmp_path / "gmm.h5"
    ckpt = tmp_path / "gmm.ckpt.h5"
    result = run_script("--patches", patches_file, "--out", out, "--components", 3,
                        "--max-iter", 8, "--tol", 0, "--seed", 1, "--checkpoint", ckpt)
    assert result.returncode == 0, result.stderr
    assert "EM iteration 8/8" in result.stderr and "held-out" in result.stderr
    gmm, attrs = G.load_gmm(out)
    assert gmm.n_components == 3 and gmm.n_features == 9 and attrs["patch_size"] == 3
    assert attrs["n_iter"] == 8 and attrs["source"] == str(patches_file)
    assert attrs["loglik_train"].shape == (8,) and attrs["loglik_heldout"].shape == (8,)
    assert not ckpt.exists()
    # the same run streamed from the file (tiny memory budget) gives the same mixture
    from train_gmm import main
    out2 = tmp_path / "gmm_streamed.h5"
    main(["--patches", str(patches_file), "--out", str(out2), "--components", "3",
          "--max-iter", "8", "--tol", "0", "--seed", "1", "--memory-budget-mb", "0.01",
          "--chunk-size", "500", "--quiet"])
    got, attrs2 = G.load_gmm(out2)
    assert attrs2["streamed"]
    assert_same_mixture(gmm, got, rtol=1e-10)


def test_script_k_larger_than_n(tmp_path, patches_file):
    result = run_script("--patches", patches_file, "--out", tmp_path / "g.h5",
                        "--components", 5000)
    assert result.returncode == 2
    assert f"K=5000 larger than the number of training patches N=3000 in {patches_file}" \
        in result.stderr
    assert not (tmp_path / "g.h5").exists()


def test_script_missing_dataset(tmp_path):
    path = tmp_path / "empty.h5"
    write_h5(path, "patches", {"other": np.zeros((3, 4))})
    from train_gmm import main
    with pytest.raises(GmmRestoreError, match=r"empty\.h5.*patches"):
        main(["--patches", str(path), "--out", str(tmp_path / "g.h5"), "--components", "2"])
