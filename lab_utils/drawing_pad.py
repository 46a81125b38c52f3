"""The drawing pad: draw a digit, and the model writes all ten digits in your hand.

The pad is a 280x280 canvas (an anywidget whose JavaScript and CSS are the files
``lab_utils/static/drawing_pad.js`` and ``.css``: no npm, no build step). Strokes
are drawn in the browser, with no round trip per mouse move; when a stroke ends
the whole canvas goes to Python once, as a PNG. Python then runs the update path,
in milliseconds on a laptop CPU:

    PNG -> (280, 280) ink -> to_mnist -> (1, 1, 28, 28)
        -> classifier reading (pre-sets the digit picker)
        -> encode with that digit, z = mu -> decode z with all ten labels
        -> PNGs into ipywidgets.Image widgets (no matplotlib)

"explore this style" hands the drawing's z and digit to the slider explorer.
Taught in ``09_your_handwriting.ipynb``.
"""
from __future__ import annotations

import base64
import io
from pathlib import Path

import anywidget
import ipywidgets as widgets
import numpy as np
import torch
import traitlets
from PIL import Image

from .checkpoints import load_pretrained
from .classifier import classify, load_classifier
from .handwriting import PAD_SIZE, PEN_FRACTION, EmptyDrawingError, to_mnist
from .model import CVAE
from .widgets import (
    ROW_GAP, ROW_SCALE, ShowsWidget, cpu_threads, png_bytes, row_pixels, upscale,
)

SEEN_SCALE = 4      # the 28x28 image the model sees, shown at 112 px
EMPTY_MESSAGE = "draw a digit first"

# The canvas's front end lives in files of its own, so that a static web page can
# reuse them as they are; anywidget reads a pathlib.Path for _esm and _css.
STATIC = Path(__file__).resolve().parent / "static"
PAD_JS = STATIC / "drawing_pad.js"
PAD_CSS = STATIC / "drawing_pad.css"
ANSWER_TIMEOUT_MS = 5000  # the page warns when Python has not answered a drawing by then

_PIXELATED = (
    "<style>.cvae-pad-seen img, img.cvae-pad-seen, .cvae-pad-sheet img, img.cvae-pad-sheet"
    " {image-rendering: pixelated; image-rendering: crisp-edges;}</style>"
)


class PadCanvas(anywidget.AnyWidget):
    """The canvas alone: strokes drawn in the browser, the pixels sent once per stroke.

    ``png`` holds the whole canvas as a ``data:image/png;base64,...`` URL after
    the latest finished stroke ("" when empty). Python may set it too: the
    browser then shows that picture (used by ``clear`` and ``draw``).
    """

    _esm = PAD_JS
    _css = PAD_CSS
    size = traitlets.Int(PAD_SIZE).tag(sync=True)
    pen_width = traitlets.Float(PAD_SIZE * PEN_FRACTION).tag(sync=True)
    png = traitlets.Unicode("").tag(sync=True)
    strokes = traitlets.Int(0).tag(sync=True)  # strokes since the last Clear
    # The page counts the drawings it sends (strokes and Clears) in ``sent``; this
    # Python object echoes each count into ``answered``. A page whose drawing gets
    # no answer within ``answer_timeout_ms`` (the kernel restarted, this object is
    # gone) says "run the notebook from the top" instead of silently doing nothing.
    sent = traitlets.Int(0).tag(sync=True)
    answered = traitlets.Int(0).tag(sync=True)
    answer_timeout_ms = traitlets.Int(ANSWER_TIMEOUT_MS).tag(sync=True)

    @traitlets.observe("sent")
    def _answer(self, change) -> None:
        self.answered = change["new"]


def canvas_from_png(url: str) -> np.ndarray:
    """A ``data:image/png;base64,...`` URL (or raw base64) -> uint8 (H, W) ink."""
    data = url.split(",", 1)[1] if url.startswith("data:") else url
    with Image.open(io.BytesIO(base64.b64decode(data))) as image:
        return np.asarray(image.convert("L"))  # white ink on black: brightness is ink


