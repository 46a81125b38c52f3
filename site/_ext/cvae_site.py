"""The Sphinx side of the CVAE Lab website.

* copies ``notebooks/*.ipynb`` into the source folder (``site/notebooks/``,
  git-ignored) so Sphinx sees them, without touching the originals;
* exports the shipped models with :func:`lab_utils.web.export` into the site's
  ``_static/models/`` and copies MathJax (the ``django-static-mathjax`` wheel)
  into ``_static/mathjax/``, so no page needs another host;
* puts ``lab_utils/static/`` (the drawing pad's JavaScript, shared with the
  JupyterLab widget) into ``_static/``;
* reads each notebook through :func:`read_notebook`, which replaces the saved
  widget views of the slider explorer and the drawing pad by placeholders that
  ``_static/cvae_pages.js`` turns into working widgets, started at the state the
  notebook saved.
"""
from __future__ import annotations

import contextlib
import functools
import html
import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import nbformat

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
STATIC = REPO / "lab_utils" / "static"
SITE = REPO / "site"
HTML = SITE / "_build" / "html"
MATHJAX_FILES = ["tex-chtml-full.js", "output/chtml/fonts/woff-v2"]


# ----- the notebooks' widgets -> placeholders -------------------------------------------
def _models(state: dict, root: str) -> list[dict]:
    """The widget models under ``root`` (itself included), depth first in children order."""
    found, todo, seen = [], [root], set()
    while todo:
        mid = todo.pop(0)
        if mid in seen or mid not in state:
            continue
        seen.add(mid)
        model = state[mid]
        found.append(model)
        children = model.get("state", {}).get("children") or []
        todo[:0] = [c[len("IPY_MODEL_"):] for c in children if isinstance(c, str)
                    and c.startswith("IPY_MODEL_")]
    return found


def _classes(model: dict) -> list[str]:
    return model.get("state", {}).get("_dom_classes") or []


def widget_placeholder(view: dict, state: dict, text: str = "") -> dict | None:
    """A saved widget view -> ``{"kind": "explorer"|"pad", ...state}``, or None if neither."""
    models = _models(state, view.get("model_id", ""))
    root = _classes(models[0]) if models else []
    if "cvae-explorer" in root or (not models and text.startswith("LatentExplorer")):
        found = {"kind": "explorer"}
        z, names = [], []
        for m in models:
            cls, value = _classes(m), m.get("state", {}).get("value")
            if "cvae-explorer-digit" in cls:
                found["digit"] = int(value)
            elif "cvae-explorer-temperature" in cls:
                found["temperature"] = float(value)
            elif "cvae-explorer-noise" in cls:
                z.append(float(value))
                names.append(str(m["state"].get("description") or f"z{len(names)}"))
        if z:
            found["z"], found["names"] = z, names
        digit = re.search(r"digit=(\d+)", text)
        if "digit" not in found and digit:
            found["digit"] = int(digit.group(1))
        return found
    if "cvae-drawing-pad" in root or (not models and text.startswith("DrawingPad")):
        return {"kind": "pad"}
    return None


def _placeholder_output(found: dict) -> dict:
    kind = found["kind"]
    what = "slider explorer" if kind == "explorer" else "drawing pad"
    body = (f'<div class="cvae-web cvae-web-{kind}" data-state="{html.escape(json.dumps(found))}">'
            f'<noscript>The {what} runs in your browser and needs JavaScript.</noscript>'
            f'<p class="cvae-web-loading">loading the {what}...</p></div>')
    return nbformat.v4.new_output("display_data", data={"text/html": body,
                                                        "text/plain": f"[the {what}]"})


def transform(nb) -> nbformat.NotebookNode:
    """Replace the explorer's and the pad's widget views; drop the saved widget state."""
    widgets = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {})
    state = widgets.get("state", {})
    for cell in nb.cells:
        for i, out in enumerate(cell.get("outputs", [])):
            data = out.get("data", {})
            if WIDGET_VIEW not in data:
                continue
            text = data.get("text/plain", "")
            text = "".join(text) if isinstance(text, list) else text
            found = widget_placeholder(data[WIDGET_VIEW], state, text)
            if found is not None:
                cell.outputs[i] = _placeholder_output(found)
            else:  # another widget: the page cannot run it; show its text form
                cell.outputs[i] = nbformat.v4.new_output("display_data", data={"text/plain": text})
    nb.metadata.pop("widgets", None)  # nothing on the page reads it
    return nb


def read_notebook(text: str) -> nbformat.NotebookNode:
    """myst-nb's reader for ``.ipynb`` files (``nb_custom_formats``)."""
    return transform(nbformat.reads(text, as_version=4))


# ----- files the site serves ----------------------------------------------------------
def _sync(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` unless identical (keeps mtimes, so rebuilds stay incremental)."""
    if dst.is_file() and dst.read_bytes() == src.read_bytes():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)


def copy_notebooks(srcdir: Path) -> None:
    target = srcdir / "notebooks"
    wanted = {p.name for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")}
    if target.is_dir():
        for old in target.glob("*.ipynb"):
            if old.name not in wanted:
                old.unlink()
    for name in wanted:
        _sync(NOTEBOOKS / name, target / name)


def copy_mathjax(dst: Path) -> None:
    try:
        import mathjax  # the django-static-mathjax wheel: pip install -e '.[site]'
    except ImportError as exc:
        raise RuntimeError("MathJax is missing: pip install -e '.[site]' "
                           "(it comes from the django-static-mathjax wheel)") from exc
    es5 = Path(mathjax.__file__).resolve().parent / "static" / "mathjax" / "es5"
    for rel in MATHJAX_FILES:
        src = es5 / rel
        for f in ([src] if src.is_file() else sorted(src.rglob("*"))):
            if f.is_file():
                _sync(f, dst / "mathjax" / f.relative_to(es5))
    _sync(es5.parent / "LICENSE", dst / "mathjax" / "LICENSE")


def prepare(app, config) -> None:
    """config-inited: notebooks in, models and MathJax exported, static paths added."""
    from lab_utils import web

    srcdir = Path(app.srcdir)
    copy_notebooks(srcdir)
    generated = Path(app.outdir).parent / "web-static"  # site/_build/web-static
    web.export(generated / "models")
    copy_mathjax(generated)
    paths = list(config.html_static_path)
    for extra in (generated, STATIC):
        if extra.is_dir() and str(extra) not in paths:
            paths.append(str(extra))
    config.html_static_path = paths
    formats = dict(config.nb_custom_formats or {})
    formats.setdefault(".ipynb", ("cvae_site.read_notebook", {}, False))
    config.nb_custom_formats = formats


def setup(app):
    app.connect("config-inited", prepare)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}


# ----- for the tests and the benchmark: build, serve -------------------------------------
def build(quiet: bool = True) -> Path:
    """``make site`` without make: (re)build site/_build/html, incrementally; returns it."""
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", *(["-q"] if quiet else []),
           str(SITE), str(HTML)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0 or not (HTML / "index.html").is_file():
        raise RuntimeError(f"the site did not build ({' '.join(cmd)}):\n{proc.stdout}\n{proc.stderr}")
    return HTML


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # no line per request on stderr
        pass


@contextlib.contextmanager
def serve(directory: Path = HTML, handler_class: type = None):
    """Serve ``directory`` on 127.0.0.1 (a free port) in a thread; yields the base URL.

    ``handler_class`` (a ``SimpleHTTPRequestHandler`` subclass) changes what is sent,
    e.g. extra headers for a benchmark; by default a handler that logs nothing."""
    handler = functools.partial(handler_class or _QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
