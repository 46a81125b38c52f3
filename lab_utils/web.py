"""The shipped models for the website: ``python -m lab_utils.web OUTDIR``.

The published series (``make site``) shows a working slider explorer on the page
of ``06_exploring`` and a working drawing pad on the page of
``09_your_handwriting``. There is no Python behind a static page, so the page
runs the models itself, in a small hand-written JavaScript forward pass
(``site/_static/cvae_nn.js``). This module writes what that code reads:

    OUTDIR/models.json        the manifest: every model as a list of operations
                              (conv2d, linear, relu, sigmoid, maxpool2d,
                              upsample_nearest, flatten, reshape), the tensors'
                              places in the weight file, the explorer's defaults
    OUTDIR/lab.bin            the lab CVAE's encoder (mu head) and decoder
    OUTDIR/classifier.bin     the MNIST classifier, BatchNorm folded into the convs

A tensor is stored as float16 when that is exact (the shipped lab model's
weights are float16 already, so nothing is lost) and as float32 otherwise
(the classifier, and any weight that BatchNorm folding touched). Everything is
little-endian, each tensor starts on a 4-byte boundary.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import torch
from torch import nn

from .checkpoints import load_pretrained
from .classifier import load_classifier
from .handwriting import BOX, FIELD, INK_LEVEL, PAD_SIZE, PEN_FRACTION
from .model import CVAE

FORMAT = "cvae-lab-web"
FORMAT_VERSION = 1
MANIFEST = "models.json"
# The explorer's defaults, as lab_utils.widgets.LatentExplorer has them.
EXPLORER_DIGIT = 0
EXPLORER_SEED = 0
Z_RANGE = 3.0
TEMPERATURE_MAX = 2.0


class WeightFile:
    """Collects tensors into one little-endian blob; remembers where each one is."""

    def __init__(self):
        self.parts: list[bytes] = []
        self.size = 0
        self.tensors: dict[str, dict] = {}

    def add(self, name: str, tensor: torch.Tensor) -> str:
        t = tensor.detach().to("cpu", torch.float32).contiguous()
        if not torch.isfinite(t).all():
            raise ValueError(f"{name} has NaN or infinite values")
        half = t.half()
        exact = bool(torch.equal(half.float(), t))  # float16 holds it exactly: store 2 bytes
        data = (half.numpy() if exact else t.numpy()).astype("<f2" if exact else "<f4").tobytes()
        pad = (-self.size) % 4
        if pad:
            self.parts.append(b"\0" * pad)
            self.size += pad
        self.tensors[name] = {
            "dtype": "float16" if exact else "float32", "offset": self.size,
            "shape": list(t.shape),
        }
        self.parts.append(data)
        self.size += len(data)
        return name

    def finish(self, entry: dict) -> bytes:
        """Record the tensors' places in the manifest ``entry``; return the file's bytes."""
        entry["tensors"] = self.tensors
        entry["bytes"] = self.size
        return b"".join(self.parts)


def _fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Conv (no bias or bias) followed by an eval-mode BatchNorm -> one conv's weight, bias."""
    w = conv.weight.detach().double()
    b = conv.bias.detach().double() if conv.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
    scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
    w = w * scale.view(-1, 1, 1, 1)
    b = (b - bn.running_mean.double()) * scale + bn.bias.detach().double()
    return w.float(), b.float()


def program(modules, weights: WeightFile, prefix: str) -> list[dict]:
    """nn modules in forward order -> the operations the page's JavaScript runs."""
    mods = list(modules)
    ops: list[dict] = []
    i = 0
    while i < len(mods):
        m = mods[i]
        name = f"{prefix}.{i}"
        if isinstance(m, nn.Sequential):
            ops += program(m, weights, name)
        elif isinstance(m, nn.Conv2d):
            k = m.kernel_size
            if k[0] != k[1] or m.groups != 1 or m.dilation != (1, 1) or m.padding_mode != "zeros" \
                    or m.stride[0] != m.stride[1] or m.padding[0] != m.padding[1]:
                raise ValueError(f"{name}: the page runs square, ungrouped, zero-padded convs only: {m}")
            if i + 1 < len(mods) and isinstance(mods[i + 1], nn.BatchNorm2d):
                w, b = _fold_batchnorm(m, mods[i + 1])
                i += 1
            else:
                w = m.weight
                b = m.bias if m.bias is not None else torch.zeros(m.out_channels)
            ops.append({"op": "conv2d", "weight": weights.add(name + ".weight", w),
                        "bias": weights.add(name + ".bias", b),
                        "stride": m.stride[0], "padding": m.padding[0]})
        elif isinstance(m, nn.Linear):
            b = m.bias if m.bias is not None else torch.zeros(m.out_features)
            ops.append({"op": "linear", "weight": weights.add(name + ".weight", m.weight),
                        "bias": weights.add(name + ".bias", b)})
        elif isinstance(m, nn.ReLU):
            ops.append({"op": "relu"})
        elif isinstance(m, nn.Sigmoid):
            ops.append({"op": "sigmoid"})
        elif isinstance(m, nn.MaxPool2d):
            if m.kernel_size not in (2, (2, 2)) or m.stride not in (2, (2, 2)) or m.padding not in (0, (0, 0)):
                raise ValueError(f"{name}: the page runs 2x2 max pooling only: {m}")
            ops.append({"op": "maxpool2d"})
        elif isinstance(m, nn.Upsample):  # UpsamplingNearest2d is one
            if m.mode != "nearest" or m.scale_factor not in (2, 2.0, (2.0, 2.0)):
                raise ValueError(f"{name}: the page runs nearest x2 upsampling only: {m}")
            ops.append({"op": "upsample_nearest", "scale": 2})
        elif isinstance(m, nn.Flatten):
            ops.append({"op": "flatten"})
        elif isinstance(m, (nn.Dropout, nn.Identity)):
            pass  # nothing to do at inference
        else:
            raise ValueError(f"{name}: the page cannot run {type(m).__name__} ({m})")
        i += 1
    return ops


