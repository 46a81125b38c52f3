"""Install files: pyproject.toml is the single source of truth; environment.yml,
the Makefile, the README and .ci/run must agree with it."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import pip._vendor.tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_installs_the_project_and_nothing_else():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["name"] == "cvae-lab"
    deps = env["dependencies"]
    pip_sections = [d["pip"] for d in deps if isinstance(d, dict)]
    assert pip_sections == [["-e .[dev]"]], "environment.yml must install exactly `-e .[dev]` with pip"
    conda_pkgs = [d for d in deps if isinstance(d, str)]
    names = {re.split(r"[<>=! ]", d)[0] for d in conda_pkgs}
    # Only Python and pip come from conda; every library comes from pyproject.toml.
    assert names == {"python", "pip"}, f"packages listed outside pyproject.toml: {names - {'python', 'pip'}}"
    python = next(d for d in conda_pkgs if d.startswith("python"))
    assert python.replace("python", "") == pyproject()["project"]["requires-python"]


def test_pyproject_has_the_runtime_and_dev_packages():
    project = pyproject()["project"]
    names = {re.split(r"[<>=!\[ ]", d)[0].lower() for d in project["dependencies"]}
    assert {"torch", "torchvision", "jupyterlab", "ipywidgets", "matplotlib", "tqdm"} <= names
    dev = {re.split(r"[<>=!\[ ]", d)[0].lower() for d in project["optional-dependencies"]["dev"]}
    assert {"pytest", "nbval", "playwright"} <= dev
    # Lower bounds only: never pin (==) or cap (<), so torch 2.14.1 keeps installing.
    for spec in project["dependencies"] + project["optional-dependencies"]["dev"]:
        assert "==" not in spec and "<" not in spec, spec


def test_readme_commands_are_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    assert "make lab" in readme and "make test" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.M), ".ci/run must run the README's `make test`"
    makefile = (ROOT / "Makefile").read_text()
    test_recipe = makefile.split("\ntest:")[1].split("\n\n")[0]
    assert "pytest --nbval" in test_recipe and "pip install -e '.[dev]'" in makefile


def test_shipped_weights_are_package_data():
    package_data = pyproject()["tool"]["setuptools"]["package-data"]["lab_utils"]
    assert "pretrained/*.pt" in package_data
    assert (ROOT / "lab_utils" / "pretrained" / "lab.pt").is_file()


def test_the_kernels_source_is_package_data():
    # lab_utils.kernels compiles kernels.cpp on first use: an installed wheel needs the file
    assert "kernels.cpp" in pyproject()["tool"]["setuptools"]["package-data"]["lab_utils"]
    assert (ROOT / "lab_utils" / "kernels.cpp").is_file()


def test_the_drawing_pads_front_end_is_package_data():
    # the pad's JavaScript and CSS are files (reused by the static site), not strings
    assert "static/*" in pyproject()["tool"]["setuptools"]["package-data"]["lab_utils"]
    assert (ROOT / "lab_utils" / "static" / "drawing_pad.js").is_file()
    assert (ROOT / "lab_utils" / "static" / "drawing_pad.css").is_file()


def _make_lab(tmp_path, *overrides):
    """Run the Makefile's real `lab` recipe with a stand-in `jupyter` that only
    prints its arguments; returns make's output."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    fake = venv / "bin" / "jupyter"
    fake.write_text('#!/bin/sh\necho "JUPYTER $*"\n')
    fake.chmod(0o755)
    done = subprocess.run(
        ["make", "--no-print-directory", "-o", f"{venv}/.installed", "lab", f"VENV={venv}", *overrides],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    return done.stdout


def _opened(output):
    (line,) = [line for line in output.splitlines() if line.startswith("JUPYTER ")]
    return line.split()[-1]


def test_make_lab_opens_a_git_ignored_copy_never_the_reference_notebooks(tmp_path):
    # The default folder, without running the recipe (make -n): not notebooks/, and git-ignored.
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    dry = subprocess.run(["make", "--no-print-directory", "-n", "-o", ".venv/.installed", "lab"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    (launch,) = [line for line in dry.splitlines() if "jupyter lab" in line]
    folder = launch.split()[-1].rstrip("/")
    assert folder and Path(folder).parts[0] != "notebooks", launch
    if shutil.which("git") and (ROOT / ".git").exists():
        ignored = subprocess.run(["git", "check-ignore", "-q", f"{folder}/00_setup_and_data.ipynb"], cwd=ROOT)
        assert ignored.returncode == 0, f"{folder}/ must be git-ignored"
    else:  # pragma: no cover - a tarball without git
        assert f"/{folder}/" in (ROOT / ".gitignore").read_text().split()

    # The recipe itself: copies the notebooks there, then never overwrites a student's copy.
    work = tmp_path / "work"
    out = _make_lab(tmp_path, f"WORK={work}")
    assert Path(_opened(out).rstrip("/")) == work
    reference = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert sorted(p.name for p in work.glob("*.ipynb")) == reference
    edited = work / reference[0]
    edited.write_text("my own edits")
    (work / reference[-1]).unlink()
    out = _make_lab(tmp_path, f"WORK={work}")
    assert edited.read_text() == "my own edits"
    assert (work / reference[-1]).is_file() and f"copied notebooks/{reference[-1]}" in out
    # JupyterLab refuses to run as root without --allow-root.
    assert ("--allow-root" in out) == (os.geteuid() == 0)
