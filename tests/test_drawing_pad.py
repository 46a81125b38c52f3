"""The drawing pad, driven from Python: the same update path a finished stroke takes."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from lab_utils import load_pretrained
from lab_utils.drawing_pad import DrawingPad, canvas_from_png, png_from_canvas
from lab_utils.classifier import load_classifier
from lab_utils.handwriting import draw_strokes, to_mnist

VERTICAL = draw_strokes([[(150, 40), (140, 240)]])
ELLIPSE = draw_strokes([[(140 + 70 * np.cos(a), 140 + 105 * np.sin(a))
                         for a in np.linspace(0, 2 * np.pi, 60)]])
SEVEN = draw_strokes([[(60, 50), (220, 50), (110, 250)]])


@pytest.fixture(scope="module")
def shipped():
    return load_pretrained(), load_classifier()


@pytest.fixture
def pad(shipped):
    model, classifier = shipped
    return DrawingPad(model, classifier=classifier)


def pixels(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("L"))


def test_a_vertical_stroke_reads_1_and_an_ellipse_0(pad):
    threads = torch.get_num_threads()
    assert pad.process_canvas(VERTICAL) == 1
    assert torch.get_num_threads() == threads  # the update's one-thread spell is undone
    assert pad.digit == 1 and pad.reading[1] > 0.9
    assert "reads <b class='cvae-pad-read-digit'>1</b>" in pad.reading_html.value
    sheet_one = pad.sheet_png
    assert pad.process_canvas(ELLIPSE) == 0
    assert pad.digit == 0
    assert pad.sheet_png != sheet_one


def test_the_model_sees_to_mnist_of_the_drawing(pad):
    pad.process_canvas(SEVEN)
    seen = pixels(pad.seen_png)
    assert seen.shape == (112, 112)  # 28 px shown at 4x, nearest neighbour
    expected = (to_mnist(SEVEN) * 255).round().to(torch.uint8).numpy()
    assert np.array_equal(seen[::4, ::4], expected)
    assert torch.equal(pad.x[0, 0], to_mnist(SEVEN))


def test_z_is_the_drawing_mean_with_the_picked_digit(pad, shipped):
    model, _ = shipped
    pad.process_canvas(SEVEN)
    with torch.inference_mode():
        mu, _ = model.encode(to_mnist(SEVEN).view(1, 1, 28, 28), torch.tensor([7]))
    assert torch.equal(pad.z, mu)
    assert pixels(pad.sheet_png).shape == (68, 626)  # ten 56 px digits, 6 px gaps


def test_empty_drawing_says_draw_a_digit_first(pad):
    pad.process_canvas(SEVEN)
    assert pad.process_canvas(np.zeros((280, 280), np.uint8)) is None
    assert "draw a digit first" in pad.reading_html.value
    assert pad.reading is None and pad.z is None
    assert pixels(pad.sheet_png).max() == 72  # only the grey gaps: no digits
    pad.receive_png("")  # what Clear sends
    assert "draw a digit first" in pad.reading_html.value


def test_a_png_from_the_browser_takes_the_same_path(pad):
    url = png_from_canvas(SEVEN)
    assert url.startswith("data:image/png;base64,")
    assert np.array_equal(canvas_from_png(url), (SEVEN * 255).round().astype(np.uint8))
    pad.canvas.png = url  # as if the browser had sent a finished stroke
    assert pad.reading[0] == 7
    assert pixels(pad.seen_png).max() > 200


def test_a_broken_png_shows_a_message_not_a_traceback(pad):
    pad.canvas.png = "data:image/png;base64,bm90IGEgcG5n"  # "not a png"
    assert "could not read the drawing" in pad.reading_html.value


def test_bad_arrays_are_refused_by_process_canvas(pad):
    with pytest.raises(ValueError, match="NaN"):
        pad.process_canvas(np.full((280, 280), np.nan))


def test_the_students_correction_holds_until_clear(pad):
    pad.process_canvas(VERTICAL)
    sheet, z = pad.sheet_png, pad.z.clone()
    pad.digit = 7  # the student says: that was a 7
    assert "you picked <b>7</b>" in pad.reading_html.value
    assert pad.sheet_png != sheet and not torch.equal(pad.z, z)
    pad.process_canvas(VERTICAL)  # another stroke: the correction stays
    assert pad.digit == 7 and pad.reading[0] == 1
    pad.clear()
    pad.process_canvas(ELLIPSE)  # after Clear the classifier presets the picker again
    assert pad.digit == 0


def test_draw_shows_a_drawing_and_clear_empties_the_canvas(pad):
    assert pad.draw(SEVEN) == 7
    assert pad.canvas.png.startswith("data:image/png")
    pad.clear()
    assert pad.canvas.png == "" and pad.reading is None


def test_explore_hands_z_and_digit_to_the_slider_explorer(pad):
    assert pad.explore() is None  # nothing drawn yet
    assert "draw a digit first" in pad.reading_html.value
    pad.process_canvas(SEVEN)
    explorer = pad.explore()
    assert explorer.digit == 7
    assert torch.allclose(explorer.z, pad.z[0].clamp(-3, 3), atol=0.006)  # sliders: 0.01 steps
    assert pad.explorer_box.children == (explorer.widget,)
    pad.process_canvas(ELLIPSE)
    assert pad.explore() is explorer and explorer.digit == 0
    assert torch.allclose(explorer.z, pad.z[0].clamp(-3, 3), atol=0.006)


def test_clear_closes_the_explorer_and_forgets_the_cleared_style(pad):
    pad.process_canvas(SEVEN)
    explorer = pad.explore()
    seven_image = explorer.image_png
    assert explorer.z.abs().max() > 0.1  # the seven's style
    pad.clear()
    assert pad.explorer_box.children == ()  # the explorer is closed ...
    assert torch.equal(explorer.z, torch.zeros(20))  # ... and no longer holds the seven's z
    assert explorer.image_png != seven_image
    # the browser's Clear button (it sends png "") does the same
    pad.draw(ELLIPSE)
    assert pad.explore() is explorer and pad.explorer_box.children == (explorer.widget,)
    assert torch.allclose(explorer.z, pad.z[0].clamp(-3, 3), atol=0.006)
    pad.canvas.png = ""
    assert pad.explorer_box.children == () and torch.equal(explorer.z, torch.zeros(20))
    assert "draw a digit first" in pad.reading_html.value


def test_the_canvas_front_end_is_one_static_file(pad):
    from pathlib import Path

    from lab_utils.drawing_pad import PAD_CSS, PAD_JS, PadCanvas

    static = Path(__import__("lab_utils").__file__).parent / "static"
    assert PAD_JS == static / "drawing_pad.js" and PAD_CSS == static / "drawing_pad.css"
    # anywidget read the files: the widget sends their text, not an inline copy
    assert pad.canvas._esm == PAD_JS.read_text() and "export default { render }" in pad.canvas._esm
    assert pad.canvas._css == PAD_CSS.read_text() and ".cvae-pad-canvas" in pad.canvas._css
    assert "run the notebook from the top" in pad.canvas._esm  # the no-kernel message
    assert PadCanvas._esm is not None


def test_python_answers_every_drawing_the_page_sends(pad):
    assert pad.canvas.answer_timeout_ms > 0
    pad.canvas.sent = 3  # as if the page had sent its third drawing
    assert pad.canvas.answered == 3  # the live Python side acknowledges it


def test_works_with_the_wide_model(shipped):
    pad = DrawingPad("wide", classifier=shipped[1])
    assert pad.process_canvas(VERTICAL) == 1
    assert pad.z.shape == (1, pad.model.config.latent_dim)
    assert pixels(pad.sheet_png).shape == (68, 626)


def test_refuses_a_plain_vae(shipped):
    from lab_utils.model import CVAE

    with pytest.raises(TypeError, match="conditional"):
        DrawingPad(CVAE("lab-vae"), classifier=shipped[1])
