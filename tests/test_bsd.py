"""Tests of gmmrestore.datasets.bsd (source 'bsd': Train400 and BSD68) and its download script.

Files come from the project's read-only copy of the two sets (``../shared/data/natural``
beside the checkout, or $GMMRESTORE_NATURAL_DATA), served by a loopback HTTP server started
here (tests/loopback.py's Server) or named as a folder mirror; nothing touches the
internet.  Without that copy the tests are skipped.
"""

from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import skimage.io
from conftest import ROOT
from loopback import FAST, Server, leftovers

from gmmrestore import datasets
from gmmrestore.datasets import bsd
from gmmrestore.h5io import GmmRestoreError

SCRIPT = Path(ROOT) / "scripts" / "download_dataset.py"

NATURAL = Path(os.environ.get("GMMRESTORE_NATURAL_DATA",
                              Path(ROOT).parent / "shared" / "data" / "natural"))
needs_data = pytest.mark.skipif(not (NATURAL / "MANIFEST.tsv").is_file(),
                                reason=f"natural-image sets not found at {NATURAL}")
pytestmark = needs_data

# two Train400 crops, one landscape and one portrait BSD68 image
SMALL = {"Train400": ("test_001.png", "test_002.png"), "BSD68": ("test001.png", "test004.png")}


def small_manifest() -> dict[str, list[bsd.ManifestEntry]]:
    full = bsd.load_manifest()
    return {s: [e for e in full[s] if e.file in files] for s, files in SMALL.items()}


def file_bytes(set_name: str, name: str) -> bytes:
    return (NATURAL / set_name / name).read_bytes()


def serve_sets(server: Server, prefix: str, sets=SMALL, replace=None) -> str:
    """Serve files of the sets under ``prefix/<set>/<file>``; ``replace[(set, file)]`` is
    served instead of the real bytes (bytes, an HTTP status or a dropped connection)."""
    replace = replace or {}
    for set_name, files in sets.items():
        server.serve(f"{prefix}/{set_name}",
                     {f: replace.get((set_name, f), file_bytes(set_name, f)) for f in files})
    return f"{server.url}{prefix}/"


@pytest.fixture
def server():
    srv = Server()
    yield srv
    srv.close()


def test_pinned_manifest_matches_the_published_one():
    with open(NATURAL / "MANIFEST.tsv", newline="", encoding="utf-8") as fh:
        published = {(r["set"], r["file"]): r for r in csv.DictReader(fh, delimiter="\t")}
    pinned = bsd.load_manifest()
    assert {s: len(v) for s, v in pinned.items()} == {"Train400": 400, "BSD68": 68}
    seen = set()
    for entries in pinned.values():
        for e in entries:
            row = published[(e.set, e.file)]
            assert (e.digest.size, e.digest.sha256, e.repository_path) == (
                int(row["bytes"]), row["sha256"], row["repository_path"])
            seen.add((e.set, e.file))
    assert seen == set(published)
    e = pinned["BSD68"][0]  # the pinned MD5 is that of the file with the pinned SHA-256
    assert hashlib.md5(file_bytes("BSD68", e.file)).hexdigest() == e.digest.md5


def test_mirror_layouts(tmp_path):
    e = bsd.load_manifest()["BSD68"][0]
    assert bsd.mirror_folder_url(bsd.UPSTREAM, e) == (
        f"https://raw.githubusercontent.com/cszn/DnCNN/{bsd.BSD_COMMIT}/testsets/BSD68")
    assert bsd.mirror_folder_url("http://127.0.0.1:9/nat/", e) == "http://127.0.0.1:9/nat/BSD68"
    assert bsd.mirror_folder_url(str(tmp_path), e) == f"{tmp_path.as_uri()}/BSD68"


