"""to_mnist makes drawings look like MNIST digits; analogies keeps z across labels."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lab_utils import load_pretrained
from lab_utils.handwriting import (
    CENTRE, EmptyDrawingError, analogies, as_pad_drawing, center_of_mass, draw_strokes,
    ink_box, shrink_canvas, to_mnist,
)


def box_size(image: torch.Tensor) -> tuple[int, int]:
    """Height and width of everything that is not black."""
    top, bottom, left, right = ink_box(image, level=1e-6)
    return bottom - top, right - left


def rectangle(top, left, height, width, size=280) -> np.ndarray:
    canvas = np.zeros((size, size), dtype=np.uint8)
    canvas[top:top + height, left:left + width] = 255
    return canvas


# Drawings of several shapes, sizes and places, as the pad would hold them.
DRAWINGS = {
    "tall bar": rectangle(30, 200, 180, 40),
    "wide bar": rectangle(100, 10, 50, 250),
    "small square": rectangle(5, 5, 30, 30),
    "vertical stroke": draw_strokes([[(60, 30), (70, 250)]]),
    "ellipse": draw_strokes([[(140 + 70 * np.cos(a), 150 + 100 * np.sin(a))
                              for a in np.linspace(0, 2 * np.pi, 40)]]),
    "seven": draw_strokes([[(40, 40), (200, 40), (90, 260)]]),
}


@pytest.mark.parametrize("name", DRAWINGS)
def test_longer_side_is_20_px_and_centre_of_mass_is_centred(name):
    out = to_mnist(DRAWINGS[name])
    assert out.shape == (28, 28) and out.dtype == torch.float32
    assert 0 <= out.min() and out.max() <= 1
    assert max(box_size(out)) == 20
    cy, cx = center_of_mass(out)
    assert abs(cy - CENTRE) <= 0.5 and abs(cx - CENTRE) <= 0.5


def test_keeps_aspect_ratio():
    assert box_size(to_mnist(rectangle(30, 200, 180, 40))) == (20, 4)  # 180:40 = 20:4.4
    assert box_size(to_mnist(rectangle(100, 10, 50, 250))) == (4, 20)  # 50:250 = 4:20
    assert box_size(to_mnist(rectangle(0, 0, 150, 100))) == (20, 13)  # 150:100 = 20:13.3


def test_where_and_how_big_the_drawing_is_does_not_matter():
    stroke = [(0, 0), (0, 150), (60, 150)]
    near = draw_strokes([[(40 + x, 30 + y) for x, y in stroke]])
    far = draw_strokes([[(180 + x, 100 + y) for x, y in stroke]])
    assert torch.equal(to_mnist(near), to_mnist(far))
    # The same letter drawn at half the size (half the pen) is nearly the same digit.
    half = draw_strokes([[(100 + x / 2, 60 + y / 2) for x, y in stroke]], pen_width=17.5)
    assert (to_mnist(half) - to_mnist(near)).abs().mean() < 0.02


def test_an_mnist_digit_comes_back_almost_unchanged(small_batch):
    x, _ = small_batch
    diffs = [(to_mnist(x[i, 0]) - x[i, 0]).abs().mean().item() for i in range(16)]
    assert max(diffs) < 0.012


def test_accepts_uint8_and_float_numpy_and_torch():
    canvas = DRAWINGS["seven"]  # float32 in [0, 1]
    as_uint8 = np.round(canvas * 255).astype(np.uint8)
    reference = to_mnist(canvas)
    for variant in (as_uint8, torch.from_numpy(as_uint8), torch.from_numpy(canvas),
                    canvas.astype(np.float64), as_uint8.astype(np.int64)):
        assert (to_mnist(variant) - reference).abs().max() < 1e-2
    assert torch.equal(to_mnist(as_uint8), to_mnist(torch.from_numpy(as_uint8)))
    assert to_mnist(DRAWINGS["tall bar"] > 0).max() == 1.0  # a bool mask is ink too


@pytest.mark.parametrize("canvas", [np.zeros((280, 280), np.uint8), torch.zeros(280, 280),
                                    np.zeros((28, 28), np.float64)])
def test_empty_canvas_says_draw_a_digit_first(canvas):
    with pytest.raises(EmptyDrawingError, match="draw a digit first"):
        to_mnist(canvas)


@pytest.mark.parametrize("canvas, error, message", [
    (np.full((280, 280), np.nan, np.float32), ValueError, "NaN"),
    (np.zeros((1, 280, 280), np.uint8), ValueError, r"2 dimensions \(H, W\).*squeeze"),
    (np.zeros(280, np.uint8), ValueError, "2 dimensions"),
    (np.full((28, 28), 255.0), ValueError, r"\[0, 1\].*divide .* by 255"),
    (np.full((28, 28), -0.5), ValueError, r"\[0, 1\]"),
    (np.full((28, 28), 300, np.int64), ValueError, r"0\.\.255"),
    ([[0, 1], [1, 0]], TypeError, "numpy array or a torch tensor"),
])
def test_bad_canvases_are_refused_with_a_clear_message(canvas, error, message):
    with pytest.raises(error, match=message):
        to_mnist(canvas)


def test_nan_among_ink_is_refused():
    canvas = DRAWINGS["seven"].copy()
    canvas[140, 140] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        to_mnist(canvas)


def test_empty_drawing_error_is_a_value_error():
    assert issubclass(EmptyDrawingError, ValueError)


def test_shrink_canvas_keeps_an_off_centre_drawing_off_centre():
    out = shrink_canvas(DRAWINGS["small square"])  # ink in the top-left corner
    assert out.shape == (28, 28)
    cy, cx = center_of_mass(out)
    assert cy < 3 and cx < 3
    assert max(box_size(out)) <= 4


def test_draw_strokes_uses_a_round_pen_of_one_eighth_of_the_pad():
    canvas = draw_strokes([[(140, 50), (140, 230)]])
    assert canvas.shape == (280, 280) and canvas.dtype == np.float32
    row = canvas[140]
    assert abs(row.sum() - 280 / 8) < 1  # the stroke is 35 px wide
    height = (canvas[:, 140] > 0.5).sum()
    assert abs(height - (180 + 35)) <= 1  # round caps add half a pen at each end
    dot = draw_strokes([[(100, 100)]], pen_width=20)
    assert abs(dot.sum() - np.pi * 10 ** 2) < 5  # a single point is a disc


def test_as_pad_drawing_enlarges_and_moves_digits(small_batch):
    x, _ = small_batch
    g = torch.Generator().manual_seed(0)
    pads = as_pad_drawing(x[:20], g)
    assert pads.shape == (20, 280, 280)
    sides = [max(box_size(pads[i])) for i in range(20)]
    assert 0.45 * 280 - 2 <= min(sides) and max(sides) <= 0.85 * 280 + 2
    centres = torch.tensor([center_of_mass(pads[i]) for i in range(20)])
    assert centres.std(dim=0).min() > 15  # not all in one place


def test_analogies_shape_and_z_is_kept_across_the_ten_labels(small_batch):
    lab_model = load_pretrained()  # trained, so that rows differ visibly
    x, y = small_batch[0][:5], small_batch[1][:5]
    seen = []
    decode = lab_model.decode

    def spy(z, labels):
        seen.append((z.clone(), labels.clone()))
        return decode(z, labels)

    lab_model.decode = spy
    sheet = analogies(lab_model, x, y)
    assert sheet.shape == (5, 10, 1, 28, 28)
    (z, labels), = seen
    mu, _ = lab_model.encode(x, y)
    assert torch.equal(z.view(5, 10, -1), mu.detach()[:, None].expand(5, 10, mu.shape[1]))
    assert labels.view(5, 10).tolist() == [list(range(10))] * 5
    # Column y[b] of row b is the digit's own reconstruction from its mean.
    with torch.inference_mode():
        recon = decode(mu, y)
    assert torch.allclose(sheet[torch.arange(5), y], recon, atol=1e-6)
    # Different digits' rows differ: each row is one digit's own style.
    assert (sheet[0] - sheet[1]).abs().mean() > 0.02


def test_analogies_refuses_unbatched_images(lab_model, small_batch):
    x, y = small_batch
    with pytest.raises(ValueError, match="shape"):
        analogies(lab_model, x[0], y[:1])
