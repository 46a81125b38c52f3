"""The site's in-page models: the hand-written forward pass (cvae_nn.js) against
onnxruntime-web, measured in headless Chromium on the same inputs.

Issue 16 left the choice open: "a small hand-written JavaScript forward pass, or
onnxruntime-web from npm with its wasm served from the site; measure both and
pick". This script measures both:

* exports the shipped lab model to ONNX with torch.onnx: the explorer's decoder
  (one z -> the ten digits 0-9, as ``model.decode_all_labels`` does, in one
  batched run) and the pad's encoder (image + label -> mu), and the classifier
  (for the pad's bytes and time); weights that float16 holds exactly are stored
  as float16 with a Cast, the same rule as ``lab_utils.web`` (so the ONNX files
  are not twice the weight files for want of trying);
* installs onnxruntime-web from npm into a temporary folder (never the repo);
* serves a small page, the ort wasm files, the .onnx files, the site's
  ``cvae_nn.js`` and the exported weight files from 127.0.0.1, the page loading
  cvae_nn.js as the site does (an ES module, ``loadModels("_static/models/")``);
* in headless Chromium times, alternating the two ways call by call (ABAB, then
  BABA) on the same inputs: ten decodes, one encode, one classification (median
  and p95 after a warm-up), with the wasm backend single-threaded as a static
  host gives it, then asking for 2 threads without cross-origin isolation (what
  ORT does then), then with COOP/COEP headers (which e.g. GitHub Pages cannot
  send) and 2 threads;
* prints the bytes each way ships (raw and gzipped) and each one's largest
  difference from PyTorch on the same inputs.

Needs, beyond the ``dev`` extra: ``pip install onnx`` (for torch.onnx's export)
and ``npm`` on the PATH (registry access for ``npm install onnxruntime-web``).

    python benchmarks/site_onnx.py                 # 300 runs of each, 30 warm-up
    python benchmarks/site_onnx.py --runs 1000
"""
from __future__ import annotations

import argparse
import gzip
import http.server
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "site" / "_ext"))

import cvae_site  # noqa: E402  (the site's build and test server)
from machine import load_average  # noqa: E402

from lab_utils import web  # noqa: E402
from lab_utils.checkpoints import load_pretrained  # noqa: E402
from lab_utils.classifier import load_classifier  # noqa: E402

