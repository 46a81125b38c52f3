"""The lab CVAE: encoder, reparameterization, upsampling decoder.

One set of classes builds every model of the series; a :class:`CVAEConfig`
says how wide each part is. ``CONFIGS["lab"]`` is the lab report's architecture
(343,057 parameters), ``CONFIGS["wide"]`` a wider model from the same ideas,
``CONFIGS["lab-vae"]`` the lab model without labels (a plain VAE).
Taught in ``02_encoder.ipynb`` (encoder), ``03_reparameterization.ipynb`` and
``04_upsampling_decoder.ipynb`` (decoder).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from typing import Iterator

import torch
from torch import nn

from .labels import NUM_CLASSES, check_labels, expand_labels, one_hot


class StoredConfig:
    """What a configuration dataclass needs to travel inside a checkpoint.

    ``to_dict`` gives plain types only (tuples become lists), so the checkpoint
    loads with ``torch.load(weights_only=True)``; ``from_dict`` refuses fields
    it does not know rather than silently dropping them.
    """

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict):
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields {sorted(unknown)}")
        return cls(**d)


@dataclass(frozen=True)
class CVAEConfig(StoredConfig):
    """Architecture of a (conditional) VAE. Stored in every checkpoint."""

    latent_dim: int = 20                  # size of z
    image_size: int = 28                  # images are (1, image_size, image_size)
    num_classes: int = NUM_CLASSES        # label classes
    conditional: bool = True              # False: a plain VAE, labels ignored
    enc_channels: tuple[int, ...] = (3, 1)   # encoder conv widths, 3x3 kernels
    enc_strides: tuple[int, ...] = (1, 1)    # their strides (2 halves the size)
    enc_hidden: int = 400                 # the fully connected layer before mu/logvar
    dec_start_channels: int = 2           # decoder: Linear -> (C, S, S) ...
    dec_start_size: int = 14              # ... with S this size
    dec_channels: tuple[int, ...] = (11, 3)  # decoder conv widths before the last conv
    dec_upsample: tuple[bool, ...] = (True, False)  # nearest x2 upsampling after conv i

    def __post_init__(self):
        # Lists from JSON/checkpoints become tuples, so configs compare and hash.
        for f in ("enc_channels", "enc_strides", "dec_channels", "dec_upsample"):
            object.__setattr__(self, f, tuple(getattr(self, f)))
        if len(self.enc_channels) != len(self.enc_strides):
            raise ValueError("enc_channels and enc_strides must have the same length")
        if len(self.dec_channels) != len(self.dec_upsample):
            raise ValueError("dec_channels and dec_upsample must have the same length")
        if self.dec_start_size * 2 ** sum(self.dec_upsample) != self.image_size:
            raise ValueError(
                f"decoder grows {self.dec_start_size}px by 2^{sum(self.dec_upsample)}, "
                f"which is not image_size={self.image_size}"
            )

    @property
    def label_channels(self) -> int:
        """Label channels the encoder gets (0 for a plain VAE)."""
        return self.num_classes if self.conditional else 0

    @property
    def enc_out_size(self) -> int:
        """Side of the last encoder feature map (3x3 convs, padding 1)."""
        size = self.image_size
        for s in self.enc_strides:
            size = (size - 1) // s + 1  # (H + 2 - 3) // s + 1
        return size


CONFIGS: dict[str, CVAEConfig] = {
    # The lab report's architecture, layer for layer.
    "lab": CVAEConfig(),
    # Same ideas (label channels in the encoder, upsampling decoder), wider:
    # strided convs 28 -> 14 -> 7 with 32 and 64 channels instead of a 1-channel
    # map, a 32-channel 7x7 decoder start instead of 2 channels. A 16-dim z
    # leaves less room for the digit's identity in z (higher label fidelity
    # than 20 or 32 dims). Trains in under 10 minutes on a 2-core CPU:
    # --epochs 12 --batch-size 64 --lr 2e-3 --lr-schedule cosine.
    "wide": CVAEConfig(
        latent_dim=16,
        enc_channels=(32, 64), enc_strides=(2, 2), enc_hidden=400,
        dec_start_channels=32, dec_start_size=7,
        dec_channels=(32, 32), dec_upsample=(True, True),
    ),
    # The lab architecture without labels: what does conditioning buy?
    "lab-vae": CVAEConfig(conditional=False),
}


def get_config(name_or_config: str | CVAEConfig) -> CVAEConfig:
    """A named configuration (``"lab"``, ``"wide"``, ``"lab-vae"``) or the config itself."""
    if isinstance(name_or_config, CVAEConfig):
        return name_or_config
    if name_or_config not in CONFIGS:
        raise ValueError(
            f"unknown model configuration {name_or_config!r}: "
            f"choose one of {', '.join(CONFIGS)}"
        )
    return CONFIGS[name_or_config]


def check_images(x: torch.Tensor, image_size: int = 28) -> None:
    """Raise a clear error unless ``x`` is a finite (B, 1, H, W) float batch."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise TypeError(
            f"images must be floats in [0, 1], got dtype {x.dtype}; "
            f"use x.float() / 255 for uint8 pixels"
        )
    expected = (1, image_size, image_size)
    if x.dim() != 4 or tuple(x.shape[1:]) != expected:
        hint = " (add the channel axis with x.unsqueeze(1))" if x.dim() == 3 else ""
        raise ValueError(
            f"images must have shape (B, {', '.join(map(str, expected))}), "
            f"got {tuple(x.shape)}{hint}"
        )
    if torch.isnan(x).any():
        raise ValueError("images contain NaN values")


