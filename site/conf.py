"""Sphinx configuration of the CVAE Lab website: ``make site`` builds it.

The notebooks are rendered from their saved outputs (never executed). The
widget outputs of 06 and 09 become the page's own explorer and drawing pad
(``_ext/cvae_site.py``), which run the shipped models in the browser
(``_static/cvae_pages.js``). Everything the pages load comes from the site
itself: MathJax from the ``django-static-mathjax`` wheel, the models exported
by ``python -m lab_utils.web``, no widget manager from a CDN.
"""
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(REPO))

project = "CVAE Lab"
author = "CVAE Lab"
copyright = "CVAE Lab authors"

extensions = ["myst_nb", "cvae_site"]
root_doc = "index"
exclude_patterns = ["_build", "**.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]

# Render the saved outputs; never run a notebook.
nb_execution_mode = "off"
# No ipywidgets HTML manager or RequireJS from a CDN: the pages bring their own widgets.
nb_ipywidgets_js = {}
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath"]

html_theme = "sphinx_book_theme"
html_title = "CVAE Lab"
html_theme_options = {
    "show_toc_level": 2,
    "use_download_button": False,
    "use_fullscreen_button": False,
    "use_repository_button": False,
}
html_static_path = ["_static"]       # + the built models, MathJax and lab_utils/static (cvae_site)
html_css_files = ["drawing_pad.css", "cvae_pages.css"]  # drawing_pad.css: lab_utils/static
html_js_files = [("cvae_pages.js", {"type": "module"})]
html_last_updated_fmt = None
html_copy_source = False             # the notebooks' JSON would double the site's size
html_show_sourcelink = False

# MathJax from the site itself (copied by cvae_site from the django-static-mathjax wheel).
mathjax_path = "mathjax/tex-chtml-full.js"