NN_JS = ROOT / "site" / "_static" / "cvae_nn.js"
CHROMIUM = os.environ.get("CVAE_LAB_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
# the wasm-only build of the ORT API and its wasm glue + binary (what the page loads)
ORT_FILES = ["ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm"]
N_REF = 16  # reference inputs for the differences from PyTorch

PAGE = """<!doctype html><meta charset="utf-8"><title>cvae_nn.js vs onnxruntime-web</title><link rel="icon" href="data:,">
<script type="module">
const params = new URLSearchParams(location.search);
const threads = Number(params.get("threads") || 1);
const t0 = performance.now();
const nn = await import("./_static/cvae_nn.js");           // as cvae_pages.js imports it
const js = await nn.loadModels(new URL("_static/models/", location.href));
const jsReady = performance.now() - t0;
const t1 = performance.now();
const ort = await import("./ort/ort.wasm.min.mjs");
ort.env.wasm.wasmPaths = new URL("ort/", location.href).href;
ort.env.wasm.numThreads = threads;
const opts = {executionProviders: ["wasm"], graphOptimizationLevel: "all"};
const sessions = {};
for (const k of ["decoder", "encoder", "classifier"]) {
  sessions[k] = await ort.InferenceSession.create(`onnx/${k}.onnx`, opts);
}
const ortReady = performance.now() - t1;
const D = js.cvae.latentDim, N = js.cvae.numClasses, S = js.cvae.size;
const onehot = (label) => { const v = new Float32Array(N); v[label] = 1; return v; };
const ways = {
  js: {
    decode: async (z) => js.cvae.decodeAll(z),
    encode: async (x, label) => js.cvae.encode(x, label),
    classify: async (x) => js.classifier.logits(x),
  },
  ort: {
    decode: async (z) => {
      const out = (await sessions.decoder.run({z: new ort.Tensor("float32", z, [1, D])})).images.data;
      return Array.from({length: N}, (_, k) => out.subarray(k * S * S, (k + 1) * S * S));
    },
    encode: async (x, label) => (await sessions.encoder.run({
      x: new ort.Tensor("float32", x, [1, 1, S, S]),
      label: new ort.Tensor("float32", onehot(label), [1, N])})).mu.data,
    classify: async (x) => (await sessions.classifier.run(
      {x: new ort.Tensor("float32", x, [1, 1, S, S])})).logits.data,
  },
};
window.bench = {
  jsReady, ortReady, threads: ort.env.wasm.numThreads, isolated: self.crossOriginIsolated,
  ortVersion: ort.env.versions ? ort.env.versions.web : "?",
  // one op, both ways alternating (ABAB, then BABA), on inputs cycling through `inputs`
  async time(op, n, inputs) {
    const t = {js: [], ort: []};
    for (let i = 0; i < n; i++) {
      const [a, b] = inputs[i % inputs.length];
      const order = i % 2 ? ["ort", "js"] : ["js", "ort"];
      for (const w of order) {
        const x = Float32Array.from(a);
        const s = performance.now();
        const out = await ways[w][op](x, b);
        t[w].push(performance.now() - s);
        if (!out) throw new Error("no output");
      }
    }
    return t;
  },
  async outputs(inp) {  // both ways' answers on the reference inputs
    const res = {};
    for (const w of ["js", "ort"]) {
      res[w] = {decode: [], encode: [], classify: []};
      for (let i = 0; i < inp.z.length; i++) {
        res[w].decode.push((await ways[w].decode(Float32Array.from(inp.z[i]))).map((a) => Array.from(a)));
        res[w].encode.push(Array.from(await ways[w].encode(Float32Array.from(inp.x[i]), inp.y[i])));
        res[w].classify.push(Array.from(await ways[w].classify(Float32Array.from(inp.x[i]))));
      }
    }
    return res;
  },
  resources: () => performance.getEntriesByType("resource").map((e) => e.name),
};
window.benchReady = true;
</script>
"""


# ----- the ONNX models --------------------------------------------------------------------
class DecodeAll(nn.Module):
    """One z (1, D) -> the ten digits (1, 10, 1, S, S): model.decode_all_labels for B = 1,
    without its Python-side checks (the labels 0-9 are a constant one-hot)."""

    def __init__(self, model):
        super().__init__()
        self.decoder, self.cfg = model.decoder, model.config
        self.register_buffer("labels", torch.eye(self.cfg.num_classes))

    def forward(self, z):
        c, n = self.cfg, self.cfg.num_classes
        h = torch.cat([z.expand(n, c.latent_dim), self.labels], dim=1)  # (10, D + 10)
        h = self.decoder.fc(h).view(n, c.dec_start_channels, c.dec_start_size, c.dec_start_size)
        return self.decoder.conv(h).view(1, n, 1, c.image_size, c.image_size)


class EncodeMu(nn.Module):
    """An image (1, 1, S, S) and its one-hot label (1, 10) -> mu (1, D): model.encode's mu."""

    def __init__(self, model):
        super().__init__()
        self.encoder, self.cfg = model.encoder, model.config

    def forward(self, x, label):
        s = self.cfg.image_size
        maps = label.view(1, self.cfg.num_classes, 1, 1).expand(1, self.cfg.num_classes, s, s)
        h = self.encoder.conv(torch.cat([x, maps], dim=1)).flatten(1)
        return self.encoder.fc_mu(self.encoder.fc(h))


def half_storage(path: Path) -> None:
    """Store every float32 initializer that float16 holds exactly as float16 + a Cast
    (lab_utils.web's rule); ORT folds the Casts when it loads the model."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.load(str(path))
    g = m.graph
    keep, casts = [], []
    for init in g.initializer:
        a = numpy_helper.to_array(init)
        if init.data_type == TensorProto.FLOAT and a.size >= 16 \
                and np.array_equal(a.astype(np.float16).astype(np.float32), a):
            keep.append(numpy_helper.from_array(a.astype(np.float16), init.name + "_f16"))
            casts.append(helper.make_node("Cast", [init.name + "_f16"], [init.name],
                                          to=TensorProto.FLOAT, name=init.name + "_cast"))
        else:
            keep.append(init)
    del g.initializer[:]
    g.initializer.extend(keep)
    nodes = casts + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


def export_onnx(model, classifier, outdir: Path) -> None:
    outdir.mkdir(parents=True, exist_ok=True)
    D, S = model.config.latent_dim, model.config.image_size
    jobs = {
        "decoder": (DecodeAll(model), (torch.zeros(1, D),), ["z"], ["images"]),
        "encoder": (EncodeMu(model), (torch.zeros(1, 1, S, S), torch.eye(10)[:1]), ["x", "label"], ["mu"]),
        "classifier": (classifier, (torch.zeros(1, 1, S, S),), ["x"], ["logits"]),
    }
    import warnings
    for name, (module, inputs, ins, outs) in jobs.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(module.eval(), inputs, str(outdir / f"{name}.onnx"), input_names=ins,
                              output_names=outs, opset_version=17, dynamo=False,
                              do_constant_folding=True)
        shutil.copy(outdir / f"{name}.onnx", outdir / f"{name}.f32.onnx")
        half_storage(outdir / f"{name}.onnx")


# ----- serving and sizes ----------------------------------------------------------------------
class Handler(http.server.SimpleHTTPRequestHandler):
    isolate = False
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".mjs": "text/javascript", ".js": "text/javascript",
                      ".wasm": "application/wasm", ".onnx": "application/octet-stream"}

    def end_headers(self):
        if self.isolate:
            self.send_header("Cross-Origin-Opener-Policy", "same-origin")
            self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        super().end_headers()

    def log_message(self, *args):
        pass


def serve(directory: Path, isolate: bool):
    """The site's own test server (``cvae_site.serve``), with COOP/COEP headers if ``isolate``."""
    return cvae_site.serve(directory, type("H", (Handler,), {"isolate": isolate}))


def size(paths) -> tuple[int, int]:
    """(raw bytes, gzip -6 bytes) of the files, as a static host would send them."""
    raw = sum(p.stat().st_size for p in paths)
    gz = sum(len(gzip.compress(p.read_bytes(), 6)) for p in paths)
    return raw, gz


def mb(t: tuple[int, int]) -> str:
    return f"{t[0] / 1e6:6.2f} MB ({t[1] / 1e6:5.2f} MB gzipped)"


def npm_install(folder: Path) -> Path:
    dist = folder / "node_modules" / "onnxruntime-web" / "dist"
    if not all((dist / f).is_file() for f in ORT_FILES):
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / "package.json").is_file():
            (folder / "package.json").write_text('{"name": "cvae-lab-ort-bench", "private": true}\n')
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--ignore-scripts",
                        "onnxruntime-web"], cwd=folder, check=True, stdout=subprocess.DEVNULL)
    return dist


