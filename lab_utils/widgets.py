"""The slider explorer: pick a label and the noise z, and watch the decoder draw.

``explore(model)`` shows a digit picker, one slider per latent dimension
(``z0`` ... ``z19``, numbered from 0 like ``z[0]`` ... ``z[19]`` in code and the
dimensions of notebooks 02 and 03), a temperature slider and a "new noise"
button. The sliders always show the z the decoder gets: z = temperature x noise,
so at temperature 0 they all read 0 (and are disabled, as is "new noise").
Every change decodes the chosen label and, beside it, the same z with all ten
labels, in ONE batched decode
under ``torch.inference_mode()``. The pictures are PNG bytes (nearest-neighbour
upscaling, no matplotlib in the update path) written into ``ipywidgets.Image``
widgets, so the output updates in place: no flicker, no growing output area.
Taught in ``06_exploring.ipynb``; the drawing pad of ``09_your_handwriting``
reuses it through :meth:`LatentExplorer.set_z`.
"""
from __future__ import annotations

import html
import struct
import zlib
from contextlib import contextmanager, nullcontext
from typing import Sequence

import ipywidgets as widgets
import numpy as np
import torch

from .checkpoints import load_pretrained
from .data import class_names as dataset_class_names
from .model import CVAE

Z_RANGE = 3.0          # noise sliders span [-3, 3]: 99.7% of N(0, 1)
TEMPERATURE_MAX = 2.0  # temperature slider spans [0, 2]
BIG_SCALE = 8          # 28 px -> 224 px, the big digit
ROW_SCALE = 2          # 28 px -> 56 px, each digit of the row of ten
ROW_GAP = 6            # grey pixels between the digits of the row
DECODE_THREADS = 1     # CPU threads for one update's decode (see cpu_threads)
_GAP_GREY = 72         # colour of that gap
_FRAME = 255           # frame drawn around the chosen label in the row

# On high-DPI screens the browser scales images again; keep that scaling sharp too.
_CSS = "<style>.cvae-explorer img {image-rendering: pixelated;}</style>"
FROZEN_NOTE = (  # shown while the temperature is 0
    "temperature 0: z = 0, the average digit of each label. Raise the temperature "
    "to move the z sliders or to draw new noise."
)


