"""lab_utils.web and the site's JavaScript forward pass (site/_static/cvae_nn.js).

The page's decoder, encoder, classifier and to_mnist run on fixed inputs made
here; their answers must agree with PyTorch's (1e-4 for the models, one grey
level for to_mnist). The JavaScript runs in Node when there is one, else in
headless Chromium (through Playwright); without either the comparison is skipped.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from lab_utils import load_pretrained, web
from lab_utils.classifier import load_classifier
from lab_utils.handwriting import draw_strokes, to_mnist

ROOT = Path(__file__).resolve().parent.parent
NN_JS = ROOT / "site" / "_static" / "cvae_nn.js"
CHROMIUM = os.environ.get("CVAE_LAB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

# Runs the page's code on inputs.json; `read(name)` gives a file's bytes as an ArrayBuffer.
JS_BODY = """
const nn = await import(NN_URL);
const manifest = JSON.parse(new TextDecoder().decode(await read("models.json")));
const cvae = new nn.CVAE(manifest.models.cvae, await read(manifest.models.cvae.file));
const clf = new nn.Classifier(manifest.models.classifier, await read(manifest.models.classifier.file));
const inp = JSON.parse(new TextDecoder().decode(await read("inputs.json")));
const arr = (a) => Array.from(a);
const out = {
  decode: inp.z.map((z, i) => arr(cvae.decode(Float32Array.from(z), inp.y[i]))),
  decode_all: inp.z.map((z) => cvae.decodeAll(Float32Array.from(z)).map(arr)),
  encode: inp.x.map((x, i) => arr(cvae.encode(Float32Array.from(x), inp.y[i]))),
  logits: inp.x.map((x) => arr(clf.logits(Float32Array.from(x)))),
  to_mnist: inp.canvases.map((c) => {
    const r = nn.toMnist(Float32Array.from(c.pixels, (v) => Math.fround(v / 255)), c.h, c.w);
    return r === null ? null : arr(r);
  }),
};
"""

NODE_SCRIPT = """
import { readFile } from "node:fs/promises";
const DIR = process.argv[1];
const NN_URL = process.argv[2];
const read = async (name) => { const b = await readFile(DIR + "/" + name);
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength); };
""" + JS_BODY + """
process.stdout.write(JSON.stringify(out));
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("web")
    manifest = web.export(out)
    return out, manifest


def test_export_writes_the_manifest_and_weights(exported):
    out, manifest = exported
    assert json.loads((out / "models.json").read_text()) == manifest
    cvae, clf = manifest["models"]["cvae"], manifest["models"]["classifier"]
    # The shipped lab model is float16 already: exported as float16, nothing lost.
    assert {t["dtype"] for t in cvae["tensors"].values()} == {"float16"}
    model = load_pretrained()
    n_params = sum(int(np.prod(t["shape"])) for t in cvae["tensors"].values())
    logvar = sum(p.numel() for p in model.encoder.fc_logvar.parameters())
    assert n_params == sum(p.numel() for p in model.parameters()) - logvar  # z = mu: no logvar head
    assert (out / cvae["file"]).stat().st_size == cvae["bytes"] <= 2 * n_params + 4 * len(cvae["tensors"])
    assert [op["op"] for op in cvae["decoder"]] == [
        "linear", "relu", "reshape", "conv2d", "relu", "upsample_nearest",
        "conv2d", "relu", "conv2d", "sigmoid"]
    assert "maxpool2d" in [op["op"] for op in clf["ops"]]  # BatchNorm folded away
    ex = manifest["explorer"]
    z0 = torch.randn(20, generator=torch.Generator().manual_seed(0))
    assert ex["digit"] == 0 and np.allclose(ex["z"], z0.tolist(), atol=1e-6)
    assert web.model_bytes(out) == sum((out / f).stat().st_size
                                       for f in ("models.json", cvae["file"], clf["file"]))


def test_export_command(tmp_path):
    assert web.main([str(tmp_path / "m")]) == 0
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["classifier.bin", "lab.bin", "models.json"]


def test_export_refuses_what_the_page_cannot_run():
    with pytest.raises(ValueError, match="cannot run"):
        web.program([torch.nn.Tanh()], web.WeightFile(), "x")
    with pytest.raises(ValueError, match="conditional"):
        web.export_cvae(load_pretrained("lab-vae"))


def _inputs():
    """Fixed inputs: latents, labels, images (decoded digits and drawings), canvases."""
    g = torch.Generator().manual_seed(7)
    model = load_pretrained()
    z = torch.randn(6, 20, generator=g) * torch.tensor([0.0, 1, 1, 2, 3, 1]).view(6, 1)
    y = torch.tensor([0, 1, 3, 5, 8, 9])
    with torch.no_grad():
        x = model.decode(torch.randn(6, 20, generator=g), y)  # (6, 1, 28, 28), digit-like
    x[5] = torch.rand(1, 28, 28, generator=g)  # and a noise image
    strokes = {
        "one": [[(140, 40 + 10 * i) for i in range(21)]],
        "zero": [[(140 + 75 * np.sin(2 * np.pi * k / 36), 140 - 105 * np.cos(2 * np.pi * k / 36))
                  for k in range(38)]],
        "seven": [[(70, 50), (210, 50), (120, 250)]],
        "four": [[(170, 30), (120, 110), (70, 170), (215, 165)], [(180, 95), (165, 255)]],
        "two": [[(80, 80), (140, 40), (200, 80), (90, 240), (215, 238)]],
        "three": [[(80, 50), (200, 60), (120, 130), (210, 190), (150, 250), (70, 230)]],
        "dot": [[(30, 30)]],
        "wide": [[(20, 140), (260, 150)]],
        "corner": [[(250, 250), (279, 279)]],
    }
    canvases = [(draw_strokes(s) * 255).round().astype(np.uint8) for s in strokes.values()]
    canvases.append(np.zeros((280, 280), np.uint8))  # empty: no image
    rng = np.random.default_rng(0)
    canvases.append((rng.random((50, 90)) ** 4 * 255).astype(np.uint8))  # odd size, speckles
    return z, y, x, canvases


