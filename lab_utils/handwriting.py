"""A drawing made to look like an MNIST digit, and the same style in all ten digits.

A digit drawn on a 280x280 pad is large, thick and anywhere on the canvas; an
MNIST digit is small and centred. MNIST's makers fitted every digit's ink into
a 20x20 box (anti-aliased, aspect ratio kept) and moved its centre of mass to
the centre of a 28x28 field (LeCun et al., "The MNIST database"). A model
trained on MNIST only understands drawings that went through the same steps:
:func:`to_mnist` does that. :func:`analogies` then reads the drawing's style
z = mu with its own label and decodes that z with every label.
Taught in ``09_your_handwriting.ipynb``.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .labels import check_labels
from .model import CVAE, check_images

FIELD = 28          # MNIST images are 28x28 ...
BOX = 20            # ... and the ink's bounding box is fitted into 20x20
PAD_SIZE = 280      # the drawing pad's canvas side, 10x an MNIST image
PEN_FRACTION = 1 / 8  # pen width / pad height: about MNIST's 2.6 px stroke in the 20 px box
INK_LEVEL = 0.5     # a pixel at least half as bright as the brightest counts for the box
# Where MNIST's digits have their centre of mass, in (row, column) pixel indices:
# (14, 14), i.e. field / 2 (measured over the test set: 13.99, 14.01, s.d. 0.29).
# The geometric middle of pixels 0..27 would be 13.5; we follow the data the
# models were trained on.
CENTRE = FIELD / 2


class EmptyDrawingError(ValueError):
    """The canvas has no ink: there is nothing to make into a digit."""


def _as_float_canvas(canvas) -> torch.Tensor:
    """Check ``canvas`` and return it as a float32 (H, W) tensor in [0, 1].

    Accepts numpy arrays and torch tensors, uint8 (0..255), other integers in
    0..255, bool, or floats in [0, 1]; anything else gets an error that says how
    to fix it.
    """
    if isinstance(canvas, np.ndarray):
        if canvas.dtype == object or not (
            np.issubdtype(canvas.dtype, np.number) or canvas.dtype == np.bool_
        ):
            raise TypeError(f"canvas must hold numbers, got numpy dtype {canvas.dtype}")
        t = torch.from_numpy(np.array(canvas, copy=True))  # a copy: read-only arrays are fine
    elif isinstance(canvas, torch.Tensor):
        t = canvas.detach().cpu()
    else:
        raise TypeError(
            f"canvas must be a numpy array or a torch tensor of shape (H, W), "
            f"got {type(canvas).__name__}"
        )
    if t.dim() != 2:
        hint = " (drop the channel axis, e.g. canvas[0] or canvas.squeeze())" if t.dim() == 3 else ""
        raise ValueError(
            f"canvas must have 2 dimensions (H, W), got shape {tuple(t.shape)}{hint}"
        )
    if t.numel() == 0:
        raise ValueError(f"canvas is empty of pixels: shape {tuple(t.shape)}")
    if t.is_complex():
        raise TypeError(f"canvas must be real-valued, got dtype {t.dtype}")
    if t.dtype == torch.bool:
        return t.float()
    if t.dtype.is_floating_point:
        t = t.float()
        if torch.isnan(t).any():
            raise ValueError("canvas contains NaN values; every pixel must be a number in [0, 1]")
        lo, hi = t.min().item(), t.max().item()
        if lo < 0 or hi > 1:
            hint = " (divide 0-255 pixel values by 255)" if hi > 1 and hi <= 255 and lo >= 0 else ""
            raise ValueError(
                f"a float canvas must hold values in [0, 1], got values from "
                f"{lo:g} to {hi:g}{hint}"
            )
        return t
    lo, hi = t.min().item(), t.max().item()
    if lo < 0 or hi > 255:
        raise ValueError(
            f"an integer canvas must hold values in 0..255, got values from {lo} to {hi}"
        )
    return t.float() / 255.0  # 0..255 -> [0, 1]


def ink_box(canvas: torch.Tensor, level: float = INK_LEVEL) -> tuple[int, int, int, int]:
    """(top, bottom, left, right), bottom/right exclusive, of the pixels at least
    ``level`` times the brightest pixel: the ink, without its faint anti-aliased rim."""
    ink = canvas >= level * canvas.max()  # (H, W) bool
    rows = torch.nonzero(ink.any(dim=1)).flatten()
    cols = torch.nonzero(ink.any(dim=0)).flatten()
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def center_of_mass(image: torch.Tensor) -> tuple[float, float]:
    """(row, column) of the brightness-weighted centre of an (H, W) image, in pixel
    indices (MNIST's digits have theirs at about (14, 14), see ``CENTRE``)."""
    H, W = image.shape
    total = image.sum()
    rows = torch.arange(H, dtype=image.dtype)
    cols = torch.arange(W, dtype=image.dtype)
    cy = (image.sum(dim=1) * rows).sum() / total  # (H, W) -> (H,) row masses
    cx = (image.sum(dim=0) * cols).sum() / total  # (H, W) -> (W,) column masses
    return float(cy), float(cx)


def to_mnist(canvas, box: int = BOX, field: int = FIELD) -> torch.Tensor:
    """Make a drawing look like an MNIST digit: (H, W) ink -> (28, 28) float in [0, 1].

    ``canvas`` is white ink on black, as a numpy array or torch tensor, either
    uint8 0..255 or float 0..1. The steps are MNIST's own:

    1. crop the ink's bounding box;
    2. scale it, keeping its aspect ratio, so its longer side is ``box`` (20) px,
       with an anti-aliasing filter (each output pixel averages the pixels it
       covers, so thin strokes turn grey instead of vanishing);
    3. place it in a ``field`` x ``field`` (28x28) image, moved by whole pixels so
       that its centre of mass lands within half a pixel of the centre, (14, 14)
       in pixel indices, where MNIST's digits have theirs.

    An MNIST digit comes back almost unchanged (mean absolute difference 0.005).

    Raises :class:`EmptyDrawingError` for a canvas without ink, and ``ValueError``
    or ``TypeError`` for NaN, out-of-range values or a wrong number of dimensions.
    """
    image = _as_float_canvas(canvas)  # (H, W) in [0, 1]
    if image.max().item() < 0.5 / 255:  # not even one grey level of ink
        raise EmptyDrawingError("the canvas is empty: draw a digit first")
    top, bottom, left, right = ink_box(image)
    crop = image[top:bottom, left:right]  # (h, w): just the ink
    h, w = crop.shape
    scale = box / max(h, w)  # the longer side becomes `box` pixels
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    small = F.interpolate(
        crop[None, None], size=(new_h, new_w), mode="bilinear",
        antialias=True, align_corners=False,
    )[0, 0].clamp(0, 1)  # (h, w) -> (1, 1, h, w) -> (new_h, new_w)
    # Whole-pixel shift that puts the centre of mass nearest the field's centre.
    cy, cx = center_of_mass(small)
    centre = field / 2  # 14 for 28: where MNIST put it (see CENTRE)
    y0 = math.floor(centre - cy + 0.5)
    x0 = math.floor(centre - cx + 0.5)
    out = torch.zeros(field, field)
    # Paste, clipping whatever would fall outside the field (rare: lopsided ink).
    sy0, sx0 = max(0, -y0), max(0, -x0)
    sy1, sx1 = min(new_h, field - y0), min(new_w, field - x0)
    out[y0 + sy0:y0 + sy1, x0 + sx0:x0 + sx1] = small[sy0:sy1, sx0:sx1]
    return out


def shrink_canvas(canvas, field: int = FIELD) -> torch.Tensor:
    """The naive route: the whole canvas averaged down to 28x28, no cropping or centring.

    Kept to show in ``09_your_handwriting.ipynb`` why :func:`to_mnist` is needed.
    """
    image = _as_float_canvas(canvas)  # (H, W)
    return F.interpolate(
        image[None, None], size=(field, field), mode="bilinear",
        antialias=True, align_corners=False,
    )[0, 0].clamp(0, 1)  # (H, W) -> (1, 1, H, W) -> (28, 28)


@torch.inference_mode()
def analogies(model: CVAE, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each digit's style in all ten digits: images (B, 1, 28, 28), labels (B,)
    -> (B, 10, 1, 28, 28).

    Each digit is encoded with its own label, so z = mu holds what the label
    does not say (slant, width, stroke weight); that z is then decoded with
    every label. Row b of the result is digit b's handwriting, column k the
    digit k.
    """
    check_images(x, model.config.image_size)
    check_labels(y, model.config.num_classes)
    device = model.device
    mu, _ = model.encode(x.to(device), y.to(device))  # (B, D): z = mu, no sampling
    return model.decode_all_labels(mu).cpu()  # (B, D) -> (B, 10, 1, 28, 28)


def draw_strokes(
    strokes: Sequence[Sequence[tuple[float, float]]],
    size: int = PAD_SIZE,
    pen_width: float | None = None,
) -> np.ndarray:
    """Rasterise pen strokes as the pad does: a list of polylines of (x, y) points
    in canvas pixels -> an anti-aliased (size, size) float32 canvas in [0, 1].

    The pen is round (``pen_width`` defaults to 1/8 of ``size``, as on the pad),
    so a stroke is every pixel within ``pen_width / 2`` of its polyline; the
    edge is blended over one pixel. Lets a notebook, a test or a benchmark make
    a drawing without a mouse.
    """
    if pen_width is None:
        pen_width = size * PEN_FRACTION
    canvas = np.zeros((size, size), dtype=np.float32)
    radius = pen_width / 2
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5  # pixel centres
    for stroke in strokes:
        points = np.asarray(stroke, dtype=np.float32).reshape(-1, 2)  # (P, 2) of (x, y)
        if points.shape[0] == 0:
            continue
        if points.shape[0] == 1:
            points = np.concatenate([points, points])  # a dot: a zero-length segment
        for (ax, ay), (bx, by) in zip(points[:-1], points[1:]):
            # Only the pixels near this segment can change: work in its bounding window.
            r0 = max(0, int(min(ay, by) - radius - 2))
            r1 = min(size, int(max(ay, by) + radius + 2) + 1)
            c0 = max(0, int(min(ax, bx) - radius - 2))
            c1 = min(size, int(max(ax, bx) + radius + 2) + 1)
            if r0 >= r1 or c0 >= c1:
                continue
            py, px = ys[r0:r1, c0:c1], xs[r0:r1, c0:c1]
            dx, dy = bx - ax, by - ay
            length2 = dx * dx + dy * dy
            t = 0.0 if length2 == 0 else np.clip(((px - ax) * dx + (py - ay) * dy) / length2, 0, 1)
            dist = np.hypot(px - (ax + t * dx), py - (ay + t * dy))  # to the nearest point
            ink = np.clip(radius + 0.5 - dist, 0, 1)  # 1 inside, 0 outside, 1 px blend
            np.maximum(canvas[r0:r1, c0:c1], ink, out=canvas[r0:r1, c0:c1])
    return canvas


def as_pad_drawing(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    size: int = PAD_SIZE,
    scale: tuple[float, float] = (0.45, 0.85),
    thicken: float = 0.3,
    return_thickened: bool = False,
):
    """MNIST digits (B, 1, 28, 28) redrawn as a pad would hold them -> (B, size, size).

    Each digit's ink is enlarged so its longer side is a random ``scale``
    fraction of the pad, placed at a random spot, and, for a ``thicken``
    share of them, drawn with a thicker pen: a max filter that adds about
    1.5 MNIST pixels to every stroke (a 35 px pen on a digit drawn at half
    the pad's height gives 5 px strokes in MNIST's 20 px box, MNIST's own
    are about 2.6 px). These simulated drawings measure how well
    :func:`to_mnist` undoes what a pad does. With ``return_thickened`` the
    (B,) bool mask of the thickened ones comes back too.
    """
    check_images(x)
    B = x.shape[0]
    out = torch.zeros(B, size, size)
    rand = torch.rand(B, 4, generator=generator)  # scale, row, column, thicken
    thickened = rand[:, 3] < thicken  # (B,)
    for i in range(B):
        image = x[i, 0]
        top, bottom, left, right = ink_box(image, level=1e-6)
        crop = image[top:bottom, left:right]  # (h, w)
        h, w = crop.shape
        target = (scale[0] + (scale[1] - scale[0]) * rand[i, 0].item()) * size
        k = target / max(h, w)
        new_h, new_w = max(1, round(h * k)), max(1, round(w * k))
        big = F.interpolate(crop[None, None], size=(new_h, new_w), mode="bilinear",
                            align_corners=False)  # (1, 1, h, w) -> (1, 1, new_h, new_w)
        if thickened[i]:
            width = 2 * round(k * 0.75) + 1  # about 1.5 MNIST pixels more ink, odd
            big = F.max_pool2d(big, width, stride=1, padding=width // 2)
        big = big[0, 0].clamp(0, 1)
        r = int(rand[i, 1].item() * (size - new_h))
        c = int(rand[i, 2].item() * (size - new_w))
        out[i, r:r + new_h, c:c + new_w] = big
    return (out, thickened) if return_thickened else out


__all__ = [
    "EmptyDrawingError", "analogies", "as_pad_drawing", "center_of_mass", "draw_strokes",
    "ink_box", "shrink_canvas", "to_mnist",
]
