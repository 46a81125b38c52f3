"""The drawing pad in a real browser: run 09_your_handwriting.ipynb in JupyterLab,
draw with the mouse on the pad, and check what the kernel answers; then restart
the kernel and check that the pad says so instead of silently taking ink."""
from __future__ import annotations

import math
from pathlib import Path

import nbformat
import pytest

NOTEBOOK = "notebooks/09_your_handwriting.ipynb"
ANSWER_TIMEOUT_MS = 5000  # lab_utils.drawing_pad.ANSWER_TIMEOUT_MS: when the page warns
RUN_TIMEOUT = 300  # s: the notebook's cells, kernel start included, on a busy 2-core machine


def wait_for_all_cells(page, timeout: float = 60) -> None:
    """Wait until JupyterLab shows every code cell of the notebook.

    Right after opening, only the first cells may be in the page; "Clear
    Outputs" clicked then leaves the saved execution numbers on the others,
    and "Run All" would look finished before it started.
    """
    path = Path(__file__).resolve().parents[2] / NOTEBOOK
    n = sum(c.cell_type == "code" for c in nbformat.read(path, as_version=4).cells)
    page.wait_for_function(
        """n => document.querySelectorAll(
            '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt').length === n""",
        arg=n, timeout=timeout * 1000,
    )


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


def wait_for_reading(page, text: str, timeout: float = 60) -> str:
    """Wait until the pad's reading contains ``text``; returns the reading."""
    reading = page.locator(".cvae-pad-reading").first
    page.wait_for_function("([el, text]) => el.textContent.includes(text)",
                           arg=[reading.element_handle(), text], timeout=timeout * 1000)
    return reading.inner_text()


def pad_status(page) -> str:
    """The pad's own status line: empty while Python answers the drawings."""
    return page.locator(".cvae-pad-status").first.evaluate("el => el.textContent")


@pytest.mark.e2e
def test_draw_a_one_then_clear_and_draw_a_zero_then_restart_the_kernel(lab):
    page = lab.page
    lab.open_notebook(NOTEBOOK)
    wait_for_all_cells(page)
    lab.run_all_cells(timeout=RUN_TIMEOUT)

    canvas = lab.wait_for_widget("canvas.cvae-pad-canvas")
    sheet = lab.wait_for_widget("img.cvae-pad-sheet")
    assert "draw a digit first" in wait_for_reading(page, "draw a digit first")
    page.wait_for_function("img => img.src.startsWith('blob:')", arg=sheet.element_handle())
    src_before = sheet.get_attribute("src")
    sheet_before = lab.image_bytes(sheet)

    # A vertical stroke: the classifier reads 1, and the sheet shows ten digits.
    draw(page, canvas, [(140, 40 + 10 * i) for i in range(21)])
    reading = wait_for_reading(page, "reads 1")
    assert "sure" in reading
    page.wait_for_function("([img, old]) => img.src !== old",
                           arg=[sheet.element_handle(), src_before], timeout=30_000)
    sheet_one = lab.image_bytes(sheet)
    assert sheet_one != sheet_before, "the sheet did not change after the stroke"
    assert page.locator("img.cvae-pad-sheet").count() == 1  # updated in place

    # Clear, then an ellipse: the classifier reads 0.
    page.locator("button.cvae-pad-clear").first.click()
    wait_for_reading(page, "draw a digit first")
    ellipse = [(140 + 75 * math.sin(2 * math.pi * k / 36), 140 - 105 * math.cos(2 * math.pi * k / 36))
               for k in range(38)]
    draw(page, canvas, ellipse)
    assert "reads 0" in wait_for_reading(page, "reads 0")
    assert lab.image_bytes(sheet) != sheet_one

    # The live kernel answered every drawing: no warning, even after the pad's timeout.
    page.wait_for_timeout(ANSWER_TIMEOUT_MS + 1500)
    assert pad_status(page) == "", f"a false alarm with a live kernel: {pad_status(page)!r}"

    # Restart the kernel (what Kernel > Restart Kernel does): the pad's Python object is
    # gone. The next stroke must not vanish silently: the page says what to do.
    page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.restart()")
    lab.wait_for_kernel_idle()
    draw(page, canvas, [(140, 40 + 10 * i) for i in range(21)])
    status = page.locator(".cvae-pad-status").first
    page.wait_for_function("el => el.textContent.includes('run the notebook from the top')",
                           arg=status.element_handle(), timeout=30_000)
    assert status.is_visible()
    assert "reads 0" in wait_for_reading(page, "reads 0")  # nothing in Python read the 1
