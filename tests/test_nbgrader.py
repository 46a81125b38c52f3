"""The nbgrader release: ``python -m lab_utils.student --nbgrader DIR``.

Small synthetic notebooks test the cell metadata; then the real series goes
through nbgrader itself, as an instructor would run it: generate_assignment,
two submissions (the solution notebooks, and the released notebooks unchanged),
autograde, and the gradebook must give full marks to the first and zero points
for every exercise to the second.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from lab_utils import student
from lab_utils.student import ASSIGNMENT, BEGIN, END, MarkerError

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
BIN = Path(sys.executable).parent  # nbgrader runs `alembic` by name: it must be on PATH

EXERCISE = f'''# Your turn: write kl(mu, logvar) -> (B,).
# Hint: look at the closed form of 03.
def my_kl(mu, logvar):
    {BEGIN}
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)
    {END}'''


def _notebook(path: Path, *sources: str) -> Path:
    cells = [new_markdown_cell("# A lesson")]
    for i, src in enumerate(sources):
        cell = new_code_cell(src, execution_count=i + 1)
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="old\n")]
        cells.append(cell)
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    nbformat.write(nb, path)
    return path


def _meta(cell) -> dict:
    return cell.metadata["nbgrader"]


# ---- the cell metadata -----------------------------------------------------------

def test_check_names_come_from_the_calls_not_from_comments():
    source = ("# Hint: checks.check_slant(f) is not called here\n"
              "my_a = checks.check_expand_labels(my_a)  # checks.check_nothing(\n"
              "my_b = checks.check_iwae_bound( my_b)\nmy_a = checks.check_expand_labels(my_a)")
    assert student.check_names(source) == ["expand_labels", "iwae_bound"]


def test_exercise_cells_become_solutions_and_each_check_gets_a_graded_cell(tmp_path):
    path = _notebook(tmp_path / "03_lesson.ipynb", "import torch", EXERCISE,
                     "my_kl = checks.check_kl_divergence(my_kl)",
                     EXERCISE.replace("my_kl", "my_kl2")
                     + "\n\nmy_kl2 = checks.check_center_of_mass(my_kl2)",
                     "print('done')")
    version = student.nbgrader_version(path)
    assert version.graded == ["kl_divergence", "center_of_mass"]
    assert version.solutions == ["kl_divergence-solution", "center_of_mass-solution"]
    nb = nbformat.reads(version.text, as_version=4)
    nbformat.validate(nb)
    kinds = [("solution" if _meta(c)["solution"] else "grade" if _meta(c)["grade"] else "locked")
             for c in nb.cells]
    #          md        import    exercise    check     graded   exercise+check graded  print
    assert kinds == ["locked", "locked", "solution", "locked", "grade", "solution", "grade", "locked"]
    ids = [_meta(c)["grade_id"] for c in nb.cells]
    assert len(set(ids)) == len(ids)
    for cell in nb.cells:
        meta = _meta(cell)
        assert meta["schema_version"] == 3 and meta["task"] is False
        assert meta["locked"] is (not meta["solution"])
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
    graded = [c for c in nb.cells if _meta(c)["grade"]]
    assert [_meta(c)["points"] for c in graded] == [1, 1]
    assert graded[0].source.endswith('from lab_utils import checks\nchecks.grade("kl_divergence")')
    assert 'checks.grade("center_of_mass")' in graded[1].source
    assert nb.cells[2].source == EXERCISE  # nbgrader strips the solution, not us
    assert [c.source for c in nb.cells if not _meta(c)["grade"]] == [
        c.source for c in nbformat.read(path, as_version=4).cells]


def test_notebooks_without_exercises_are_read_only_throughout(tmp_path):
    version = student.nbgrader_version(_notebook(tmp_path / "00_intro.ipynb", "print(1)"))
    nb = nbformat.reads(version.text, as_version=4)
    assert version.graded == [] and version.solutions == []
    assert all(_meta(c)["locked"] and not _meta(c)["solution"] for c in nb.cells)


def test_the_course_folder_and_its_permissions(tmp_path, capsys):
    src = tmp_path / "notebooks"
    src.mkdir()
    lesson = _notebook(src / "01_lesson.ipynb", EXERCISE + "\nmy_kl = checks.check_kl_divergence(my_kl)")
    plain = _notebook(src / "00_intro.ipynb", "print(1)")
    root = tmp_path / "course" / "fall"
    old = os.umask(0o077)  # a strict umask must not make the course unreadable
    try:
        assert student.main(["--nbgrader", str(root), str(plain), str(lesson)]) == 0
    finally:
        os.umask(old)
    printed = capsys.readouterr().out
    assert "01_lesson.ipynb (graded: kl_divergence)" in printed
    assert "00_intro.ipynb (no exercises: read-only)" in printed
    assert f"nbgrader generate_assignment {ASSIGNMENT}" in printed
    folder = root / "source" / ASSIGNMENT
    assert sorted(p.name for p in folder.iterdir()) == ["00_intro.ipynb", "01_lesson.ipynb"]
    config = (root / "nbgrader_config.py").read_text()
    assert f'c.CourseDirectory.course_id = "{ASSIGNMENT}"' in config
    assert "c.CourseDirectory.root = HERE" in config and "gradebook.db" in config
    assert "c.Execute.timeout = 3600" in config
    compile(config, "nbgrader_config.py", "exec")
    for path in [root / "nbgrader_config.py", *folder.iterdir()]:
        assert path.stat().st_mode & 0o777 == 0o644, path
    for path in [root, root.parent, root / "source", folder]:
        assert path.stat().st_mode & 0o777 == 0o755, path


def test_a_bad_marker_writes_no_course(tmp_path, capsys):
    good = _notebook(tmp_path / "01_good.ipynb", EXERCISE)
    bad = _notebook(tmp_path / "02_bad.ipynb", f"def f():\n    {BEGIN}\n    return 1")
    with pytest.raises(MarkerError):
        student.nbgrader_version(bad)
    assert student.main(["--nbgrader", str(tmp_path / "course"), str(good), str(bad)]) == 2
    assert "nothing was written" in capsys.readouterr().err
    assert not (tmp_path / "course").exists()


def test_out_and_nbgrader_are_not_given_together(tmp_path):
    with pytest.raises(SystemExit):
        student.main(["--out", str(tmp_path / "a"), "--nbgrader", str(tmp_path / "b")])


def test_every_check_of_the_series_is_graded():
    """The generator finds the exercises itself: a new check in any notebook is graded."""
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        version = student.nbgrader_version(path)
        nb = nbformat.read(path, as_version=4)
        calls = [n for c in nb.cells if c.cell_type == "code" for n in student.check_names(c.source)]
        assert version.graded == calls, path.name
        assert len(version.solutions) == sum(
            c.cell_type == "code" and BEGIN in c.source for c in nb.cells), path.name
        assert not [w for w in version.warnings if "not graded" in w], version.warnings


# ---- nbgrader itself ---------------------------------------------------------------

def _nbgrader(root: Path, *args: str, timeout: float = 1800) -> str:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    env.setdefault("CVAE_LAB_DATA", str(REPO / "data"))
    done = subprocess.run([str(BIN / "nbgrader"), *args], cwd=root, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    assert done.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{done.stdout[-6000:]}"
    return done.stdout


@pytest.mark.slow
@pytest.mark.mnist
def test_nbgrader_gives_full_marks_to_the_solutions_and_zero_to_the_release(tmp_path):
    """The whole flow; only the notebooks with exercises are submitted (quick mode)."""
    if not (BIN / "nbgrader").exists():
        pytest.fail("nbgrader is not installed: pip install -e .[grading] (part of .[dev])")
    from nbgrader.api import Gradebook

    root = tmp_path / "course"
    done = subprocess.run([sys.executable, "-m", "lab_utils.student", "--nbgrader", str(root)],
                          cwd=tmp_path, text=True, capture_output=True)
    assert done.returncode == 0, done.stderr
    start = time.perf_counter()
    _nbgrader(root, "generate_assignment", ASSIGNMENT)
    source, release = root / "source" / ASSIGNMENT, root / "release" / ASSIGNMENT
    assert sorted(p.name for p in release.glob("*.ipynb")) == sorted(
        p.name for p in NOTEBOOKS.glob("*.ipynb"))  # the whole series is released

    expected = {}  # notebook -> exercise names, from the series itself
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        names = student.nbgrader_version(path).graded
        if names:
            expected[path.stem] = names
    assert len(expected) >= 5, expected  # 01-05 at least
    for stem in expected:
        text = (release / f"{stem}.ipynb").read_text()
        assert BEGIN not in text and END not in text, f"{stem}: a solution left in the release"
        for name in ("solutions", "release"):
            folder = root / "submitted" / name / ASSIGNMENT
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(source / f"{stem}.ipynb" if name == "solutions" else release / f"{stem}.ipynb",
                        folder / f"{stem}.ipynb")

    log = _nbgrader(root, "autograde", ASSIGNMENT)
    assert "CellTimeoutError" not in log
    seconds = time.perf_counter() - start

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}", course_id=ASSIGNMENT) as gb:
        for who in ("solutions", "release"):
            for stem, names in expected.items():
                submission = gb.find_submission_notebook(stem, ASSIGNMENT, who)
                grades = {g.cell.name: (g.score, g.max_score) for g in submission.grades}
                assert sorted(grades) == sorted(f"{n}-grade" for n in names), (who, stem)
                for cell, (score, max_score) in grades.items():
                    assert max_score == student.POINTS
                    if who == "solutions":
                        assert score == max_score, f"{stem}: {cell} not full marks for the solution"
                    else:
                        assert score == 0, f"{stem}: {cell} gave points to the unchanged release"
        total = gb.find_submission(ASSIGNMENT, "solutions").score
        assert total == student.POINTS * sum(len(n) for n in expected.values())
        assert gb.find_submission(ASSIGNMENT, "release").score == 0
    print(f"nbgrader flow: {len(expected)} notebooks, {total:g} points, {seconds:.0f} s")