def png_from_canvas(canvas) -> str:
    """An (H, W) ink array (uint8 0..255 or float 0..1) -> a PNG data URL."""
    pixels = np.asarray(canvas)
    if pixels.dtype != np.uint8:
        pixels = (np.clip(pixels, 0, 1) * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class DrawingPad(ShowsWidget):
    """Draw a digit; see what the model sees, what the classifier reads, and the
    ten digits decoded from your drawing's z.

    ``model`` is a CVAE (``None``: the shipped lab model; a string names a
    shipped model, e.g. ``"wide"``); ``classifier`` defaults to the shipped
    MNIST classifier, on the model's device. ``pad`` alone in a cell shows it.
    ``process_canvas(array)`` runs the same update path as a finished stroke,
    so the pad can be driven from Python (tests, benchmarks, the notebook).
    """

    def __init__(self, model: CVAE | str | None = None, classifier=None, explorer=None):
        if model is None or isinstance(model, str):
            model = load_pretrained(model or "lab")
        if not isinstance(model, CVAE) or not model.config.conditional:
            raise TypeError(
                "DrawingPad needs a conditional lab_utils CVAE, e.g. "
                "lab_utils.load_pretrained() or lab_utils.load_pretrained('wide')"
            )
        self.model = model.eval()
        self.classifier = classifier if classifier is not None else load_classifier(model.device)
        self.explorer = explorer
        self.x = None          # (1, 1, 28, 28): the drawing as the model sees it
        self.z = None          # (1, latent_dim): its style, z = mu
        self.reading = None    # (digit, confidence) from the classifier
        self._digit_from_student = False  # the student corrected the picker
        self._setting_digit = False       # the pad itself is moving the picker
        self._build()
        self.show_empty()

    # ----- the widgets ----------------------------------------------------------------
    def _build(self) -> None:
        cfg = self.model.config
        self.canvas = PadCanvas()
        seen = cfg.image_size * SEEN_SCALE
        self.seen_image = widgets.Image(
            format="png", layout=widgets.Layout(width=f"{seen}px", height=f"{seen}px"),
        ).add_class("cvae-pad-seen")
        self.reading_html = widgets.HTML().add_class("cvae-pad-reading")
        self.digit_picker = widgets.Dropdown(
            options=[(str(k), k) for k in range(cfg.num_classes)], value=0,
            description="digit", layout=widgets.Layout(width="150px"),
            style={"description_width": "40px"},
        ).add_class("cvae-pad-digit")
        tile = cfg.image_size * ROW_SCALE
        row_w = cfg.num_classes * (tile + ROW_GAP) + ROW_GAP
        self.sheet_image = widgets.Image(
            format="png",
            layout=widgets.Layout(width=f"{row_w}px", height=f"{tile + 2 * ROW_GAP}px"),
        ).add_class("cvae-pad-sheet")
        self.explore_button = widgets.Button(
            description="explore this style", icon="sliders",
            tooltip="open the slider explorer at this drawing's z and digit",
            layout=widgets.Layout(width="180px"),
        ).add_class("cvae-pad-explore")
        self.explorer_box = widgets.VBox()
        caption = "".join(f"<div style='text-align:center'>{k}</div>" for k in range(cfg.num_classes))
        side = widgets.VBox([
            widgets.HTML(_PIXELATED + "<b>what the model sees</b> (after to_mnist, 28x28)"),
            widgets.HBox([self.seen_image,
                          widgets.VBox([self.reading_html, self.digit_picker])]),
            widgets.HTML("<b>your z with every label</b> (the picked digit framed)"),
            self.sheet_image,
            widgets.HTML(
                f"<div style='display:grid;grid-template-columns:repeat({cfg.num_classes}, "
                f"{tile + ROW_GAP}px);padding-left:{ROW_GAP // 2}px;font-size:11px'>"
                f"{caption}</div>"),
            self.explore_button,
        ], layout=widgets.Layout(margin="0 0 0 16px"))
        self.widget = widgets.VBox([
            widgets.HBox([self.canvas, side]), self.explorer_box,
        ]).add_class("cvae-drawing-pad")
        self.canvas.observe(self._on_png, names="png")
        self.digit_picker.observe(self._on_digit, names="value")
        self.explore_button.on_click(lambda _button: self.explore())

    # ----- events ---------------------------------------------------------------------
    def _on_png(self, change) -> None:
        """A stroke finished (or Clear was pressed): never let a traceback reach the student."""
        try:
            self.receive_png(change["new"])
        except Exception as exc:  # noqa: BLE001 - shown in the pad instead
            self.reading_html.value = f"<span style='color:#b00'>could not read the drawing: {exc}</span>"

    def _on_digit(self, change) -> None:
        """The student corrected the digit: keep their choice and redraw the sheet."""
        if self._setting_digit:
            return
        self._digit_from_student = True
        if self.x is not None:
            self._show_reading()
            self._update_sheet()

    # ----- the update path ------------------------------------------------------------
    def receive_png(self, url: str) -> None:
        """What the pad does with the PNG of a finished stroke ("" after Clear)."""
        if not url:
            self.show_empty()
            return
        self.process_canvas(canvas_from_png(url))

    def process_canvas(self, canvas) -> int | None:
        """Run the whole update path on an (H, W) ink array (uint8 0..255 or float 0..1).

        Returns the classifier's reading, or ``None`` (and "draw a digit first")
        for an empty canvas. Other bad input (NaN, wrong shape) raises.
        """
        with cpu_threads(1):
            return self._process(canvas)

    def _process(self, canvas) -> int | None:
        try:
            x = to_mnist(canvas)  # (H, W) -> (28, 28)
        except EmptyDrawingError:
            self.show_empty()
            return None
        self.x = x.view(1, 1, *x.shape).to(self.model.device)  # (28, 28) -> (1, 1, 28, 28)
        pred, confidence = classify(self.classifier, self.x)  # (1,), (1,)
        self.reading = (int(pred[0]), float(confidence[0]))
        if not self._digit_from_student:
            self._set_digit(self.reading[0])
        self.seen_image.value = png_bytes(upscale(_to_uint8(x), SEEN_SCALE))
        self._show_reading()
        self._update_sheet()
        return self.reading[0]

    def _update_sheet(self) -> None:
        """Encode the drawing with the picked digit (z = mu), decode z with every label."""
        device = self.model.device
        with torch.inference_mode(), cpu_threads(1):
            y = torch.tensor([self.digit], device=device)  # (1,)
            mu, _ = self.model.encode(self.x, y)  # (1, D)
            self.z = mu
            x_hat = self.model.decode_all_labels(mu)[0]  # (1, D) -> (1, 10, 1, 28, 28) -> (10, 1, 28, 28)
            pixels = (x_hat[:, 0] * 255).round_().clamp_(0, 255).to(torch.uint8).cpu().numpy()  # (10, 28, 28)
        self.sheet_image.value = png_bytes(row_pixels(pixels, self.digit))

    def _show_reading(self) -> None:
        digit, confidence = self.reading
        note = "" if digit == self.digit else f"; you picked <b>{self.digit}</b>"
        self.reading_html.value = (
            f"the classifier reads <b class='cvae-pad-read-digit'>{digit}</b> "
            f"({confidence:.0%} sure){note}"
        )

    def show_empty(self) -> None:
        """No ink: blank pictures and the message "draw a digit first"."""
        cfg = self.model.config
        self.x = self.z = self.reading = None
        self._digit_from_student = False
        blank = np.zeros((cfg.image_size, cfg.image_size), np.uint8)
        self.seen_image.value = png_bytes(upscale(blank, SEEN_SCALE))
        self.sheet_image.value = png_bytes(row_pixels(np.stack([blank] * cfg.num_classes), -1))
        self.reading_html.value = f"<i>{EMPTY_MESSAGE}</i>"
        self._forget_style()

    def _forget_style(self) -> None:
        """The drawing is gone, and with it its style: close the explorer it opened
        and set that explorer's z to 0 (the average style), so that it no longer
        shows the cleared drawing. "explore this style" opens it again, at the
        next drawing's z."""
        if self.explorer is not None and self.explorer_box.children:
            self.explorer_box.children = ()
            self.explorer.set_z(torch.zeros(self.explorer.latent_dim))

    def _set_digit(self, digit: int) -> None:
        self._setting_digit = True
        try:
            self.digit_picker.value = int(digit)
        finally:
            self._setting_digit = False

    # ----- what a student (or a test) calls --------------------------------------------
    @property
    def digit(self) -> int:
        """The digit the drawing is encoded with: the classifier's reading unless corrected."""
        return int(self.digit_picker.value)

    @digit.setter
    def digit(self, value: int) -> None:
        self.digit_picker.value = int(value)  # counts as the student's correction

    def draw(self, canvas) -> int | None:
        """Put an (H, W) ink array on the pad (shown in the browser too) and process it."""
        self.canvas.png = png_from_canvas(canvas)  # the observer runs the update path
        return self.reading[0] if self.reading else None

    def clear(self) -> None:
        """What the Clear button does, from Python (the explorer's style goes too)."""
        self.canvas.strokes = 0
        if self.canvas.png:
            self.canvas.png = ""  # the observer shows "draw a digit first"
        else:
            self.show_empty()

    def explore(self):
        """Hand the drawing's z and digit to the slider explorer (made on first use)."""
        if self.z is None:
            self.reading_html.value = f"<i>{EMPTY_MESSAGE}, then explore its style</i>"
            return self.explorer
        from .widgets import LatentExplorer

        if self.explorer is None:
            self.explorer = LatentExplorer(self.model, digit=self.digit, z=self.z[0].cpu())
        else:
            with self.explorer.hold():
                self.explorer.digit = self.digit
                self.explorer.set_z(self.z[0].cpu())
        if self.explorer.widget not in self.explorer_box.children:
            self.explorer_box.children = (self.explorer.widget,)
        return self.explorer

    @property
    def seen_png(self) -> bytes:
        """PNG bytes of the 28x28 image the model sees, as shown."""
        return bytes(self.seen_image.value)

    @property
    def sheet_png(self) -> bytes:
        """PNG bytes of the row of ten digits, as shown."""
        return bytes(self.sheet_image.value)

    def __repr__(self) -> str:
        reading = "empty" if self.reading is None else f"reads {self.reading[0]}"
        return f"DrawingPad({reading}, digit={self.digit})"


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    """A float image in [0, 1] -> uint8 pixels for a PNG."""
    return (image.detach() * 255).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
