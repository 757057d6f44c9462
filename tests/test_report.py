"""The Snakemake HTML report of a tiny run: self-contained, every result captioned with its
parameters, and every figure really rendered by a browser (headless Chromium, Debian's
``chromium`` package): each figure opened through the report's own result panel and view
button, decoded, non-blank on a canvas, and visible in a saved screenshot."""

import html
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, snakemake_env

SNAKEMAKE = os.path.join(os.path.dirname(sys.executable), "snakemake")
TINY = os.path.join(ROOT, "tests", "configs", "tiny.yaml")
HARNESS_JS = os.path.join(ROOT, "tests", "report_render_check.js")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars", "--window-size=1400,1000",
]
# virtual time runs only while the page is idle; the report's timers consume it fast, so the
# budget is large (it ends well before in real time, seconds) and grows on every retry
VIRTUAL_TIME_BUDGETS_MS = (600_000, 2_400_000, 9_600_000)


def chromium_executable():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def decode_data_uri(uri):
    """Pixels of a base64 PNG data URI: (height, width, channels) floats in [0, 1]."""
    import base64
    import io

    import matplotlib.image

    header, payload = uri.split(",", 1)
    assert header.startswith("data:image/png") and header.endswith(";base64"), header
    return matplotlib.image.imread(io.BytesIO(base64.b64decode(payload)), format="png")


@pytest.fixture(scope="module")
def report(tiny_run, tmp_path_factory):
    """The report of the shared tiny run: (path, parsed JavaScript data)."""
    path = tmp_path_factory.mktemp("report") / "report.html"
    env = snakemake_env()
    result = subprocess.run(
        [SNAKEMAKE, "-s", os.path.join(ROOT, "Snakefile"), "--directory", str(tiny_run),
         "--configfile", TINY, "--report", str(path)],
        capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    text = path.read_text(encoding="utf-8")
    data = {}
    for name in ("results", "categories"):
        match = re.search(rf"var {name} = (\{{.*?\}});\n", text, re.S)
        assert match, f"no '{name}' data in the report"
        data[name] = json.loads(match.group(1))
    match = re.search(r"var workflow_desc = (.*?);\n", text, re.S)
    data["workflow_desc"] = json.loads(match.group(1))
    return path, text, data


@pytest.mark.slow
def test_report_is_self_contained_and_captioned(report):
    _, text, data = report
    # nothing fetched from elsewhere: scripts, styles and results are embedded
    assert not re.search(r"<(script|img|link)[^>]+(src|href)=[\"']https?:", text)
    # the run's warnings (here: the offline fallback of the closed mirror) are listed
    assert "warnings.csv" in text and "OFFLINE FALLBACK" in text
    results = data["results"]
    expected = {
        "results/metrics.csv": ["tiny", "8 test", "mapk"],
        "results/summary.csv": ["tiny", "95%", "mapk"],
        "results/figures/gmm_tiny_m6_K3.png": ["6x6", "K = 3"],
        "results/figures/examples_tiny_gauss5_s0.1.png": ["gauss5", "0.1"],
    }
    assert set(results) == set(expected)
    for path, words in expected.items():
        entry = results[path]
        assert entry["data_uri"].startswith("data:"), path
        caption = html.unescape(re.sub(r"<[^>]+>", "", entry["caption"]))
        assert len(caption.split()) >= 15, (path, caption)
        assert "{{" not in caption and "snakemake." not in caption, (path, caption)
        for word in words:  # the caption says with which parameters
            assert word in caption, (path, word, caption)
    for path in expected:
        if path.endswith(".png"):  # the embedded figure decodes completely and is not blank
            image = decode_data_uri(results[path]["data_uri"])
            assert min(image.shape[:2]) > 200 and image[..., :3].std() > 0.1, path
    description = data["workflow_desc"]
    assert "gmmrestore" in description and "{{" not in description
    assert "Dataset: tiny" in description and "sweep_status.csv" in description
    assert {"Metrics", "GMM prior", "Restorations"} <= set(data["categories"])


@pytest.mark.slow
def test_report_figures_render_in_headless_chromium(report, tmp_path):
    chromium = chromium_executable()
    if chromium is None:
        pytest.skip("headless Chromium not installed (Debian: apt-get install chromium)")
    path, text, data = report
    script = open(HARNESS_JS, encoding="utf-8").read()
    end = text.rindex("</body>")
    harness = tmp_path / "report_check.html"
    harness.write_text(text[:end] + "<script>" + script + "</script>\n" + text[end:],
                       encoding="utf-8")
    url = harness.as_uri()

    def run(*args, budget_ms):
        profile = tmp_path / f"chromium-profile-{len(list(tmp_path.iterdir()))}"
        return subprocess.run(
            [chromium, *CHROMIUM_FLAGS, f"--virtual-time-budget={budget_ms}",
             f"--user-data-dir={profile}", *args, url],
            capture_output=True, text=True, timeout=180)

    done = "<title>render-check-done"
    for budget_ms in VIRTUAL_TIME_BUDGETS_MS:  # a loaded machine can starve the page's timers
        dom = run("--dump-dom", budget_ms=budget_ms)
        if done in dom.stdout:
            break
    title = re.search(r"<title>(.*?)</title>", dom.stdout, re.S)
    assert done in dom.stdout, (
        f"the check script did not finish in Chromium ({len(VIRTUAL_TIME_BUDGETS_MS)} "
        f"attempts, last virtual-time budget {budget_ms} ms, exit {dom.returncode}, page "
        f"title {title.group(1) if title else None!r}, {len(dom.stdout)} characters of DOM):\n"
        + dom.stderr[-2000:])
    match = re.search(r'<pre id="gmmrestore-render-check"[^>]*>(\{.*?)</pre>', dom.stdout, re.S)
    check = json.loads(html.unescape(match.group(1)))
    assert check["errors"] == [] and check["app_ready"]
    figures = {f["path"]: f for f in check["figures"]}
    images = {p for p, r in data["results"].items() if r["mime_type"].startswith("image/")}
    assert set(figures) == images and len(images) == 2
    for path, fig in figures.items():
        width, height = decode_data_uri(data["results"][path]["data_uri"]).shape[1::-1]
        assert (fig["width"], fig["height"]) == (width, height), fig  # decoded as in Python
        assert fig["clicked"] and fig["shown"], fig  # opened through the report's own UI
        assert "decode_error" not in fig, fig
        assert fig["width"] > 200 and fig["height"] > 200, fig
        assert min(fig["displayed"]) > 100, fig  # laid out on the page, not collapsed
        assert fig["nonwhite_fraction"] > 0.05 and fig["n_colors"] > 20, fig
        assert fig["caption_shown"], fig

    screenshot = tmp_path / "report_screenshot.png"
    shot = run(f"--screenshot={screenshot}", budget_ms=budget_ms)  # the budget that sufficed
    assert screenshot.exists() and screenshot.stat().st_size > 10_000, shot.stderr[-2000:]
    print(f"report screenshot: {screenshot}")
    import matplotlib.image

    pixels = matplotlib.image.imread(screenshot)[..., :3]
    # the last figure checked stays on screen: its area in the screenshot is not blank
    left, top, width, height = check["figures"][-1]["rect"]
    area = pixels[max(top, 0):top + height, max(left, 0):left + width]
    assert area.shape[0] > 100 and area.shape[1] > 100, area.shape
    assert (area.min(axis=2) < 0.95).mean() > 0.05, "the figure is blank in the screenshot"
    assert area.std() > 0.1
    assert len(np.unique((area * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 20