def _run_js(directory: Path) -> dict:
    node = shutil.which("node")
    if node:
        proc = subprocess.run(
            [node, "--input-type=module", "-e", NODE_SCRIPT, str(directory), NN_JS.as_uri()],
            capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("neither Node nor Playwright to run the page's JavaScript")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"neither Node nor Chromium ({CHROMIUM}) to run the page's JavaScript")
    files = {"cvae_nn.js": NN_JS, **{p.name: p for p in directory.iterdir()}}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            def serve(route):  # the files from memory: no server, nothing leaves the page
                name = route.request.url.rsplit("/", 1)[1]
                if name == "index.html":
                    return route.fulfill(body="<!doctype html><title>cvae_nn</title>",
                                         content_type="text/html")
                route.fulfill(body=files[name].read_bytes(), content_type="text/javascript")

            page.route("http://cvae.test/**", serve)
            page.goto("http://cvae.test/index.html")
            return page.evaluate(
                "async () => { const NN_URL = 'http://cvae.test/cvae_nn.js';"
                " const read = async (n) => (await fetch('http://cvae.test/' + n)).arrayBuffer();"
                + JS_BODY + " return out; }")
        finally:
            browser.close()


def test_the_pages_models_agree_with_pytorch(exported):
    out, _ = exported
    z, y, x, canvases = _inputs()
    (out / "inputs.json").write_text(json.dumps({
        "z": z.tolist(), "y": y.tolist(), "x": x.flatten(1).tolist(),
        "canvases": [{"pixels": c.flatten().tolist(), "h": c.shape[0], "w": c.shape[1]}
                     for c in canvases],
    }))
    js = _run_js(out)
    model, clf = load_pretrained(), load_classifier()
    with torch.inference_mode():
        decoded = model.decode(z, y).flatten(1)
        labels = torch.arange(10)  # decodeAll: each z with every label
        every = torch.stack([model.decode(zi.expand(10, -1), labels).flatten(1) for zi in z])
        mu, _ = model.encode(x, y)
        logits = clf(x)
    diffs = {
        "decode": (torch.tensor(js["decode"]) - decoded).abs().max().item(),
        "decodeAll": (torch.tensor(js["decode_all"]) - every).abs().max().item(),
        "encode": (torch.tensor(js["encode"]) - mu).abs().max().item(),
        "classifier": (torch.tensor(js["logits"]) - logits).abs().max().item(),
    }
    print("JS vs PyTorch, max abs difference:", diffs)
    assert all(d <= 1e-4 for d in diffs.values()), diffs
    assert torch.tensor(js["logits"]).argmax(1).tolist() == logits.argmax(1).tolist()

    worst, ties = 0.0, 0
    for canvas, got in zip(canvases, js["to_mnist"]):
        if not canvas.any():
            assert got is None  # empty canvas: "draw a digit first"
            continue
        want = to_mnist(canvas)
        got = torch.tensor(got).view(28, 28)
        shifts = [(0, 0)]
        tie = _centre_of_mass_tie(canvas)
        if tie:  # see _centre_of_mass_tie: either neighbouring shift is right
            ties += 1
            shifts += [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                       if (dy == 0 or "y" in tie) and (dx == 0 or "x" in tie)]
        d = min((torch.roll(got, s, (0, 1)) - want).abs().max().item() for s in shifts) * 255
        worst = max(worst, d)
    print(f"to_mnist, JS vs Python: max difference {worst:.4f} grey levels "
          f"({ties} of {len(canvases) - 1} drawings tie for the centring shift)")
    assert worst <= 1.0
    assert len(canvases) - 1 - ties >= 5  # the asymmetric ones match without any shift


def _centre_of_mass_tie(canvas) -> str:
    """"y", "x", "yx" or "" : whether the resized ink's centre of mass lies (almost)
    exactly half-way between two whole-pixel shifts. Then PyTorch's float32 sums and
    the page's float64 sums may round to different neighbours (a perfectly symmetric
    stroke, as drawn by draw_strokes, does this; a hand-drawn one practically never).
    """
    import torch.nn.functional as F

    from lab_utils.handwriting import ink_box

    image = torch.from_numpy(canvas).double() / 255
    top, bottom, left, right = ink_box(image)
    crop = image[top:bottom, left:right]
    h, w = crop.shape
    s = 20 / max(h, w)
    small = F.interpolate(crop[None, None], size=(max(1, round(h * s)), max(1, round(w * s))),
                          mode="bilinear", antialias=True, align_corners=False)[0, 0].clamp(0, 1)
    total = small.sum()
    cy = (small.sum(1) * torch.arange(small.shape[0])).sum() / total
    cx = (small.sum(0) * torch.arange(small.shape[1])).sum() / total
    near = lambda c: abs((14 - c.item() + 0.5) % 1 - 0.5) > 0.5 - 1e-4  # noqa: E731
    return ("y" if near(cy) else "") + ("x" if near(cx) else "")