def export_cvae(model: CVAE) -> tuple[dict, bytes]:
    """A conditional CVAE -> (its manifest entry, its weight file)."""
    cfg = model.config
    if not cfg.conditional:
        raise ValueError("the site's explorer and pad need a conditional CVAE")
    weights = WeightFile()
    enc, dec = model.encoder, model.decoder
    encoder = program(enc.conv, weights, "encoder.conv") + [{"op": "flatten"}] \
        + program(enc.fc, weights, "encoder.fc") + program([enc.fc_mu], weights, "encoder.fc_mu")
    decoder = program(dec.fc, weights, "decoder.fc") + [{
        "op": "reshape", "shape": [cfg.dec_start_channels, cfg.dec_start_size, cfg.dec_start_size],
    }] + program(dec.conv, weights, "decoder.conv")
    entry = {
        "kind": "cvae",
        "config": {"latent_dim": cfg.latent_dim, "num_classes": cfg.num_classes,
                   "image_size": cfg.image_size},
        # encoder input: (1 + num_classes, S, S), the image and the label's constant maps
        "encoder": encoder,  # -> mu (latent_dim,)
        # decoder input: (latent_dim + num_classes,), z and the one-hot label
        "decoder": decoder,  # -> (1, S, S) in [0, 1]
    }
    return entry, weights.finish(entry)


def export_classifier(classifier) -> tuple[dict, bytes]:
    """The MNIST classifier -> (its manifest entry, its weight file)."""
    weights = WeightFile()
    ops = program(classifier.features, weights, "features") + program(classifier.head, weights, "head")
    entry = {"kind": "classifier", "config": {"num_classes": classifier.config.num_classes,
                                              "image_size": classifier.config.image_size},
             "ops": ops}  # (1, S, S) -> logits (num_classes,)
    return entry, weights.finish(entry)


def explorer_defaults(model: CVAE) -> dict:
    """What ``lab_utils.widgets.explore(model)`` starts with: digit 0 and the seed-0 z."""
    z = torch.randn(model.config.latent_dim, generator=torch.Generator().manual_seed(EXPLORER_SEED))
    return {"digit": EXPLORER_DIGIT, "seed": EXPLORER_SEED, "temperature": 1.0,
            "z": [round(float(v), 6) for v in z], "z_range": Z_RANGE,
            "temperature_max": TEMPERATURE_MAX}


def export(outdir: str | Path, model: CVAE | str = "lab") -> dict:
    """Write ``models.json``, ``lab.bin`` and ``classifier.bin`` into ``outdir``; returns the manifest."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    name = model if isinstance(model, str) else "lab"
    if isinstance(model, str):
        model = load_pretrained(model)
    model = model.float().eval()
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "models": {},
                "explorer": explorer_defaults(model),
                "pad": {"size": PAD_SIZE, "pen_width": PAD_SIZE * PEN_FRACTION, "box": BOX,
                        "field": FIELD, "ink_level": INK_LEVEL}}
    for key, (entry, blob) in {"cvae": export_cvae(model),
                               "classifier": export_classifier(load_classifier().float().eval())}.items():
        file = f"{name if key == 'cvae' else key}.bin"
        (outdir / file).write_bytes(blob)
        entry["file"] = file
        entry["sha256"] = hashlib.sha256(blob).hexdigest()[:16]  # cache-busting query string
        manifest["models"][key] = entry
    (outdir / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def model_bytes(outdir: str | Path) -> int:
    """Bytes the page downloads for its models: the manifest and the weight files."""
    outdir = Path(outdir)
    manifest = json.loads((outdir / MANIFEST).read_text())
    return (outdir / MANIFEST).stat().st_size + sum(
        (outdir / m["file"]).stat().st_size for m in manifest["models"].values())


def main(argv=None) -> int:
    """``python -m lab_utils.web OUTDIR [--model NAME]``."""
    p = argparse.ArgumentParser(
        description="Export the shipped lab CVAE and the classifier for the website's "
                    "explorer and drawing pad (models.json + weight files).")
    p.add_argument("outdir", help="folder to write models.json, lab.bin and classifier.bin into")
    p.add_argument("--model", default="lab", help="shipped CVAE to export (default: lab)")
    args = p.parse_args(argv)
    manifest = export(args.outdir, args.model)
    sizes = ", ".join(f"{m['file']} {m['bytes'] / 1e3:.0f} kB" for m in manifest["models"].values())
    print(f"wrote {Path(args.outdir) / MANIFEST}: {sizes}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