# ----- statistics -------------------------------------------------------------------------------
def stats(ms: list[float]) -> str:
    q = statistics.quantiles(ms, n=20)
    return f"median {statistics.median(ms):6.3f} ms, p95 {q[18]:6.3f} ms"


def compare(t: dict, label: str) -> list[str]:
    js, ort = np.array(t["js"]), np.array(t["ort"])
    paired = np.median(ort / np.maximum(js, 1e-3))
    return [f"  {label:<24} cvae_nn.js {stats(t['js'])} | onnxruntime-web {stats(t['ort'])}",
            f"  {'':<24} ort / js: {np.median(ort) / np.median(js):.2f} (medians), "
            f"{paired:.2f} (median of the paired ratios, n={len(js)})"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=300, help="timed calls of each op, each way")
    p.add_argument("--warmup", type=int, default=30, help="untimed calls of each op first")
    p.add_argument("--npm-dir", default=os.path.join(tempfile.gettempdir(), "cvae-lab-ort-web"),
                   help="folder to npm install onnxruntime-web into (outside the repo)")
    args = p.parse_args(argv)
    if Path(args.npm_dir).resolve().is_relative_to(ROOT):
        p.error("--npm-dir must be outside the repository")
    from playwright.sync_api import sync_playwright

    load = load_average()
    model = load_pretrained("lab").float().eval()
    classifier = load_classifier().float().eval()
    dist = npm_install(Path(args.npm_dir))
    ort_version = json.loads((dist.parent / "package.json").read_text())["version"]

    # the same inputs for both ways, and PyTorch's answers
    g = torch.Generator().manual_seed(1)
    zs = torch.randn(64, model.config.latent_dim, generator=g).clamp(-3, 3)  # the sliders' range
    with torch.no_grad():
        digits = model.decode_all_labels(zs[:N_REF])  # (16, 10, 1, 28, 28)
        ys = torch.arange(N_REF) % 10
        xs = digits[torch.arange(N_REF), ys]  # (16, 1, 28, 28): a decoded digit of each label
        assert torch.equal(DecodeAll(model)(zs[:1]), model.decode_all_labels(zs[:1]))  # same maths
        ref = {"decode": digits.numpy(), "encode": model.encode(xs, ys)[0].numpy(),
               "classify": classifier(xs).numpy()}
    timing_inputs = {
        "decode": [[z.tolist(), 0] for z in zs],
        "encode": [[x.flatten().tolist(), int(y)] for x, y in zip(xs, ys)],
        "classify": [[x.flatten().tolist(), 0] for x in xs],
    }
    ref_inputs = {"z": zs[:N_REF].tolist(), "x": [x.flatten().tolist() for x in xs],
                  "y": ys.tolist()}

    with tempfile.TemporaryDirectory(prefix="cvae-onnx-") as tmp:
        tmp = Path(tmp)
        (tmp / "_static").mkdir()
        shutil.copy(NN_JS, tmp / "_static" / "cvae_nn.js")
        web.export(tmp / "_static" / "models", model)
        export_onnx(model, classifier, tmp / "onnx")
        (tmp / "ort").mkdir()
        for f in ORT_FILES:
            shutil.copy(dist / f, tmp / "ort" / f)
        (tmp / "bench.html").write_text(PAGE)

        models = tmp / "_static" / "models"
        onnx_dir = tmp / "onnx"
        print(f"machine: {os.cpu_count()} CPUs, load average {load:.1f}; Chromium {CHROMIUM}; "
              f"onnxruntime-web {ort_version} (npm), wasm backend; torch {torch.__version__}")
        results, logs = {}, []
        # (title, COOP/COEP headers, ORT threads asked for, timed); cross-origin isolation
        # also sharpens performance.now() from 100 us to 5 us in Chromium
        configs = [("1 thread, no COOP/COEP (a plain static host)", False, 1, True),
                   ("2 threads asked, no COOP/COEP", False, 2, False),
                   ("1 thread, COOP/COEP headers (cross-origin isolated)", True, 1, True),
                   ("2 threads, COOP/COEP headers (cross-origin isolated)", True, 2, True)]
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            for title, isolate, threads, timed in configs:
                with serve(tmp, isolate) as url:
                    ctx = browser.new_context()
                    page = ctx.new_page()
                    page.on("console", lambda m: logs.append(f"[{title}] {m.type}: {m.text}")
                            if m.type in ("warning", "error") else None)
                    page.goto(f"{url}/bench.html?threads={threads}")
                    page.wait_for_function("() => window.benchReady === true", timeout=120_000)
                    info = page.evaluate("""() => ({jsReady: bench.jsReady, ortReady: bench.ortReady,
                        threads: bench.threads, isolated: bench.isolated, resources: bench.resources()})""")
                    out = page.evaluate("inp => bench.outputs(inp)", ref_inputs)
                    times = {}
                    for op in ("decode", "encode", "classify") if timed else ():
                        page.evaluate("([op, n, inp]) => bench.time(op, n, inp)",
                                      [op, args.warmup, timing_inputs[op]])
                        times[op] = page.evaluate("([op, n, inp]) => bench.time(op, n, inp)",
                                                  [op, args.runs, timing_inputs[op]])
                    results[title] = (info, out, times)
                    ctx.close()
            browser.close()

        # bytes: what each way ships for the two widgets (the files the page fetched)
        fetched = {Path(u.split("?")[0]).name for u in next(iter(results.values()))[0]["resources"]}
        ort_runtime = [tmp / "ort" / f for f in ORT_FILES if f in fetched]
        onnx_files = [onnx_dir / f"{k}.onnx" for k in ("decoder", "encoder", "classifier")]
        onnx_f32 = [onnx_dir / f"{k}.f32.onnx" for k in ("decoder", "encoder", "classifier")]
        manifest = json.loads((models / web.MANIFEST).read_text())
        js_files = [tmp / "_static" / "cvae_nn.js", models / web.MANIFEST] + \
            [models / m["file"] for m in manifest["models"].values()]
        print("bytes shipped (the explorer's and the pad's models, both widgets):")
        print(f"  cvae_nn.js + models.json + lab.bin + classifier.bin:   {mb(size(js_files))}")
        print(f"    of which cvae_nn.js                                  {mb(size(js_files[:1]))}")
        print(f"  onnxruntime-web runtime + decoder/encoder/classifier.onnx: "
              f"{mb(size(ort_runtime + onnx_files))}")
        for f in ort_runtime:
            print(f"    {f.name:<52} {mb(size([f]))}")
        print(f"    the three .onnx (float16-exact weights as float16) {mb(size(onnx_files))}"
              f"  [all float32: {mb(size(onnx_f32))}]")
        print("    (plus, either way, to_mnist for the pad: cvae_nn.js's toMnist or a copy)")

        print(f"difference from PyTorch (max abs) on {N_REF} reference inputs "
              f"(decode: 10 digits each, pixels in [0, 1]; encode: mu; classify: logits):")
        for i, (title, (info, out, _)) in enumerate(results.items()):
            for way in ("js", "ort") if i == 0 else ("ort",):
                diffs = {op: float(np.abs(np.array(out[way][op], dtype=np.float64).reshape(ref[op].shape)
                                          - ref[op]).max()) for op in ref}
                name = "cvae_nn.js" if way == "js" else \
                    f"onnxruntime-web, {info['threads']} thread(s), {'' if info['isolated'] else 'not '}isolated"
                print(f"  {name:<42} decode {diffs['decode']:.1e}, encode {diffs['encode']:.1e}, "
                      f"classify {diffs['classify']:.1e}")

        for title, (info, _, times) in results.items():
            print(f"{title}: crossOriginIsolated={info['isolated']}, ORT threads in use "
                  f"{info['threads']}; ready after {info['jsReady']:.0f} ms (cvae_nn.js: import + "
                  f"loadModels) vs {info['ortReady']:.0f} ms (ort import + wasm + 3 sessions)")
            if not times:
                print(" not timed: ORT falls back to 1 thread (its warning below), as above")
                continue
            print(f" one call, {args.runs} calls each way alternating after {args.warmup} warm-up:")
            for line in compare(times["decode"], "explorer: 10 decodes") + \
                    compare(times["encode"], "pad: encode") + compare(times["classify"], "pad: classify"):
                print(line)
            pad = {w: [a + b + c for a, b, c in zip(times["decode"][w], times["encode"][w],
                                                     times["classify"][w])] for w in ("js", "ort")}
            for line in compare(pad, "pad: all three"):
                print(line)
        for line in dict.fromkeys(logs):  # ORT's warnings, once each
            print(f"console {line[:300]}")
    load = max(load, load_average())
    if load > (os.cpu_count() or 1):
        print(f"note: load average {load:.1f} > {os.cpu_count()} CPUs: other jobs share the cores; "
              f"the times include waiting for them, the ratios (alternating calls) less so")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