class Encoder(nn.Module):
    """q(z | x, y): image + label channels -> (mu, logvar).

    Lab configuration: (B, 11, 28, 28) -> Conv(11,3) ReLU -> Conv(3,1) ReLU
    -> flatten 784 -> Linear(784,400) ReLU -> two heads Linear(400,20).
    """

    def __init__(self, config: CVAEConfig):
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        c_in = 1 + config.label_channels  # image + 10 label maps = 11
        for c_out, stride in zip(config.enc_channels, config.enc_strides):
            layers += [nn.Conv2d(c_in, c_out, 3, stride, 1), nn.ReLU()]
            c_in = c_out
        self.conv = nn.Sequential(*layers)
        flat = c_in * config.enc_out_size ** 2  # 1 * 28 * 28 = 784 for the lab model
        self.fc = nn.Sequential(nn.Linear(flat, config.enc_hidden), nn.ReLU())
        self.fc_mu = nn.Linear(config.enc_hidden, config.latent_dim)
        self.fc_logvar = nn.Linear(config.enc_hidden, config.latent_dim)

    def features(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """The convolutional part: image (+ label maps) -> the last ReLU's feature maps.

        Kept separate so that the narrowest layer can be inspected: in the lab
        model it is a single 28x28 map, and if it is zero for every image of a
        digit, that digit's images never reach z (see 08_sample_quality.ipynb).
        """
        h = x
        if self.config.conditional:
            labels = expand_labels(
                y, x.shape[2], x.shape[3], self.config.num_classes
            ).to(x.dtype)  # (B,) -> (B, 10, 28, 28), a view
            h = torch.cat([x, labels], dim=1)  # (B, 1, 28, 28) + (B, 10, 28, 28) -> (B, 11, 28, 28)
        return self.conv(h)  # lab: (B, 11, 28, 28) -> (B, 1, 28, 28)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x, y)  # lab: (B, 1, 28, 28)
        h = self.fc(h.flatten(1))  # (B, 1, 28, 28) -> (B, 784) -> (B, 400)
        return self.fc_mu(h), self.fc_logvar(h)  # (B, 20), (B, 20)


class Decoder(nn.Module):
    """p(x | z, y): [z ; one-hot] -> image in [0, 1].

    Lab configuration: (B, 30) -> Linear(30,392) ReLU -> view (2, 14, 14)
    -> Conv(2,11) ReLU -> Upsample x2 -> Conv(11,3) ReLU -> Conv(3,1) Sigmoid.
    """

    def __init__(self, config: CVAEConfig):
        super().__init__()
        self.config = config
        c0, s0 = config.dec_start_channels, config.dec_start_size
        self.fc = nn.Sequential(
            nn.Linear(config.latent_dim + config.label_channels, c0 * s0 * s0), nn.ReLU()
        )
        layers: list[nn.Module] = []
        c_in = c0
        for c_out, up in zip(config.dec_channels, config.dec_upsample):
            layers += [nn.Conv2d(c_in, c_out, 3, 1, 1), nn.ReLU()]
            if up:
                layers.append(nn.UpsamplingNearest2d(scale_factor=2))
            c_in = c_out
        layers += [nn.Conv2d(c_in, 1, 3, 1, 1), nn.Sigmoid()]
        self.conv = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        cfg = self.config
        h = z
        if cfg.conditional:
            h = torch.cat([z, one_hot(y, cfg.num_classes).to(z.dtype)], dim=1)  # (B, 20) + (B, 10) -> (B, 30)
        h = self.fc(h)  # (B, 30) -> (B, 392)
        h = h.view(-1, cfg.dec_start_channels, cfg.dec_start_size, cfg.dec_start_size)  # (B, 392) -> (B, 2, 14, 14)
        return self.conv(h)  # (B, 2, 14, 14) -> (B, 1, 28, 28)


class CVAE(nn.Module):
    """Conditional VAE: ``encode`` -> ``reparameterize`` -> ``decode``, in lesson order."""

    #: How the model was made, filled in by the checkpoint loader (``metrics``,
    #: ``epochs``, ``train_config``, ``versions``); empty for a freshly built model.
    checkpoint_info: dict

    def __init__(self, config: CVAEConfig | str = "lab"):
        super().__init__()
        self.config = get_config(config)
        self.encoder = Encoder(self.config)
        self.decoder = Decoder(self.config)
        self.checkpoint_info = {}

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _labels(self, y, batch: int, what: str) -> torch.Tensor | None:
        if not self.config.conditional:
            return None
        if y is None:
            raise ValueError("this model is conditional: pass labels y, one per image")
        check_labels(y, self.config.num_classes)
        if y.shape[0] != batch:
            raise ValueError(
                f"batch mismatch: {batch} {what} but {y.shape[0]} labels; "
                f"give one label per {what.rstrip('s')}"
            )
        return y

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, 1, 28, 28) and labels (B,) -> mu, logvar, each (B, latent_dim)."""
        check_images(x, self.config.image_size)
        y = self._labels(y, x.shape[0], "images")
        return self.encoder(x, y)

    def reparameterize(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """z = mu + sigma * eps with eps ~ N(0, I).

        The randomness sits in eps, outside the network, so gradients flow
        through mu and logvar (the reparameterization trick, Kingma & Welling 2014).
        """
        std = torch.exp(0.5 * logvar)  # sigma = exp(log sigma^2 / 2)
        eps = torch.randn_like(std)
        return mu + std * eps

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Latents (B, latent_dim) and labels (B,) -> images (B, 1, 28, 28) in [0, 1]."""
        if z.dim() != 2 or z.shape[1] != self.config.latent_dim:
            raise ValueError(
                f"z must have shape (B, {self.config.latent_dim}), got {tuple(z.shape)}"
            )
        if torch.isnan(z).any():
            raise ValueError("z contains NaN values")
        y = self._labels(y, z.shape[0], "latent vectors")
        return self.decoder(z, y)

    def decode_all_labels(
        self, z: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Decode each latent with every label in one batched call: z (B, D) -> (B, L, 1, 28, 28).

        One style in every digit is what the disentanglement grid, the slider
        explorer, the analogy sheets and the drawing pad all show; one decode
        of B*L rows is much faster than L decodes. ``labels`` (L,) defaults to
        all classes 0..9. A plain VAE has no labels to vary: L = 1.
        """
        if z.dim() != 2:
            raise ValueError(f"z must have shape (B, {self.config.latent_dim}), got {tuple(z.shape)}")
        z = z.to(self.device)
        B = z.shape[0]
        if not self.config.conditional:
            return self.decode(z).unsqueeze(1)  # (B, 1, 28, 28) -> (B, 1, 1, 28, 28)
        if labels is None:
            labels = torch.arange(self.config.num_classes, device=z.device)  # (L,) = (10,)
        labels = labels.to(z.device)
        L = labels.shape[0]
        z_all = z.repeat_interleave(L, dim=0)  # (B, D) -> (B*L, D): each z L times
        y_all = labels.repeat(B)  # (L,) -> (B*L,): the labels, once per z
        x_hat = self.decode(z_all, y_all)  # (B*L, 1, 28, 28)
        return x_hat.view(B, L, *x_hat.shape[1:])  # (B*L, 1, 28, 28) -> (B, L, 1, 28, 28)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None):
        """Reconstruct: returns ``(x_hat, mu, logvar)``."""
        mu, logvar = self.encode(x, y)
        z = self.reparameterize(mu, logvar)
        return self.decode(z, y), mu, logvar

    def sample(
        self,
        y: torch.Tensor | int | None = None,
        z: torch.Tensor | None = None,
        temperature: float = 1.0,
        n: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Generate images of the requested labels.

        ``y`` is a (B,) tensor of labels (or one int); ``z`` (B, latent_dim) is
        drawn from the prior N(0, I), scaled by ``temperature``, if not given.
        A plain VAE takes ``n`` instead of labels.
        """
        device = self.device
        if isinstance(y, int):
            y = torch.tensor([y])
        if y is not None:
            y = y.to(device)
            batch = y.shape[0]
        elif z is not None:
            batch = z.shape[0]
        elif n is not None:
            batch = n
        else:
            raise ValueError("sample needs labels y, a z, or a count n")
        if z is None:
            z = torch.randn(batch, self.config.latent_dim, generator=generator,
                            device="cpu" if generator is not None else device)
            z = z.to(device) * temperature
        with torch.inference_mode():
            return self.decode(z.to(device), y)


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Evaluation mode for the ``with`` body, then every submodule's own mode back.

    Measuring a model in the middle of training must not leave it in
    evaluation mode (dropout and batch-norm statistics off), and must not
    switch on a submodule that was deliberately frozen in evaluation mode;
    the ``finally`` restores the modes even when the body raises.
    """
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes:
            m.training = training


def count_parameters(module: nn.Module) -> int:
    """Trainable parameters of ``module`` (343,057 for the lab CVAE)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
