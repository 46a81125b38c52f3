"""The website (``make site``) in headless Chromium: the explorer and the drawing pad
of the pages of 06 and 09 work, with the models running in the page, and no
request leaves the site.

The site is (re)built first, incrementally (``site/_ext/cvae_site.build``), then
served on 127.0.0.1.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
sys.path.insert(0, str(REPO / "site" / "_ext"))
import cvae_site  # noqa: E402

pytest.importorskip("sphinx", reason="the site needs pip install -e '.[site]'")
pytest.importorskip("myst_nb", reason="the site needs pip install -e '.[site]'")


@pytest.fixture(scope="module")
def site_url():
    cvae_site.build()
    with cvae_site.serve() as url:
        yield url


@pytest.fixture
def site_page(request, browser, site_url):
    """A page that records every request and every page error, and checks them at the end."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(30_000)
    page = context.new_page()
    requests, errors, missing = [], [], []
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("response", lambda r: missing.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    try:
        yield page
        host = urlsplit(site_url).netloc
        foreign = [u for u in requests if urlsplit(u).scheme not in ("data", "blob")
                   and urlsplit(u).netloc != host]
        assert not foreign, f"requests left the site: {foreign}"
        assert not errors, f"the page logged errors: {errors}"
        # (the browser's own /favicon.ico guess aside: the theme sets no icon)
        missing = [m for m in missing if not m.endswith("/favicon.ico")]
        assert not missing, f"files the pages asked for are missing: {missing}"
    finally:
        if any(getattr(request.node, f"rep_{w}", None) is not None
               and getattr(request.node, f"rep_{w}").failed for w in ("setup", "call")):
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
        context.close()


def draw(page, canvas, points: list[tuple[float, float]]) -> None:
    """One mouse stroke through ``points`` (canvas pixels; the canvas is 280 CSS px)."""
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    sx, sy = box["width"] / 280, box["height"] / 280
    at = [(box["x"] + x * sx, box["y"] + y * sy) for x, y in points]
    page.mouse.move(*at[0])
    page.mouse.down()
    for x, y in at[1:]:
        page.mouse.move(x, y, steps=4)
    page.mouse.up()


def open_page(page, url: str) -> None:
    page.goto(url)
    page.wait_for_function("() => window.cvaeLab && window.cvaeLab.ready", timeout=60_000)


def picture(locator) -> str:
    return locator.evaluate("c => c.toDataURL('image/png')")


@pytest.mark.e2e
def test_index_has_every_notebook_and_search(site_page, site_url):
    site_page.goto(site_url + "/index.html")
    links = site_page.locator(".bd-sidebar a.reference.internal, nav a.reference.internal")
    hrefs = " ".join(links.evaluate_all("els => els.map(e => e.getAttribute('href'))"))
    for nb in sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        assert f"notebooks/{nb.stem}.html" in hrefs, f"{nb.stem} is not in the navigation"
    assert (Path(cvae_site.HTML) / "searchindex.js").is_file()
    assert site_page.locator("form[action*='search'] input, input[name='q']").count() >= 1


@pytest.mark.e2e
def test_explorer_moves_with_the_keyboard(site_page, site_url):
    page = site_page
    open_page(page, site_url + "/notebooks/06_exploring.html")
    explorer = page.locator(".cvae-explorer").first
    digit = explorer.locator("input[type=range].cvae-explorer-digit")
    title = explorer.locator(".cvae-explorer-title")
    image = explorer.locator("canvas.cvae-explorer-image")
    assert explorer.locator("input[type=range].cvae-explorer-noise").count() == 20
    start = int(digit.input_value())
    assert f"label: {start}" in title.inner_text()
    before, row_before = picture(image), picture(explorer.locator("canvas.cvae-explorer-row"))

    digit.focus()
    key = "ArrowRight" if start < 9 else "ArrowLeft"
    page.keyboard.press(key)
    new = start + (1 if key == "ArrowRight" else -1)
    assert int(digit.input_value()) == new
    page.wait_for_function("([el, t]) => el.textContent.includes(t)",
                           arg=[title.element_handle(), f"label: {new}"])
    assert picture(image) != before, "the big picture did not change"
    assert picture(explorer.locator("canvas.cvae-explorer-row")) != row_before  # the frame moved

    # A noise slider, by keyboard too: the whole row is decoded again.
    row = picture(explorer.locator("canvas.cvae-explorer-row"))
    explorer.locator("input.cvae-explorer-noise").first.focus()
    for _ in range(50):
        page.keyboard.press("ArrowUp")
    assert picture(explorer.locator("canvas.cvae-explorer-row")) != row


@pytest.mark.e2e
def test_pad_reads_a_one_then_a_zero(site_page, site_url):
    page = site_page
    open_page(page, site_url + "/notebooks/09_your_handwriting.html")
    pad = page.locator(".cvae-drawing-pad").first
    canvas = pad.locator("canvas.cvae-pad-canvas")
    reading = pad.locator(".cvae-pad-reading")
    sheet = pad.locator("canvas.cvae-pad-sheet")
    assert "draw a digit first" in reading.inner_text()
    blank = picture(sheet)

    draw(page, canvas, [(140, 40 + 10 * i) for i in range(21)])  # a vertical stroke
    page.wait_for_function("el => el.textContent.includes('reads')", arg=reading.element_handle())
    assert "the classifier reads 1 (" in reading.inner_text() and "% sure" in reading.inner_text()
    assert pad.locator("select.cvae-pad-digit").input_value() == "1"
    assert picture(sheet) != blank

    pad.locator("button.cvae-pad-clear").click()
    page.wait_for_function("el => el.textContent.includes('draw a digit first')",
                           arg=reading.element_handle())
    ellipse = [(140 + 75 * math.sin(2 * math.pi * k / 36), 140 - 105 * math.cos(2 * math.pi * k / 36))
               for k in range(38)]
    draw(page, canvas, ellipse)
    page.wait_for_function("el => el.textContent.includes('reads')", arg=reading.element_handle())
    assert "the classifier reads 0 (" in reading.inner_text()

    # "explore this style" opens an explorer at the drawing's z and digit.
    pad.locator("button.cvae-pad-explore").click()
    explorer = pad.locator(".cvae-explorer")
    assert explorer.locator("input.cvae-explorer-digit").input_value() == "0"
    assert "label: 0" in explorer.locator(".cvae-explorer-title").inner_text()
    # No "Python is not answering" from the shared canvas module: the page answers it.
    page.wait_for_timeout(200)
    assert pad.locator(".cvae-pad-status").inner_text() == ""


@pytest.mark.e2e
def test_pad_pictures_are_the_python_widgets(site_page, site_url):
    """The sheet the page paints (its own pixel loops) is lab_utils.widgets.row_pixels of
    PyTorch's decodes of the page's z, within one grey level; and the shared canvas
    module made no PNG for it (the page reads the canvas itself)."""
    import numpy as np
    import torch

    from lab_utils import load_pretrained
    from lab_utils.widgets import row_pixels

    page = site_page
    pad_page = next(Path(cvae_site.HTML, "notebooks").glob("*_your_handwriting.html"))
    open_page(page, site_url + "/notebooks/" + pad_page.name)
    pad = page.locator(".cvae-drawing-pad").first
    draw(page, pad.locator("canvas.cvae-pad-canvas"), [(90 + 6 * i, 60 + 9 * i) for i in range(20)])
    page.wait_for_function("() => window.cvaeLab.pads[0].updates > 0")
    got = page.evaluate("""() => { const p = window.cvaeLab.pads[0];
        const red = (c) => Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data
                                      .filter((_, i) => i % 4 === 0));
        return {x: Array.from(p.x), digit: p.digit, png: p.model.get('png'),
                sheet: red(p.sheet), w: p.sheet.width, seen: red(p.seen)}; }""")
    assert got["png"] == "canvas"
    model = load_pretrained()
    x = torch.tensor(got["x"]).view(1, 1, 28, 28)
    with torch.inference_mode():
        mu, _ = model.encode(x, torch.tensor([got["digit"]]))
        tiles = model.decode(mu.expand(10, -1), torch.arange(10))[:, 0]
    want = row_pixels((tiles * 255).round().clamp(0, 255).to(torch.uint8).numpy(), got["digit"])
    sheet = np.array(got["sheet"]).reshape(-1, got["w"])
    assert sheet.shape == want.shape
    assert np.abs(sheet - want.astype(int)).max() <= 1
    seen = (x[0, 0] * 255).round().clamp(0, 255).numpy().astype(int)
    assert np.abs(np.array(got["seen"]).reshape(28, 28) - seen).max() <= 1
