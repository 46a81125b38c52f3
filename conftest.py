"""Before any test runs: is MNIST there?

Most tests and notebooks read the real MNIST test digits. Without the files,
each of them would fail on its own (well over a hundred failures, thousands of
lines of tracebacks). Instead, when the selected tests need MNIST and it is not
in the data root, this tries the download once (torchvision fetches it when the
machine is online) and otherwise stops the run with one message: the files, the
folder, ``CVAE_LAB_DATA``.

A test needs MNIST when it uses the ``mnist_test`` or ``small_batch`` fixture
(``tests/conftest.py``), carries the ``mnist`` marker, or is a cell of a
notebook that calls ``load_mnist(``.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

MNIST_FIXTURES = {"mnist_test", "small_batch"}
# pytest's exit status for "the environment is not set up" (usage error).
EXIT_NO_DATA = pytest.ExitCode.USAGE_ERROR


@functools.lru_cache(maxsize=None)
def notebook_needs_mnist(path: Path) -> bool:
    """Whether a notebook (or the student copy of one) calls ``load_mnist(``."""
    try:
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    except (OSError, ValueError, KeyError):
        return False
    return any(
        "load_mnist(" in "".join(cell.get("source", ""))
        for cell in cells if cell.get("cell_type") == "code"
    )


def needs_mnist(item: pytest.Item) -> bool:
    if item.get_closest_marker("mnist") is not None:
        return True
    if MNIST_FIXTURES & set(getattr(item, "fixturenames", ())):
        return True
    path = Path(str(item.path))
    return path.suffix == ".ipynb" and notebook_needs_mnist(path)


def no_mnist_message(n_tests: int, n_selected: int, cause: str | None) -> str:
    from lab_utils.data import DATA_ENV, RAW_FILES, data_root

    folder = data_root() / "MNIST" / "raw"
    tried = f"\n  The download failed here: {cause}" if cause else ""
    return (
        f"MNIST not found: {n_tests} of the {n_selected} selected tests need it, "
        f"so none were run.\n"
        f"  Expected the files {', '.join(RAW_FILES)} (gzipped or not)\n"
        f"  in the folder {folder}/\n"
        f"  Put them there, or point ${DATA_ENV} at the folder that holds MNIST/raw/:\n"
        f"      export {DATA_ENV}=/path/to/data   # with /path/to/data/MNIST/raw/<the four files>\n"
        f"  On a machine with internet access they are downloaded there automatically."
        f"{tried}"
    )


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items) -> None:
    if config.option.collectonly:
        return
    needing = [item for item in items if needs_mnist(item)]
    if not needing:
        return
    from lab_utils.data import DataNotFoundError, load_mnist, missing_files

    if not missing_files():
        return
    cause = None
    try:
        for split in ("train", "test"):
            load_mnist(split)  # online: torchvision downloads the four files now
    except DataNotFoundError as err:
        cause = err.download_error
    if not missing_files():
        return
    message = no_mnist_message(len(needing), len(items), cause)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("")
        for line in message.splitlines():
            reporter.write_line(line, red=line.startswith("MNIST"), bold=True)
    pytest.exit("MNIST not found (see the message above)", returncode=EXIT_NO_DATA)
