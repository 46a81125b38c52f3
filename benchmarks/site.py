"""The website (``make site``): its size, the model bytes, and how fast the page's
explorer and drawing pad answer, measured in headless Chromium.

Builds the site (incrementally), serves it on 127.0.0.1 and drives the pages of
06 and 09 the way a reader does:

* explorer: alternately move one noise slider (decode ten digits, draw) and the
  digit slider (no decode: the row already holds every label); each is one
  ``input`` event, timed in the page from the event to the drawn canvases;
* pad: mouse strokes on the canvas (Clear after every fourth); each is timed in
  the page from ``pointerup`` (a capturing listener that runs before the pad's
  own) to the drawn sheet: the shared canvas module's hand-over (the site asks it for
  no PNG), the pixels, to_mnist, the classifier, encode, ten decodes, the pictures;
  also the median of each stage as the page times it (``Pad.lastStages``).

Targets (issue 16): update <= 20 ms median; site <= 30 MB.

    python benchmarks/site.py                 # 300 explorer updates, 60 strokes
    python benchmarks/site.py --updates 1000 --strokes 200
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "site" / "_ext"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import cvae_site  # noqa: E402
from machine import contention_note, load_average  # noqa: E402

from lab_utils import web  # noqa: E402

CHROMIUM = os.environ.get("CVAE_LAB_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

EXPLORER_JS = """n => {
  const ex = window.cvaeLab.explorers[0];
  const noise = ex.noise[0].input, digit = ex.digit.input;
  const times = {noise: [], digit: []};
  for (let i = 0; i < n; i++) {
    const kind = i % 2 ? "digit" : "noise";
    const input = kind === "noise" ? noise : digit;
    if (kind === "noise") input.value = String(((i * 0.37) % 6) - 3);
    else input.value = String((Number(input.value) + 1) % 10);
    const t0 = performance.now();
    input.dispatchEvent(new Event("input", {bubbles: true}));
    times[kind].push(performance.now() - t0);
  }
  return times;
}"""


def tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def stats(ms: list[float]) -> str:
    q = statistics.quantiles(ms, n=20)
    return f"median {statistics.median(ms):5.2f} ms, p95 {q[18]:5.2f} ms (n={len(ms)})"


def stroke_points(k: int) -> list[tuple[float, float]]:
    """A different stroke each time: lines, arcs and loops across the pad."""
    kind = k % 3
    if kind == 0:  # a slanted line
        return [(100 + 8 * (k % 7) + 3 * i, 40 + 10 * i) for i in range(21)]
    if kind == 1:  # an ellipse
        return [(140 + 70 * math.sin(2 * math.pi * j / 30), 140 - 100 * math.cos(2 * math.pi * j / 30))
                for j in range(32)]
    return [(60 + 8 * i, 80 + 60 * math.sin(i / 3)) for i in range(20)]  # a wave


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--updates", type=int, default=300, help="explorer updates to time")
    p.add_argument("--strokes", type=int, default=60, help="pad strokes to time")
    args = p.parse_args(argv)
    from playwright.sync_api import sync_playwright

    load = load_average()
    html = cvae_site.build()
    models = html / "_static" / "models"
    site_mb = tree_bytes(html) / 1e6
    print(f"machine: {os.cpu_count()} CPUs, load average {load:.1f}; Chromium {CHROMIUM}")
    print(f"site: {site_mb:.1f} MB in {sum(1 for f in html.rglob('*') if f.is_file())} files "
          f"(target <= 30 MB); of which MathJax {tree_bytes(html / '_static' / 'mathjax') / 1e6:.1f} MB, "
          f"figures {tree_bytes(html / '_images') / 1e6:.1f} MB")
    sizes = ", ".join(f"{f.name} {f.stat().st_size / 1e3:.0f} kB" for f in sorted(models.iterdir()))
    print(f"model bytes: {web.model_bytes(models) / 1e6:.2f} MB ({sizes})")
    with cvae_site.serve(html) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url + "/notebooks/06_exploring.html")
        page.wait_for_function("() => window.cvaeLab && window.cvaeLab.ready", timeout=60_000)
        load_ms = page.evaluate("""() => {
            const r = performance.getEntriesByType('resource').filter(e => /models\\//.test(e.name));
            return Math.max(...r.map(e => e.responseEnd)) - Math.min(...r.map(e => e.startTime)); }""")
        page.evaluate(EXPLORER_JS, 20)  # warm up the JIT
        times = page.evaluate(EXPLORER_JS, args.updates)
        both = times["noise"] + times["digit"]
        print(f"explorer, one update (input event -> drawn), {args.updates} updates:")
        print(f"  all:                         {stats(both)}")
        print(f"  noise slider (10 decodes):   {stats(times['noise'])}")
        print(f"  digit slider (no decode):    {stats(times['digit'])}")
        print(f"  model download on the page:  {load_ms:.0f} ms (from the local server)")

        pad_page = next((html / "notebooks").glob("*_your_handwriting.html"))  # 08 or 09
        page.goto(url + "/notebooks/" + pad_page.name)
        page.wait_for_function("() => window.cvaeLab && window.cvaeLab.ready", timeout=60_000)
        page.evaluate("""() => { window.cvaeStrokeStart = 0;
            window.addEventListener('pointerup', () => { window.cvaeStrokeStart = performance.now(); },
                                    {capture: true}); }""")
        canvas = page.locator("canvas.cvae-pad-canvas").first
        canvas.scroll_into_view_if_needed()
        box = canvas.bounding_box()
        total, path_only, stages = [], [], {}
        for k in range(args.strokes + 3):
            if k % 4 == 0:
                page.locator("button.cvae-pad-clear").first.click()
            pts = stroke_points(k)
            page.mouse.move(box["x"] + pts[0][0], box["y"] + pts[0][1])
            page.mouse.down()
            for x, y in pts[1:]:
                page.mouse.move(box["x"] + x, box["y"] + y)
            page.mouse.up()
            r = page.evaluate("""() => { const p = window.cvaeLab.pads[0];
                return [p.lastUpdateEnd - window.cvaeStrokeStart, p.lastUpdateMs,
                        {"pointerup -> update": p.lastUpdateStart - window.cvaeStrokeStart,
                         ...p.lastStages}]; }""")
            if k >= 3:  # the first strokes warm up the JIT
                total.append(r[0])
                path_only.append(r[1])
                for name, ms in r[2].items():
                    stages.setdefault(name, []).append(ms)
        print(f"pad, one update after a stroke, {args.strokes} strokes:")
        print(f"  pointerup -> sheet drawn:    {stats(total)}")
        print(f"  of which the update path:    {stats(path_only)} (pixels -> to_mnist -> classifier "
              f"-> encode -> 10 decodes -> pictures)")
        print("  stages, median ms:           " + ", ".join(
            f"{name} {statistics.median(ms):.2f}" for name, ms in stages.items()))
        browser.close()
    contention_note(max(load, load_average()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