def test_good_download_whole_images_and_cache_needs_no_network(server, tmp_path):
    mirror = serve_sets(server, "/nat")
    cache = tmp_path / "cache"
    pools = bsd.load_bsd(cache, [mirror], manifest=small_manifest(), **FAST)
    train = [skimage.io.imread(NATURAL / "Train400" / f) for f in SMALL["Train400"]]
    np.testing.assert_array_equal(pools.train * 255, np.stack(train))
    portrait, landscape = (skimage.io.imread(NATURAL / "BSD68" / f) for f in SMALL["BSD68"])
    assert portrait.shape == (481, 321) and landscape.shape == (321, 481)
    assert pools.test.shape == (2, 321, 481) and pools.test.dtype == np.float32
    # test001 is a portrait image, stored transposed; test004 is a landscape one
    assert list(pools.test_ids) == ["test001", "test004"]
    np.testing.assert_array_equal(pools.test_transposed, [True, False])
    np.testing.assert_array_equal(pools.test[0] * 255, portrait.T)
    np.testing.assert_array_equal(bsd.original_orientation(pools.test[0], True) * 255,
                                  portrait)
    np.testing.assert_array_equal(pools.test[1] * 255, landscape)
    assert pools.attrs["source"] == f"bsd download from {mirror}"
    assert "non-commercial" in pools.attrs["licence"]
    assert sorted(os.listdir(cache)) == ["BSD68", "Train400"]

    n_requests = len(server.requests)
    again = bsd.load_bsd(cache, [mirror], manifest=small_manifest(), **FAST)
    assert len(server.requests) == n_requests
    np.testing.assert_array_equal(again.test, pools.test)
    assert again.attrs["source"] == f"bsd cache {cache}"


def test_tampered_file_is_rejected_names_file_and_digest(server, tmp_path):
    good = file_bytes("BSD68", "test004.png")
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF
    mirror = serve_sets(server, "/bad", replace={("BSD68", "test004.png"): bytes(bad)})
    cache = tmp_path / "cache"
    with pytest.raises(datasets.DownloadError) as info:
        bsd.load_bsd(cache, [mirror], manifest=small_manifest(), **FAST)
    err = info.value
    assert err.integrity_failure
    assert "test004.png" in str(err) and hashlib.md5(good).hexdigest() in str(err)
    assert not (cache / "BSD68" / "test004.png").exists()
    assert not any(f.endswith(".tmp") for f in leftovers(cache / "BSD68"))


def test_same_size_tampered_file_caught_by_sha256(tmp_path):
    entry = small_manifest()["BSD68"][0]
    path = tmp_path / entry.file
    data = bytearray(file_bytes("BSD68", entry.file))
    data[100] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(datasets.ChecksumError, match="checksum mismatch"):
        datasets.verify_file(path, entry.digest)