@contextmanager
def cpu_threads(n: int):
    """Run the block with ``n`` PyTorch CPU threads, then restore the previous count.

    Ten 28x28 pictures are far too little work to split: with two threads on a
    busy two-core machine the threads wait for each other, and a decode costing
    3 ms of CPU took 80 ms (a whole update 150 ms, measured with
    benchmarks/widget_latency.py). Switching the count costs microseconds.
    """
    before = torch.get_num_threads()
    if before == n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def upscale(pixels: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscaling: each pixel becomes a ``scale`` x ``scale`` block,
    so a 28x28 digit stays crisp (no blur) at any size."""
    return pixels.repeat(scale, axis=-2).repeat(scale, axis=-1)  # (..., H, W) -> (..., sH, sW)


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def png_bytes(pixels: np.ndarray) -> bytes:
    """uint8 greyscale (H, W) -> the bytes of a PNG file showing it.

    The smallest valid PNG: a header, the rows (each prefixed by filter byte 0,
    "no filter") compressed with zlib level 1, an end marker. Pillow's encoder
    tries several row filters and took 2-3 times longer (0.7 ms more of the
    5 ms of CPU an update costs); any PNG reader, Pillow included, reads this
    file back to exactly ``pixels``.
    """
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    h, w = pixels.shape
    rows = np.zeros((h, w + 1), dtype=np.uint8)  # (H, W) -> (H, 1 + W): filter byte, pixels
    rows[:, 1:] = pixels
    header = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)  # 8-bit greyscale, no interlace
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 1)) + _png_chunk(b"IEND", b""))


def row_pixels(tiles: np.ndarray, chosen: int, scale: int = ROW_SCALE, gap: int = ROW_GAP) -> np.ndarray:
    """Ten uint8 digits (L, 28, 28) -> one strip with grey gaps, the chosen one framed."""
    L, H, W = tiles.shape
    big = upscale(tiles, scale)  # (L, 28, 28) -> (L, 28s, 28s)
    h, w = H * scale, W * scale
    strip = np.full((h + 2 * gap, L * (w + gap) + gap), _GAP_GREY, dtype=np.uint8)
    for i in range(L):
        left = gap + i * (w + gap)
        if i == chosen:  # a white frame, 2 px, inside the gap around the chosen label
            strip[gap - 2:gap + h + 2, left - 2:left + w + 2] = _FRAME
        strip[gap:gap + h, left:left + w] = big[i]
    return strip


def _default_class_names(model) -> tuple[str, ...]:
    """Class names from the checkpoint's dataset (Fashion-MNIST names for a
    Fashion model), else the digits 0-9."""
    info = getattr(model, "checkpoint_info", None) or {}
    dataset = (info.get("train_config") or {}).get("dataset") or "mnist"
    try:
        names = dataset_class_names(dataset)
    except ValueError:
        names = ()
    if len(names) != model.config.num_classes:
        names = tuple(str(k) for k in range(model.config.num_classes))
    return tuple(names)


class ShowsWidget:
    """Lets an object that holds a ``widget`` display as that widget in Jupyter,
    so a notebook cell can end with ``explorer`` or ``pad`` instead of ``.widget``."""

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)


class LatentExplorer(ShowsWidget):
    """Sliders for the label and for each dimension of z, driving the decoder live.

    ``model`` is any :class:`~lab_utils.model.CVAE` (``None`` loads the shipped
    one; a string names a shipped model, e.g. ``"wide"``). It decodes on the
    model's own device, so a model on a GPU renders on the GPU. The noise starts
    as the given ``z`` or a draw from N(0, I) seeded by ``seed``. The sliders
    show ``z = temperature * noise``, exactly the z the pictures decode; moving a
    slider sets that z (and the noise to z / temperature). ``explorer`` alone in
    a cell displays the controls.
    """

    def __init__(
        self,
        model: CVAE | str | None = None,
        digit: int = 0,
        z: torch.Tensor | Sequence[float] | None = None,
        seed: int = 0,
        class_names: Sequence[str] | None = None,
    ):
        if model is None or isinstance(model, str):
            model = load_pretrained(model or "lab")
        if not isinstance(model, CVAE):
            raise TypeError(
                f"LatentExplorer needs a lab_utils CVAE, got {type(model).__name__}; "
                f"use lab_utils.load_pretrained() or lab_utils.CVAE('lab')"
            )
        self.model = model
        cfg = model.config
        self.latent_dim = cfg.latent_dim
        self.conditional = cfg.conditional
        self.class_names = tuple(class_names) if class_names is not None else _default_class_names(model)
        if len(self.class_names) != cfg.num_classes:
            raise ValueError(
                f"class_names has {len(self.class_names)} names but the model has "
                f"{cfg.num_classes} classes; give one name per class"
            )
        self._device = model.device
        # Labels 0..9 live on the model's device once, so an update copies nothing there.
        self._y_row = torch.arange(cfg.num_classes, device=self._device) if self.conditional else None
        self._generator = torch.Generator().manual_seed(seed)
        if z is None:
            z = torch.randn(self.latent_dim, generator=self._generator)  # (D,)
        self._noise = self._as_z(z).clamp(-Z_RANGE, Z_RANGE)  # (D,): z = temperature * noise
        self._syncing = False     # True while the explorer itself moves the noise sliders
        self._hold = 0            # > 0 while several controls change: renders wait
        self._dirty = False       # a change arrived while held
        self._shown_digit = None  # the label the title shows, to skip needless updates
        self._decoded = (None, None)  # (z, pixels) of the last decode
        self.render_count = 0     # how many times the pictures were redrawn
        self._build(int(digit), self._noise)
        self._render()

    # ----- the controls ---------------------------------------------------------------
    def _build(self, digit: int, z: torch.Tensor) -> None:
        """Create the widgets once; later updates only change their values."""
        cfg = self.model.config
        names_are_digits = self.class_names == tuple(str(k) for k in range(cfg.num_classes))
        self.digit_slider = widgets.IntSlider(
            value=digit, min=0, max=cfg.num_classes - 1, step=1,
            description="digit" if names_are_digits else "class",
            disabled=not self.conditional, continuous_update=True,
            style={"description_width": "40px"}, layout=widgets.Layout(width="250px"),
        ).add_class("cvae-explorer-digit")
        self.temperature_slider = widgets.FloatSlider(
            value=1.0, min=0.0, max=TEMPERATURE_MAX, step=0.05, description="temperature",
            readout_format=".2f", continuous_update=True,
            style={"description_width": "85px"}, layout=widgets.Layout(width="300px"),
        ).add_class("cvae-explorer-temperature")
        self.noise_button = widgets.Button(
            description="new noise", icon="random", tooltip="draw a fresh z from N(0, I)",
            layout=widgets.Layout(width="110px"),
        ).add_class("cvae-explorer-new-noise")
        # Vertical sliders side by side, like a mixing desk: 20 fit in 700 px
        # One layout and one style shared by them all: 2 front-end models, not 40.
        noise_layout = widgets.Layout(width="31px", height="160px")
        noise_style = widgets.SliderStyle(description_width="initial")
        self.noise_sliders = [
            widgets.FloatSlider(
                value=float(v), min=-Z_RANGE, max=Z_RANGE, step=0.01, description=f"z{i}",
                orientation="vertical", readout_format=".1f", continuous_update=True,
                style=noise_style, layout=noise_layout,
            ).add_class("cvae-explorer-noise")
            for i, v in enumerate(z.tolist())
        ]
        noise_grid = widgets.HBox(self.noise_sliders, layout=widgets.Layout(flex_flow="row wrap"))
        self.temperature_note = widgets.HTML("").add_class("cvae-explorer-note")
        size = cfg.image_size * BIG_SCALE
        self.image = widgets.Image(
            format="png", layout=widgets.Layout(width=f"{size}px", height=f"{size}px"),
        ).add_class("cvae-explorer-image")
        self.title = widgets.HTML(_CSS).add_class("cvae-explorer-title")
        tile = cfg.image_size * ROW_SCALE
        row_w = cfg.num_classes * (tile + ROW_GAP) + ROW_GAP
        self.row = widgets.Image(
            format="png",
            layout=widgets.Layout(width=f"{row_w}px", height=f"{tile + 2 * ROW_GAP}px"),
        ).add_class("cvae-explorer-row")
        caption = "".join(
            f"<div style='text-align:center;overflow:hidden'>{html.escape(name)}</div>"
            for name in self.class_names
        )
        self.row_caption = widgets.HTML(
            f"<div style='display:grid;grid-template-columns:repeat({cfg.num_classes}, "
            f"{tile + ROW_GAP}px);padding-left:{ROW_GAP // 2}px;font-size:11px;"
            f"line-height:1.2'>{caption}</div>"
        )
        controls = widgets.VBox([
            widgets.HBox([self.digit_slider, self.temperature_slider, self.noise_button]),
            self.temperature_note,
            widgets.HTML(
                f"<b>z = temperature &times; noise</b>, the z the decoder gets: one slider per "
                f"latent dimension, z0 to z{self.latent_dim - 1} (-3 to 3)"),
            noise_grid,
        ])
        controls.layout.margin = "0 0 0 12px"
        rows = [widgets.HBox([widgets.VBox([self.title, self.image]), controls])]
        if self.conditional:  # a plain VAE has no labels to vary
            rows += [
                widgets.HTML("<b>the same z with every label</b> (the chosen one framed)"),
                self.row, self.row_caption,
            ]
        self.widget = widgets.VBox(rows).add_class("cvae-explorer")

        self.digit_slider.observe(self._on_change, names="value")
        self.temperature_slider.observe(self._on_temperature, names="value")
        for s in self.noise_sliders:
            s.observe(self._on_noise_slider, names="value")
        self.noise_button.on_click(lambda _button: self.new_noise())

    def _on_change(self, _change) -> None:
        """Any control moved: redraw now, or once at the end of a batch of changes."""
        if self._hold:
            self._dirty = True
        else:
            self._render()

    def _on_temperature(self, _change) -> None:
        """The temperature moved: the sliders show the new z = temperature * noise."""
        with self.hold():
            self._dirty = True
            self._show_z()

    def _on_noise_slider(self, change) -> None:
        """A slider moved: its value is the new z_j, and the noise keeps z_j / temperature.

        At temperature 0 z is 0 whatever the noise, so the slider goes back to 0.
        """
        if not self._syncing:
            j = self.noise_sliders.index(change["owner"])
            t = self.temperature
            if t > 0:
                self._noise[j] = float(change["new"]) / t
            else:
                self._set_slider(change["owner"], 0.0)
        self._on_change(change)

    def _set_slider(self, slider, value: float) -> None:
        self._syncing = True
        try:
            slider.value = value
        finally:
            self._syncing = False

    def _show_z(self) -> None:
        """Move the sliders to z = temperature * noise (clamped to +-3), so they show
        what the pictures decode. At temperature 0 they read 0 and, like "new noise",
        are disabled, with a note saying why."""
        t = self.temperature
        z = (self._noise * t).clamp(-Z_RANGE, Z_RANGE) + 0.0  # (D,); + 0.0: no "-0.0" readouts
        with self.hold():
            for s, v in zip(self.noise_sliders, z.tolist()):
                self._set_slider(s, v)
        frozen = t == 0
        if self.noise_button.disabled != frozen:
            self.noise_button.disabled = frozen
            for s in self.noise_sliders:
                s.disabled = frozen
            self.temperature_note.value = f"<i>{FROZEN_NOTE}</i>" if frozen else ""

    @contextmanager
    def hold(self):
        """Change many controls, render once: ``with explorer.hold(): ...``.

        Setting 20 sliders one by one would otherwise redraw 20 times (and, in a
        browser, flicker through 19 intermediate digits).
        """
        self._hold += 1
        try:
            yield self
        finally:
            self._hold -= 1
            if self._hold == 0 and self._dirty:
                self._render()

    # ----- state ----------------------------------------------------------------------
    def _as_z(self, z) -> torch.Tensor:
        """Any (D,) or (1, D) vector -> a float32 CPU tensor (D,), or a clear error."""
        z = torch.as_tensor(z).detach().to("cpu", torch.float32)
        if z.numel() != self.latent_dim:
            raise ValueError(
                f"z must hold {self.latent_dim} numbers (one per latent dimension), "
                f"got shape {tuple(z.shape)}"
            )
        z = z.reshape(self.latent_dim)  # (1, D) or (D,) -> (D,)
        if not torch.isfinite(z).all():
            raise ValueError("z contains NaN or infinite values")
        return z

    @property
    def digit(self) -> int:
        """The label drawn large."""
        return int(self.digit_slider.value)

    @digit.setter
    def digit(self, value: int) -> None:
        self.digit_slider.value = int(value)  # the slider clamps to 0..9

    @property
    def temperature(self) -> float:
        """Scale applied to the noise, z = temperature * noise: 0 gives the 'average'
        digit (z = 0), >1 wilder ones. Setting it moves the z sliders."""
        return float(self.temperature_slider.value)

    @temperature.setter
    def temperature(self, value: float) -> None:
        self.temperature_slider.value = float(value)  # clamped to [0, 2]

    @property
    def z(self) -> torch.Tensor:
        """The z the pictures decode (latent_dim,), as the sliders show it:
        temperature * noise, clamped to +-3."""
        return torch.tensor([s.value for s in self.noise_sliders], dtype=torch.float32)

    @property
    def noise(self) -> torch.Tensor:
        """The noise (latent_dim,) before the temperature scales it into z."""
        return self._noise.clone()

    @z.setter
    def z(self, value) -> None:
        self.set_z(value)

    def set_z(self, z) -> None:
        """Decode exactly ``z`` (values beyond +-3 are clamped): the sliders move to it
        and the temperature to 1, so the noise is z itself; renders once."""
        z = self._as_z(z).clamp(-Z_RANGE, Z_RANGE)
        with self.hold():
            self._noise = z
            self.temperature_slider.value = 1.0
            self._dirty = True
            self._show_z()

    def new_noise(self) -> torch.Tensor:
        """Draw a fresh noise from N(0, I) (the explorer's own seeded generator); the
        sliders show it times the temperature. Returns the z now decoded: at
        temperature 0 that stays 0 (the button is disabled there)."""
        noise = torch.randn(self.latent_dim, generator=self._generator)  # (D,)
        with self.hold():
            self._noise = noise.clamp(-Z_RANGE, Z_RANGE)
            self._dirty = True
            self._show_z()
        return self.z

    # ----- drawing --------------------------------------------------------------------
    def decode_pixels(self) -> np.ndarray:
        """Decode the current z with every label in ONE call: uint8 (L, 28, 28).

        Row ``k`` is label ``k``; the big picture is row ``digit``, so the ten
        pictures cost one batched decode (a plain VAE decodes one picture).
        """
        z = self.z.to(self._device)  # (D,): the sliders show exactly the z decoded
        threads = cpu_threads(DECODE_THREADS) if self._device.type == "cpu" else nullcontext()
        with threads, torch.inference_mode():
            x_hat = self.model.decode_all_labels(z.view(1, -1), self._y_row)[0]  # (D,) -> (1, D) -> (1, L, 1, 28, 28) -> (L, 1, 28, 28)
            pixels = (x_hat[:, 0] * 255).round_().clamp_(0, 255).to(torch.uint8)  # (L, 28, 28)
        return pixels.cpu().numpy()

    def _pixels(self) -> np.ndarray:
        """The decoded pictures for the current z, decoding only if it changed: a new
        label is already in the row, so picking it costs no decode."""
        key = tuple(s.value for s in self.noise_sliders)
        if self._decoded[0] != key:
            self._decoded = (key, self.decode_pixels())
        return self._decoded[1]

    def refresh(self) -> None:
        """Decode again although no control moved (e.g. after training the model further)."""
        self._decoded = (None, None)
        self._render()

    def _render(self) -> None:
        """Decode if needed and write the PNGs into the image widgets (the update path)."""
        self._dirty = False
        pixels = self._pixels()  # (L, 28, 28)
        digit = self.digit if self.conditional else 0
        self.image.value = png_bytes(upscale(pixels[digit], BIG_SCALE))
        if self.conditional:
            self.row.value = png_bytes(row_pixels(pixels, digit))
        if digit != self._shown_digit:  # text changes only with the label
            name = self.class_names[digit] if self.conditional else "sample"
            self.title.value = f"{_CSS}<b>label: {html.escape(name)}</b>"
            self._shown_digit = digit
        self.render_count += 1

    @property
    def image_png(self) -> bytes:
        """PNG bytes of the big picture, as shown."""
        return bytes(self.image.value)

    @property
    def row_png(self) -> bytes:
        """PNG bytes of the row: the same z with every label (empty for a plain VAE)."""
        return bytes(self.row.value)

    def __repr__(self) -> str:
        return (f"LatentExplorer(digit={self.digit}, temperature={self.temperature:.2f}, "
                f"latent_dim={self.latent_dim})")


def explore(model: CVAE | str | None = None, **kw) -> LatentExplorer:
    """Build a :class:`LatentExplorer` (``explore()`` uses the shipped model);
    leave it as the last line of a cell to show it."""
    return LatentExplorer(model, **kw)
