// Injected into a copy of a Snakemake HTML report by tests/test_report.py and run in headless
// Chromium. For every image result it opens the result's info panel (app.showResultInfo, as
// the report's menu does), clicks the panel's view button, waits for the figure in the
// content area, decodes it and counts its non-white pixels on a canvas. It leaves the last
// figure and its caption on screen for the screenshot and writes a JSON summary into
// a hidden <pre> element with id "gmmrestore-render-check".
(function () {
  "use strict";
  const out = { errors: [], figures: [] };
  window.addEventListener("error", (event) => out.errors.push(String(event.message)));
  // the report's buttons are <a href="#">: keep their React handlers, but no navigation
  // (headless Chromium's --dump-dom would take a fragment navigation as the end of loading)
  document.addEventListener("click", (event) => {
    if (event.target.closest && event.target.closest('a[href="#"]')) event.preventDefault();
  }, true);

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  async function waitFor(probe, ms) {
    const start = Date.now();
    while (Date.now() - start < ms) {
      const value = probe();
      if (value) return value;
      await sleep(50);
    }
    return null;
  }

  function pixelStats(img) {
    const canvas = document.createElement("canvas");
    canvas.width = img.naturalWidth;
    canvas.height = img.naturalHeight;
    const ctx = canvas.getContext("2d");
    ctx.drawImage(img, 0, 0);
    const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
    let nonwhite = 0;
    const colors = new Set();
    for (let i = 0; i < data.length; i += 4) {
      if (data[i] < 245 || data[i + 1] < 245 || data[i + 2] < 245) nonwhite++;
      if (colors.size < 256) colors.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
    }
    return { nonwhite_fraction: nonwhite / (data.length / 4), n_colors: colors.size };
  }

  async function check(path) {
    const entry = results[path];
    const record = { path: path, clicked: false, shown: false };
    // back to the menu first, so that the panel found below is this result's
    app.setView({ navbarMode: "menu" });
    await waitFor(() => !Array.from(document.querySelectorAll("#app table")).some(
      (t) => t.querySelector("a")), 5000);
    app.showResultInfo(path);
    const navbar = await waitFor(() => {
      const tables = Array.from(document.querySelectorAll("#app table"));
      return tables.find((t) => t.querySelector("a"));
    }, 5000);
    const button = navbar && navbar.querySelector("a");
    if (button) {
      button.click();
      record.clicked = true;
    }
    const img = await waitFor(
      () => Array.from(document.querySelectorAll("#app img")).find(
        (i) => i.getAttribute("src") === entry.data_uri), 5000);
    if (img) {
      record.shown = true;
      try {
        await img.decode();
      } catch (err) {
        record.decode_error = String(err);
      }
      record.width = img.naturalWidth;
      record.height = img.naturalHeight;
      const box = img.getBoundingClientRect();
      record.displayed = [Math.round(box.width), Math.round(box.height)];
      record.rect = [box.left, box.top, box.width, box.height].map(Math.round);
      Object.assign(record, pixelStats(img));
    }
    // the caption as the report shows it next to the figure
    const text = document.querySelector("#app").innerText;
    const caption = document.createElement("div");
    caption.innerHTML = entry.caption;
    const firstWords = caption.innerText.trim().split(/\s+/).slice(0, 6).join(" ");
    record.caption_shown = firstWords.length > 0 && text.replace(/\s+/g, " ").includes(firstWords);
    out.figures.push(record);
  }

  window.addEventListener("load", async () => {
    try {
      out.app_ready = !!(await waitFor(
        () => typeof app !== "undefined" && document.querySelector("#app").children.length, 10000));
      const paths = Object.keys(results).filter((p) => results[p].mime_type.startsWith("image/"));
      out.n_results = Object.keys(results).length;
      for (const path of paths) await check(path);
    } catch (err) {
      out.errors.push(String(err && err.stack ? err.stack : err));
    }
    const pre = document.createElement("pre");
    pre.id = "gmmrestore-render-check";
    pre.style.display = "none";
    pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
    document.title = "render-check-done";
  });
})();