def test_truncated_file_is_rejected(server, tmp_path):
    data = file_bytes("Train400", "test_002.png")
    mirror = serve_sets(server, "/short",
                        replace={("Train400", "test_002.png"): data[: len(data) // 2]})
    with pytest.raises(datasets.DownloadError, match=r"test_002.png.*size \d+ bytes, expected "
                                                     f"{len(data)} bytes"):
        bsd.load_bsd(tmp_path / "c", [mirror], manifest=small_manifest(), **FAST)
    # a connection that announces the whole file and hangs up half-way: retried, then failed
    dropped = serve_sets(server, "/drop", replace={
        ("Train400", "test_002.png"): ("drop", data, len(data) // 2)})
    with pytest.raises(datasets.DownloadError, match=r"connection closed after \d+ of "
                                                     f"{len(data)} bytes"):
        bsd.load_bsd(tmp_path / "c2", [dropped], manifest=small_manifest(), **FAST)
    assert not (tmp_path / "c2" / "Train400" / "test_002.png").exists()


def test_404_moves_to_the_next_mirror_and_all_failing_lists_each(server, tmp_path, caplog):
    missing = serve_sets(server, "/gone", replace={("BSD68", "test001.png"): 404})
    good = serve_sets(server, "/nat")
    pools = bsd.load_bsd(tmp_path / "c", [missing, good], manifest=small_manifest(), **FAST)
    assert pools.test.shape == (2, 321, 481)
    assert "/gone/BSD68/test001.png" in server.requests
    # the mirror that served test001 is asked first for the next file
    assert server.requests[-3:] == ["/gone/BSD68/test001.png", "/nat/BSD68/test001.png",
                                    "/nat/BSD68/test004.png"]
    # a missing folder first: one warning, its failure once, then the working mirror only
    server.requests.clear()
    with caplog.at_level("WARNING", logger="gmmrestore"):
        bsd.load_bsd(tmp_path / "c2", [str(tmp_path / "nowhere"), good],
                     manifest=small_manifest(), **FAST)
    assert "nowhere: folder not found" in caplog.text
    assert caplog.text.count("nowhere/Train400/test_001.png") >= 1
    assert "nowhere/Train400/test_002.png" not in caplog.text
    assert len(server.requests) == 4
    with pytest.raises(datasets.DownloadError) as info:
        bsd.load_bsd(tmp_path / "c3", [missing, f"{server.url}/nothing/"],
                     manifest=small_manifest(), **FAST)
    text = str(info.value)
    assert "test001.png" in text and "HTTP 404" in text
    assert f"{missing}BSD68/test001.png" in text and "/nothing/BSD68/test001.png" in text
    assert not info.value.integrity_failure


def test_folder_and_file_url_mirrors_selection_and_crop(tmp_path):
    selection = bsd.BsdSelection(test_names=("test004", "test001.png"), crop=255)
    pools = bsd.load_bsd(tmp_path / "c", [str(NATURAL)], selection,
                         manifest=small_manifest(), **FAST)
    assert pools.test.shape == (2, 255, 255) and not pools.test_transposed.any()
    landscape = skimage.io.imread(NATURAL / "BSD68" / "test004.png")
    np.testing.assert_array_equal(pools.test[1] * 255, landscape[33:288, 113:368])
    assert pools.attrs["source"].startswith(f"bsd download from {NATURAL.as_uri()}")
    by_url = bsd.load_bsd(tmp_path / "c2", [NATURAL.as_uri()],
                          bsd.BsdSelection(test_names=("test001",)),
                          manifest=small_manifest(), **FAST)
    assert list(by_url.test_ids) == ["test001"] and by_url.test.shape == (1, 321, 481)
    with pytest.raises(GmmRestoreError, match=r"BSD68: no image named 'test999'"):
        bsd.load_bsd(tmp_path / "c", [str(NATURAL)], bsd.BsdSelection(test_names=("test999",)),
                     manifest=small_manifest())
    with pytest.raises(GmmRestoreError, match="crop 400 does not fit its 481x321"):
        bsd.load_bsd(tmp_path / "c", [str(NATURAL)], bsd.BsdSelection(crop=400),
                     manifest=small_manifest())
    with pytest.raises(GmmRestoreError, match="unknown set 'BSD500'"):
        bsd.load_bsd(tmp_path / "c", [str(NATURAL)], bsd.BsdSelection(test_set="BSD500"),
                     manifest=small_manifest())


def test_decode_checks_gray_8bit_and_size(tmp_path):
    entry = small_manifest()["Train400"][0]
    rgb = tmp_path / "rgb.png"
    skimage.io.imsave(rgb, np.zeros((180, 180, 3), np.uint8), check_contrast=False)
    with pytest.raises(GmmRestoreError, match="expected 8-bit grayscale"):
        bsd.decode_png(rgb, entry)
    small = tmp_path / "small.png"
    skimage.io.imsave(small, np.zeros((20, 30), np.uint8), check_contrast=False)
    with pytest.raises(GmmRestoreError, match="20x30 pixels; Train400 images are 180x180"):
        bsd.decode_png(small, entry)
    text = tmp_path / "x.png"
    text.write_text("not a png")
    with pytest.raises(GmmRestoreError, match="cannot decode as PNG"):
        bsd.decode_png(text, entry)
    from PIL import Image

    gray16 = tmp_path / "gray16.png"
    Image.fromarray(np.zeros((180, 180), np.uint16)).save(gray16)
    palette = tmp_path / "palette.png"
    Image.fromarray(np.zeros((180, 180), np.uint8)).convert("P").save(palette)
    for path in (gray16, palette):
        with pytest.raises(GmmRestoreError, match=r"mode (I;16|I|P) .*expected 8-bit grayscale"):
            bsd.decode_png(path, entry)
    jpeg = tmp_path / "jpeg.png"  # another format under a PNG name
    Image.fromarray(np.zeros((180, 180), np.uint8)).save(jpeg, format="JPEG")
    truncated = tmp_path / "truncated.png"
    good = tmp_path / "good.png"
    Image.fromarray(np.arange(180 * 180, dtype=np.uint32).reshape(180, 180).astype(np.uint8)
                    ).save(good)
    truncated.write_bytes(good.read_bytes()[:-200])
    for path in (jpeg, truncated, text):
        with pytest.raises(GmmRestoreError) as info:
            bsd.decode_png(path, entry)
        # one line, led by the set's file name rather than the temporary download path
        assert str(info.value).startswith(f"{entry.file}: cannot decode as PNG (")
        assert "\n" not in str(info.value)
    image = bsd.decode_png(good, entry)
    assert image.dtype == np.uint8 and image.shape == (180, 180)


def test_orient_landscape_against_loops():
    rng = np.random.default_rng(1)
    images = [rng.random((3, 5)), rng.random((5, 3)), rng.random((3, 5))]
    stack, flags = bsd.orient_landscape(images)
    assert stack.shape == (3, 3, 5) and flags.tolist() == [False, True, False]
    for x, s, t in zip(images, stack, flags, strict=True):
        np.testing.assert_array_equal(bsd.original_orientation(s, t), x)
    with pytest.raises(GmmRestoreError, match="cannot share one stack"):
        bsd.orient_landscape([rng.random((3, 5)), rng.random((4, 5))])


def test_make_dataset_keeps_ids_and_flags_of_the_drawn_test_images(tmp_path):
    rng = np.random.default_rng(2)
    pools = datasets.Pools(train=rng.random((12, 6, 6), dtype=np.float32),
                           test=rng.random((5, 4, 7), dtype=np.float32),
                           test_ids=[f"t{i}" for i in range(5)],
                           test_transposed=np.array([1, 0, 1, 1, 0], bool),
                           attrs={"dataset": "toy", "source": "toy"})
    arrays, attrs = datasets.make_dataset(pools, n_train=8, n_validation=3, n_test=3, seed=5)
    picked = [int(i[1:]) for i in attrs["test_ids"]]
    assert len(picked) == 3 and picked == sorted(picked)
    np.testing.assert_array_equal(arrays["test"], pools.test[picked])
    np.testing.assert_array_equal(arrays["test_transposed"], pools.test_transposed[picked])
    assert (attrs["height"], attrs["width"], attrs["test_height"], attrs["test_width"]) == (
        6, 6, 4, 7)
    path = tmp_path / "d.h5"
    datasets.write_dataset_file(path, arrays, attrs)
    back, battrs = datasets.load_dataset_file(path)
    np.testing.assert_array_equal(back["test_transposed"], arrays["test_transposed"])
    assert list(battrs["test_ids"]) == attrs["test_ids"]
    bad = dict(arrays, validation=np.zeros((2, 4, 7), np.float32))
    with pytest.raises(GmmRestoreError, match="'validation' images are 4x7, 'train' images 6x6"):
        datasets.write_dataset_file(tmp_path / "bad.h5", bad, attrs)


@pytest.mark.slow
def test_script_downloads_the_pinned_sets_from_a_loopback_mirror(server, tmp_path, run_main):
    full = {s: [e.file for e in v] for s, v in bsd.load_manifest().items()}
    mirror = serve_sets(server, "/all", sets=full)
    out = tmp_path / "bsd.h5"
    code, err = run_main(SCRIPT, "--source", "bsd", "--out", out, "--cache-dir",
                         tmp_path / "cache", "--mirror", mirror, "--n-train", 30,
                         "--n-validation", 5, "--test-image", "test002", "--test-image",
                         "test005", "--n-test", 2, "--seed", 3, "--retries", 0)
    assert code == 0, err
    arrays, attrs = datasets.load_dataset_file(out)
    assert arrays["train"].shape == (30, 180, 180) and arrays["validation"].shape == (5, 180, 180)
    assert arrays["test"].shape == (2, 321, 481)
    assert list(attrs["test_ids"]) == ["test002", "test005"]
    assert arrays["test_transposed"].tolist() == [True, False]
    assert attrs["source"] == f"bsd download from {mirror}" and attrs["dataset"] == "bsd"
    assert len(server.requests) == 402  # 400 Train400 crops and the two test images
    code, err = run_main(SCRIPT, "--source", "bsd", "--out", out, "--digests", "x.json")
    assert code == 2 and "do not apply to --source bsd" in err


@pytest.mark.slow
def test_workflow_on_whole_bsd68_images_from_a_loopback_mirror(server, tmp_path):
    from test_workflow import snakemake

    full = {s: [e.file for e in v] for s, v in bsd.load_manifest().items()}
    mirror = serve_sets(server, "/natural", sets=full)
    override = tmp_path / "mirror.yaml"
    override.write_text(f'dataset: {{mirrors: ["{mirror}"]}}\n')
    snakemake(tmp_path, "--configfile", Path(ROOT) / "tests" / "configs" / "bsd_tiny.yaml",
              override)
    results = tmp_path / "results"
    (setting,) = (results / "bsdtiny").glob("none_s*")  # sigma 25/255, written exactly
    with h5py.File(setting / "corrupted.h5") as fh:
        assert fh["clean"].shape == (2, 321, 481)
        assert fh["transposed"][:].tolist() == [True, False]
        assert list(fh.attrs["ids"]) == ["test001", "test004"]
        clean = fh["clean"][:]
    portrait = skimage.io.imread(NATURAL / "BSD68" / "test001.png")
    np.testing.assert_allclose(clean[0], portrait.T / 255, atol=1e-6)
    with open(results / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["method"] for r in rows} == {"corrupted", "mapk", "epll", "tv", "bm3d"}
    assert {r["image_id"] for r in rows} == {"test001", "test004"}
    psnr = {(r["method"], r["image_id"]): float(r["psnr"]) for r in rows}
    for image in ("test001", "test004"):
        for method in ("mapk", "epll", "bm3d"):
            assert psnr[method, image] > psnr["corrupted", image] + 4
    assert (results / "figures" / f"examples_bsdtiny_{setting.name}.png").stat().st_size > 0


def test_published_table_lookup():
    assert bsd.published_psnr("bsd68_denoising", "epll", 15 / 255) == 31.21
    assert bsd.published_psnr("bsd68_denoising", "bm3d", float("0.196078")) == 25.62
    assert bsd.published_psnr("bsd68_denoising", "epll", 20 / 255) is None
    assert bsd.published_psnr("bsd68_denoising", "mapk", 25 / 255) is None
    with pytest.raises(GmmRestoreError, match="unknown table of published values 'x'"):
        bsd.published_psnr("x", "epll", 0.1)


def test_summary_lists_published_values_and_unclipped_psnr(tmp_path, run_main):
    from gmmrestore.h5io import write_h5

    rng = np.random.default_rng(4)
    clean = rng.random((3, 9, 11))
    sigma = 25 / 255
    corrupted = clean + sigma * rng.standard_normal(clean.shape)  # not clipped
    restored = clean + 0.05 * rng.standard_normal(clean.shape) + 0.02  # leaves [0, 1]
    write_h5(tmp_path / "c.h5", "corrupted", {"clean": clean, "corrupted": corrupted},
             {"dataset": "bsd", "blur": "none", "noise_sigma": sigma, "ids": ["a", "b", "c"]})
    write_h5(tmp_path / "r.h5", "restored", {"restored": restored},
             {"method": "epll", "kernel_source": "true", "patch_size": 8, "n_components": 200})
    for name, extra in (("corr.csv", []), ("epll.csv", ["--restored", tmp_path / "r.h5"])):
        code, err = run_main("evaluate_restoration", "--corrupted", tmp_path / "c.h5", *extra,
                             "--out", tmp_path / name)
        assert code == 0, err
    rows = {}
    for name in ("corr.csv", "epll.csv"):
        with open(tmp_path / name, newline="") as fh:
            rows[name] = list(csv.DictReader(fh))
    for name, images in (("corr.csv", corrupted), ("epll.csv", restored)):
        mse_raw = ((images - clean) ** 2).mean(axis=(1, 2))
        mse_clip = ((np.clip(images, 0, 1) - clean) ** 2).mean(axis=(1, 2))
        got = rows[name]
        assert [r["image_id"] for r in got] == ["a", "b", "c"]
        np.testing.assert_allclose([float(r["psnr_unclipped"]) for r in got],
                                   -10 * np.log10(mse_raw), atol=1e-5)
        np.testing.assert_allclose([float(r["psnr"]) for r in got], -10 * np.log10(mse_clip),
                                   atol=1e-5)
    code, err = run_main("collect_metrics", tmp_path / "corr.csv", tmp_path / "epll.csv",
                         "--metrics", tmp_path / "m.csv", "--summary", tmp_path / "s.csv",
                         "--published", "bsd68_denoising", "--denoising-blur", "none")
    assert code == 0, err
    with open(tmp_path / "s.csv", newline="") as fh:
        summary = {r["method"]: r for r in csv.DictReader(fh)}
    epll = summary["epll"]
    mean = np.mean([float(r["psnr"]) for r in rows["epll.csv"]])
    assert epll["published_psnr"] == "28.68"
    assert float(epll["psnr_vs_published"]) == pytest.approx(mean - 28.68, abs=1e-3)
    assert float(epll["psnr_unclipped_mean"]) == pytest.approx(
        np.mean([float(r["psnr_unclipped"]) for r in rows["epll.csv"]]), abs=1e-3)
    assert summary["corrupted"]["published_psnr"] == ""


def test_baseline_with_one_parameter_value_skips_validation(tmp_path, run_main, monkeypatch):
    from gmmrestore.h5io import read_h5, write_h5
    from gmmrestore.restore import baselines

    rng = np.random.default_rng(6)
    clean = rng.random((2, 24, 24))
    write_h5(tmp_path / "c.h5", "corrupted",
             {"clean": clean, "corrupted": clean + 0.1 * rng.standard_normal(clean.shape),
              "val_clean": clean, "val_corrupted": clean + 0.1, "kernel": np.ones((1, 1))},
             {"noise_sigma": 0.1, "blur": "none", "dataset": "t"})

    def no_tuning(*args, **kw):
        raise AssertionError("tune_baseline called for a single parameter value")

    monkeypatch.setattr(baselines, "tune_baseline", no_tuning)
    code, err = run_main("restore_baseline", "--corrupted", tmp_path / "c.h5", "--method",
                         "bm3d", "--out", tmp_path / "r.h5", "--no-clip")
    assert code == 0, err
    assert "nothing to tune" in err
    arrays, attrs = read_h5(tmp_path / "r.h5", "restored", ["restored"])
    assert attrs["param"] == "0.0" and attrs["clipped"] == 0
    expected = baselines.restore_baseline("bm3d", read_h5(tmp_path / "c.h5", "corrupted")[0][
        "corrupted"], np.ones((1, 1)), 0.1, 0.0, clip=False)
    np.testing.assert_allclose(arrays["restored"], expected, atol=1e-6)


@pytest.mark.parametrize("name, jobs", [("bsd68.yaml", {"restore_images": 6,
                                                          "restore_baseline": 9}),
                                         ("bsd68_deblur.yaml", {"restore_images": 8,
                                                                "restore_baseline": 24})])
def test_natural_configs_plan_a_run(tmp_path, name, jobs):
    from test_workflow import snakemake

    result = snakemake(tmp_path, "-n", "--configfile", Path(ROOT) / "configs" / name)
    text = result.stdout + result.stderr
    for rule, count in jobs.items():
        assert f"{rule}" in text
        line = next(ln for ln in text.splitlines() if ln.split()[:1] == [rule])
        assert int(line.split()[1]) == count, line
