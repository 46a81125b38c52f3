"""The slider explorer in a real browser: run 06_exploring.ipynb in JupyterLab,
press ArrowRight on the digit slider, and check the picture the browser shows."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

NOTEBOOK = "notebooks/06_exploring.ipynb"
# The notebook builds its explorer as explore(model, digit=3, seed=0).
START_DIGIT, SEED = 3, 0


def shown_pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("L")).astype(int)


def python_pixels(digit: int) -> np.ndarray:
    """The big picture the Python side draws for this state (same model, seed, digit)."""
    from lab_utils import load_pretrained
    from lab_utils.widgets import LatentExplorer

    explorer = LatentExplorer(load_pretrained(), digit=digit, seed=SEED)
    return shown_pixels(explorer.image_png)


@pytest.mark.e2e
def test_digit_slider_moves_with_the_keyboard(lab):
    page = lab.page
    lab.open_notebook(NOTEBOOK)
    lab.run_all_cells()

    explorer = page.locator(".cvae-explorer").first
    image = lab.wait_for_widget("img.cvae-explorer-image")
    readout = explorer.locator(".cvae-explorer-digit .widget-readout")
    assert readout.inner_text().strip() == str(START_DIGIT)
    page.wait_for_function("img => img.src.startsWith('blob:')", arg=image.element_handle())
    src_before = image.get_attribute("src")
    before = shown_pixels(lab.image_bytes(image))
    assert before.shape == (224, 224)
    assert np.abs(before - python_pixels(START_DIGIT)).max() <= 2

    handle = explorer.locator(".cvae-explorer-digit .noUi-handle").first
    handle.focus()
    page.keyboard.press("ArrowRight")

    # The kernel redraws and the browser swaps the picture in place.
    page.wait_for_function("([img, old]) => img.src !== old", arg=[image.element_handle(), src_before],
                           timeout=30_000)
    assert readout.inner_text().strip() == str(START_DIGIT + 1)
    after = shown_pixels(lab.image_bytes(image))
    assert np.abs(after - before).mean() > 10, "the picture barely changed"
    assert np.abs(after - python_pixels(START_DIGIT + 1)).max() <= 2, \
        f"the browser does not show digit {START_DIGIT + 1} with the notebook's noise"
    assert page.locator("img.cvae-explorer-image").count() == 1  # updated in place, not appended

    # The noise sliders are numbered from 0, like the latent dimensions of notebooks 02 and 03.
    labels = explorer.locator(".cvae-explorer-noise .widget-label").all_inner_texts()
    assert [t.strip() for t in labels] == [f"z{i}" for i in range(20)]

    # Temperature 0 (Home key): every slider shows the z decoded, 0, and new noise is locked.
    src_before = image.get_attribute("src")
    temperature = explorer.locator(".cvae-explorer-temperature .noUi-handle").first
    temperature.focus()
    page.keyboard.press("Home")
    page.wait_for_function(
        """el => {
            const readouts = [...el.querySelectorAll('.cvae-explorer-noise .widget-readout')];
            return readouts.length === 20 && readouts.every(r => r.textContent.trim() === '0.0');
        }""",
        arg=explorer.element_handle(), timeout=30_000,
    )
    page.wait_for_function("([img, old]) => img.src !== old", arg=[image.element_handle(), src_before],
                           timeout=30_000)
    assert explorer.locator("button.cvae-explorer-new-noise").is_disabled()
    assert "temperature 0" in explorer.locator(".cvae-explorer-note").inner_text()
