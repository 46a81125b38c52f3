"""The same training loss, computed faster: what ``lab_utils.train`` runs by default.

The lab CVAE's convolutions are very narrow (11 -> 3 -> 1 channels in the
encoder, 2 -> 11 -> 3 -> 1 in the decoder). A profile of one training step on
a CPU puts most of its time in them: oneDNN cannot keep a CPU busy on so few
channels. Three identities of the model let the computer do the same
arithmetic in a shape it runs well, without changing what the model computes:

1. **The label channels are a per-class bias map.** The encoder's first
   convolution sees the image plus 10 constant maps, one of them all ones. By
   linearity, conv(image ; labels) = conv(image) + conv(labels), and the second
   term depends on the class only: a (10, C, H, W) table, constant inside and
   different at the zero-padded border. It is computed once per step from the
   current weights (so it is differentiable) and looked up per image, instead
   of convolving ten constant channels for every image.
2. **A 28x28 map is four 14x14 maps** (``pixel_unshuffle``: the pixels at even
   and odd rows and columns). A 3x3 convolution at 28x28 is a 3x3 convolution
   between the 14x14 "phase" maps, with 4x the channels and a kernel made of
   the original taps (:func:`phase_weight`). Four times the channels at a
   quarter of the positions is the shape a CPU's convolution kernels like.
3. **Nearest upsampling followed by a 3x3 convolution is a convolution of the
   small map** whose output is already in phase form (:func:`upsample_phase_weight`;
   the idea of Shi et al., 2016, run backwards): no upsampled tensor is built.

The loss is a sum over pixels, so it can be taken between phase maps; the
encoder's last map is shuffled back to 28x28 for its ``Linear(784, 400)``. Everything is exact in real arithmetic; in float32 sums
are taken in another order, so losses and gradients agree with the plain model
to float tolerance (``tests/test_fast.py``, on real batches). The model, its
weights and its checkpoints are unchanged: this module only reads its layers.
Models of another shape (the wide model's strided convolutions) use the plain
forward pass: :func:`supports` says which.

On a CPU, for the lab shape, :func:`loss_terms` goes one step further when
``lab_utils.kernels`` builds (a C++ compiler is all it needs):
:func:`compiled_loss_terms` runs both convolution stacks as compiled kernels
that put 16 images in a vector register's lanes and apply the label bias map
(identity 1), the ReLUs, the folded upsampling (identity 3), the sigmoid and the
BCE in the same pass over each group of 16 images; identity 2 is not needed
there. The Linear layers stay in PyTorch. Where the kernels cannot be had (no
compiler, a failed build, float64, ``CVAE_LAB_KERNELS=0``) the PyTorch route
above runs; on a GPU, the plain forward pass.
Taught in ``05_training.ipynb``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import kernels
from .losses import bce, kl_divergence
from .model import CVAE, CVAEConfig


def _phase_selector() -> torch.Tensor:
    """S[a, y, p, A] = 1 when tap ``y`` of a 3x3 kernel, at output phase ``a``, reads
    phase ``A`` of the small map at offset ``p - 1``: a + y - 1 = 2 (p - 1) + A."""
    s = torch.zeros(2, 3, 3, 2)
    for a in range(2):
        for y in range(3):
            v = a + y - 1  # full-resolution offset of the tap, -1 .. 2
            s[a, y, v // 2 + 1, v % 2] = 1.0
    return s


# The kernel rewrites below are linear maps of the 9 taps, kept as matrices so
# that each step pays one small matmul per layer (einsum's planning costs more).
_S = _phase_selector()  # (2, 3, 3, 2)
# (y, x) -> (a, b, A, B, p, q): a phase kernel's entries from the original taps
_PHASE = torch.einsum("aypA,bxqB->yxabABpq", _S, _S).reshape(9, -1)  # (9, 144)
# (y, x) -> (a, b, p, q): the same with the input phases added up (upsampled input)
_UPSAMPLE = torch.einsum("aypA,bxqB->yxabpq", _S, _S).reshape(9, -1)  # (9, 36)


def phase_weight(weight: torch.Tensor) -> torch.Tensor:
    """A 3x3, padding-1 kernel (O, C, 3, 3) at full resolution, as a kernel between
    phase maps: (4 O, 4 C, 3, 3), channel order ``4 c + 2 a + b`` (``pixel_unshuffle``'s)."""
    o, c = weight.shape[:2]
    w = weight.reshape(o * c, 9) @ _PHASE.to(weight)  # (O*C, 9) -> (O*C, 144)
    w = w.view(o, c, 2, 2, 2, 2, 3, 3).permute(0, 2, 3, 1, 4, 5, 6, 7)  # -> (O, a, b, C, A, B, 3, 3)
    return w.reshape(4 * o, 4 * c, 3, 3)  # -> (4 O, 4 C, 3, 3)


def upsample_phase_weight(weight: torch.Tensor) -> torch.Tensor:
    """A 3x3 kernel (O, C, 3, 3) applied after 2x nearest upsampling, as a kernel from
    the small map to the output's phase maps: (4 O, C, 3, 3).

    Upsampling makes the four phases of its output equal to its input, so the
    phase kernel's four input phases add up.
    """
    o, c = weight.shape[:2]
    w = weight.reshape(o * c, 9) @ _UPSAMPLE.to(weight)  # (O*C, 9) -> (O*C, 36)
    w = w.view(o, c, 2, 2, 3, 3).permute(0, 2, 3, 1, 4, 5)  # -> (O, a, b, C, 3, 3)
    return w.reshape(4 * o, c, 3, 3)  # -> (4 O, C, 3, 3)


def _repeat_bias(conv: nn.Conv2d) -> torch.Tensor | None:
    return None if conv.bias is None else conv.bias.repeat_interleave(4)  # (O,) -> (4 O,)


def label_bias_maps(conv: nn.Conv2d, num_classes: int, height: int, width: int) -> torch.Tensor:
    """What the first convolution makes of each class's constant label maps: (K, C, H, W).

    Class k's label input is all zeros except channel 1 + k, all ones. Its
    convolution (zero padding, stride 1) at (i, j) is the sum of the kernel's
    taps that land inside the image: sum_yx w[c, 1 + k, y, x] R[i, y] R[j, x]
    with R[i, y] = 1 when row i + y - 1 exists. No bias: the image part has it.
    """
    w = conv.weight[:, 1:1 + num_classes]  # (C, K, 3, 3): the label channels' kernels
    rows = torch.arange(height, device=w.device).view(-1, 1) + torch.arange(3, device=w.device) - 1
    cols = torch.arange(width, device=w.device).view(-1, 1) + torch.arange(3, device=w.device) - 1
    r = ((rows >= 0) & (rows < height)).to(w.dtype)  # (H, 3)
    c = ((cols >= 0) & (cols < width)).to(w.dtype)  # (W, 3)
    return torch.einsum("ckyx,iy,jx->kcij", w, r, c)  # (K, C, H, W)


def supports(config: CVAEConfig) -> bool:
    """True for the shapes the phase-map route handles: stride-1 3x3 encoder
    convolutions, an even image size, and one 2x upsampling in the decoder, which
    brings the decoder's start map to the full image size (the lab models)."""
    return (all(s == 1 for s in config.enc_strides)
            and config.image_size % 2 == 0
            and sum(config.dec_upsample) == 1
            and config.dec_start_size * 2 == config.image_size)


def _to_phases(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 4 C, H/2, W/2), channels_last (the layout the convolutions like)."""
    return F.pixel_unshuffle(x, 2).contiguous(memory_format=torch.channels_last)


def encode(model: CVAE, x: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``model.encoder(x, y)`` through phase maps: (B, 1, H, W), (B,) -> mu, logvar (B, D)."""
    enc, cfg = model.encoder, model.config
    convs = [m for m in enc.conv if isinstance(m, nn.Conv2d)]
    h = _to_phases(x)  # (B, 1, H, W) -> (B, 4, H/2, W/2)
    first = convs[0]
    h = F.conv2d(h, phase_weight(first.weight[:, :1]), _repeat_bias(first), padding=1)  # (B, 4 C1, H/2, W/2)
    if cfg.conditional:
        maps = label_bias_maps(first, cfg.num_classes, x.shape[2], x.shape[3])  # (K, C1, H, W)
        maps = F.pixel_unshuffle(maps, 2)  # (K, C1, H, W) -> (K, 4 C1, H/2, W/2)
        onehot = F.one_hot(y, cfg.num_classes).to(h.dtype)  # (B, K)
        # (B, K) @ (K, H/2 * W/2 * 4 C1): each image's class map, laid out channels_last
        bias = onehot @ maps.permute(0, 2, 3, 1).reshape(cfg.num_classes, -1)
        h = h + bias.view(h.shape[0], h.shape[2], h.shape[3], h.shape[1]).permute(0, 3, 1, 2)
    h = F.relu(h)
    for conv in convs[1:]:
        h = F.relu(F.conv2d(h, phase_weight(conv.weight), _repeat_bias(conv), padding=1))
    h = F.pixel_shuffle(h, 2)  # (B, 4 C, H/2, W/2) -> (B, C, H, W): the Linear's pixel order
    h = enc.fc(h.flatten(1))  # (B, C, H, W) -> (B, C*H*W) -> (B, hidden)
    return enc.fc_mu(h), enc.fc_logvar(h)  # (B, D), (B, D)


def decode_phases(model: CVAE, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    """``model.decoder(z, y)`` in phase form: (B, D), (B,) -> (B, 4, H/2, W/2),
    which ``pixel_shuffle(., 2)`` turns into the (B, 1, H, W) image."""
    dec, cfg = model.decoder, model.config
    h = z
    if cfg.conditional:
        h = torch.cat([z, F.one_hot(y, cfg.num_classes).to(z.dtype)], dim=1)  # (B, D) + (B, K) -> (B, D+K)
    h = dec.fc(h)  # (B, D+K) -> (B, C0*S0*S0)
    s0 = cfg.dec_start_size
    h = h.view(-1, cfg.dec_start_channels, s0, s0)  # (B, C0*S0*S0) -> (B, C0, S0, S0)
    h = h.contiguous(memory_format=torch.channels_last)
    layers = list(dec.conv)
    phases = False  # whether h is already the output's phase maps
    i = 0
    while i < len(layers):
        layer = layers[i]
        if isinstance(layer, nn.Upsample):
            conv = layers[i + 1]  # supports() guarantees a conv follows
            h = F.conv2d(h, upsample_phase_weight(conv.weight), _repeat_bias(conv), padding=1)
            phases, i = True, i + 2  # (B, C, S0, S0) -> (B, 4 O, S0, S0)
        elif isinstance(layer, nn.Conv2d):
            weight = phase_weight(layer.weight) if phases else layer.weight
            bias = _repeat_bias(layer) if phases else layer.bias
            h = F.conv2d(h, weight, bias, padding=1)
            i += 1
        else:  # ReLU, Sigmoid: elementwise, the same on phase maps
            h = layer(h)
            i += 1
    return h


def compiled_loss_terms(model: CVAE, x: torch.Tensor, y: torch.Tensor | None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`loss_terms` through ``lab_utils.kernels``: the convolution stacks
    (with the label's bias map, the ReLUs, the upsampling, the sigmoid and the
    BCE in the same pass) run as compiled kernels, the Linear layers in PyTorch."""
    enc, dec, cfg = model.encoder, model.decoder, model.config
    first, second = [m for m in enc.conv if isinstance(m, nn.Conv2d)]
    h = kernels.encoder_convs(x, y if cfg.conditional else None, first, second)  # (B, 1, 28, 28) -> (B, 784)
    h = enc.fc(h)  # (B, 784) -> (B, 400)
    mu, logvar = enc.fc_mu(h), enc.fc_logvar(h)  # (B, D), (B, D)
    z = model.reparameterize(mu, logvar)  # (B, D): the same noise draw as model(x, y)
    if cfg.conditional:
        z = torch.cat([z, F.one_hot(y, cfg.num_classes).to(z.dtype)], dim=1)  # (B, D) + (B, K) -> (B, D+K)
    h0 = dec.fc(z)  # (B, D+K) -> (B, 2*14*14), after the Linear's ReLU
    convs = [m for m in dec.conv if isinstance(m, nn.Conv2d)]
    return kernels.decoder_bce(h0, x, convs), kl_divergence(mu, logvar)


def uses_kernels(model: CVAE, x: torch.Tensor) -> bool:
    """Whether :func:`loss_terms` takes the compiled kernels for this model and batch:
    the lab shape, float32 weights and batch on the CPU, and the kernels loaded."""
    w = next(model.parameters())
    return (kernels.supports(model.config) and w.dtype == torch.float32
            and w.device.type == "cpu" and kernels.usable(x))


def loss_terms(model: CVAE, x: torch.Tensor, y: torch.Tensor | None, *,
               compiled: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The two terms of the per-image negative ELBO with one sampled z: the
    reconstruction term (BCE, (B,)) and the KL term (B,), as ``losses.bce`` and
    ``losses.kl_divergence`` give them for ``model(x, y)``: the same function of
    the weights and of the noise.

    BCE is a sum over pixels, so it is taken between phase maps (the same pixels
    in another order). No input checks here: ``train`` checks the whole data set
    once, before the first step, instead of every batch (on a GPU each check is
    a host sync). Falls back to the plain forward pass where :func:`supports` is
    False, and on a GPU, where the phase route was slower (an epoch of the lab
    model on an H200 took 3.7 s on it against 2.4 s plain,
    ``benchmarks/results/train_speed_cuda.txt``; not profiled, presumably the
    launches of its extra small operations).
    """
    if compiled is None:
        compiled = uses_kernels(model, x)
    if compiled:
        return compiled_loss_terms(model, x, y)
    if not supports(model.config) or x.device.type != "cpu":
        mu, logvar = model.encoder(x, y)
        z = model.reparameterize(mu, logvar)
        return bce(model.decoder(z, y), x), kl_divergence(mu, logvar)
    mu, logvar = encode(model, x, y)
    z = model.reparameterize(mu, logvar)  # (B, D): the same noise draw as model(x, y)
    x_hat = decode_phases(model, z, y)  # (B, 4, H/2, W/2)
    return bce(x_hat, _to_phases(x)), kl_divergence(mu, logvar)


def negative_elbo(model: CVAE, x: torch.Tensor, y: torch.Tensor | None, *,
                  compiled: bool | None = None) -> torch.Tensor:
    """Per-image negative ELBO (B,) with one sampled z: the sum of :func:`loss_terms`."""
    reconstruction, kl = loss_terms(model, x, y, compiled=compiled)
    return reconstruction + kl
