"""The student notebooks: solutions out, stubs in, outputs cleared, still runnable.

Small synthetic notebooks test the rewriting rules; the real series is then
converted and each student notebook with exercises is executed top to bottom
(quick mode) to show that it runs and says "not implemented yet".
"""
from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from lab_utils import student
from lab_utils.student import BEGIN, END, MarkerError, strip_solutions

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
EXERCISE_NOTEBOOKS = ("01", "02", "03", "04", "05", "06", "07", "08", "09")  # every notebook from 01 on holds an exercise (issue 15)
CHECK_CALL = re.compile(r"checks\.check_\w+\(")


# ---- synthetic notebooks -----------------------------------------------------

SOLVED = f'''# Your turn: write kl(mu, logvar) -> (B,),
# the "closed-form" KL.
# Hint: -0.5 * sum(1 + logvar - mu^2 - exp(logvar)) over dim 1.
def my_kl(mu, logvar):
    {BEGIN}
    inner = 1 + logvar - mu.pow(2) - logvar.exp()
    return -0.5 * inner.sum(dim=1)
    {END}

my_kl = checks.check_kl_divergence(my_kl)'''


def _notebook(path: Path, *sources: str, markdown: str = "# A lesson") -> Path:
    """A small notebook with one markdown cell and code cells carrying fake outputs."""
    cells = [new_markdown_cell(markdown)]
    for i, src in enumerate(sources):
        cell = new_code_cell(src, execution_count=i + 1)
        cell.outputs = [new_output("stream", name="stdout", text="old output\n")]
        cell.metadata["tags"] = ["nbval-ignore-output"] if i else []
        cell.metadata["execution"] = {"iopub.status.busy": "2024-01-01T00:00:00"}
        cells.append(cell)
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    nbformat.write(nb, path)
    return path


def test_a_solution_becomes_one_indented_raise_with_the_your_turn_text():
    new, count, warnings = strip_solutions(SOLVED)
    assert count == 1 and warnings == []
    assert "inner" not in new and BEGIN not in new and END not in new
    stub = ('    raise NotImplementedError("Your turn: write kl(mu, logvar) -> (B,), the '
            '\\"closed-form\\" KL (see the hint above)")')
    assert stub in new.splitlines()
    assert new.splitlines()[:4] == SOLVED.splitlines()[:4]  # prompt and def unchanged
    assert new.endswith("my_kl = checks.check_kl_divergence(my_kl)")
    tree = ast.parse(new)  # still valid Python
    namespace: dict = {}
    exec(compile(ast.Module(body=[tree.body[0]], type_ignores=[]), "cell", "exec"), namespace)
    with pytest.raises(NotImplementedError, match='^Your turn: write kl.*"closed-form" KL'):
        namespace["my_kl"](None, None)


def test_indentation_follows_the_markers_and_several_solutions_in_one_cell():
    source = "\n".join([
        "class Steps:",
        "    def first(self):",
        "        x = 1",
        f"        {BEGIN}",
        "        return x + 1",
        f"        {END}",
        "",
        "def second(a):",
        "    if a:",
        f"        {BEGIN}",
        "        return 2",
        f"        {END}",
        "    return 0",
    ])
    new, count, _ = strip_solutions(source)
    assert count == 2
    lines = new.splitlines()
    assert lines[3] == '        raise NotImplementedError("Your turn: write first (see the hint above)")'
    assert lines[7] == '        raise NotImplementedError("Your turn: write second (see the hint above)")'
    assert "return x + 1" not in new and "return 2" not in new
    assert lines[-1] == "    return 0"
    ast.parse(new)


def test_a_solution_outside_a_function_is_stubbed_with_a_warning():
    new, count, warnings = strip_solutions(f"{BEGIN}\nx = 1\n{END}\nprint(x)", where="nb, cell 3")
    assert count == 1
    assert new.splitlines()[0].startswith("raise NotImplementedError(")
    assert len(warnings) == 1 and "nb, cell 3, line 1" in warnings[0]
    assert "not inside a function" in warnings[0]


@pytest.mark.parametrize("source, message", [
    (f"def f():\n    {BEGIN}\n    return 1", "line 2: '### BEGIN SOLUTION' has no '### END SOLUTION'"),
    (f"def f():\n    return 1\n    {END}", "line 3: '### END SOLUTION' without a '### BEGIN SOLUTION'"),
    (f"def f():\n    {BEGIN}\n    {BEGIN}\n    {END}", "line 3: a second '### BEGIN SOLUTION' before"),
    ("def f():\n    ### Begin Solution\n    return 1\n    ### END SOLUTION",
     "line 2: '### Begin Solution' looks like a solution marker"),
    ("def f():\n    ## END SOLUTION", "line 2: '## END SOLUTION' looks like a solution marker"),
])
def test_unbalanced_or_misspelled_markers_are_refused(source, message):
    with pytest.raises(MarkerError, match=re.escape(f"cell 7, {message}")):
        strip_solutions(source, where="cell 7")


def test_the_command_writes_student_versions_and_copies_the_rest(tmp_path, capsys):
    src = tmp_path / "notebooks"
    src.mkdir()
    lesson = _notebook(src / "01_lesson.ipynb", "import torch", SOLVED, "print(1)")
    plain = _notebook(src / "00_intro.ipynb", "print('no exercise here')")
    out = tmp_path / "student"
    assert student.main([str(plain), str(lesson), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "copied" in printed and "00_intro.ipynb (no exercises)" in printed
    assert "01_lesson.ipynb (1 exercise stubbed, outputs cleared)" in printed
    assert printed.rstrip().endswith(f"2 notebooks, 1 exercises, in {out}/")
    assert sorted(p.name for p in out.iterdir()) == ["00_intro.ipynb", "01_lesson.ipynb"]

    assert (out / "00_intro.ipynb").read_bytes() == plain.read_bytes()  # byte for byte
    before = nbformat.read(lesson, as_version=4)
    after = nbformat.read(out / "01_lesson.ipynb", as_version=4)
    nbformat.validate(after)
    assert after.metadata == before.metadata
    assert len(after.cells) == len(before.cells)
    for old, new in zip(before.cells, after.cells):
        assert new.cell_type == old.cell_type
        if new.cell_type == "code":
            assert new.outputs == [] and new.execution_count is None
            assert "execution" not in new.metadata
            assert new.metadata["tags"] == old.metadata["tags"]
        if BEGIN not in old.source:
            assert new.source == old.source  # everything else unchanged
    assert "raise NotImplementedError(" in after.cells[2].source


def test_an_unbalanced_marker_anywhere_writes_nothing(tmp_path, capsys):
    good = _notebook(tmp_path / "01_good.ipynb", SOLVED)
    bad = _notebook(tmp_path / "02_bad.ipynb", "x = 1", f"def f():\n    {BEGIN}\n    return 1")
    out = tmp_path / "student"
    assert student.main([str(good), str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "error: 02_bad.ipynb, cell 3, line 2: '### BEGIN SOLUTION' has no" in err
    assert "nothing was written" in err
    assert not out.exists()


def test_refuses_to_overwrite_the_solution_notebooks(tmp_path, capsys):
    lesson = _notebook(tmp_path / "01_lesson.ipynb", SOLVED)
    before = lesson.read_bytes()
    assert student.main([str(lesson), "--out", str(tmp_path)]) == 2
    assert "refusing to write into" in capsys.readouterr().err
    assert lesson.read_bytes() == before


def test_rewriting_leaves_no_temporary_files_and_replaces_old_copies(tmp_path):
    lesson = _notebook(tmp_path / "01_lesson.ipynb", SOLVED)
    out = tmp_path / "student"
    out.mkdir()
    (out / "01_lesson.ipynb").write_text("stale")
    student.write_student_notebooks([lesson], out)
    assert [p.name for p in out.iterdir()] == ["01_lesson.ipynb"]
    assert "raise NotImplementedError" in (out / "01_lesson.ipynb").read_text()


def test_student_files_are_readable_by_others_whatever_the_umask(tmp_path):
    """0644 like checkpoints, set before the atomic rename: a lab account can read them."""
    lesson = _notebook(tmp_path / "01_lesson.ipynb", SOLVED)
    plain = _notebook(tmp_path / "00_intro.ipynb", "print(1)")
    os.chmod(plain, 0o600)  # the copy gets 0644, not the source's mode
    out = tmp_path / "class" / "student"
    old = os.umask(0o077)
    try:
        student.write_student_notebooks([plain, lesson], out)
    finally:
        os.umask(old)
    for name in ("00_intro.ipynb", "01_lesson.ipynb"):
        assert (out / name).stat().st_mode & 0o777 == 0o644, name
    for folder in (out, out.parent):  # the folders it created
        assert folder.stat().st_mode & 0o777 == 0o755, folder
    assert sorted(p.name for p in out.iterdir()) == ["00_intro.ipynb", "01_lesson.ipynb"]


def test_the_default_output_is_the_git_ignored_student_folder():
    assert student.default_out() == REPO / "student"
    assert "/student/" in (REPO / ".gitignore").read_text().splitlines()
    assert student.default_notebooks() == sorted(NOTEBOOKS.glob("*.ipynb"))


# ---- the real series ----------------------------------------------------------

def _solution_lines(source: str) -> list[str]:
    """The stripped, non-empty lines between the markers of one cell."""
    lines, inside = [], False
    for line in source.splitlines():
        if line.strip() == BEGIN:
            inside = True
        elif line.strip() == END:
            inside = False
        elif inside and line.strip():
            lines.append(line.strip())
    return lines


def _exercise_notebooks() -> list[Path]:
    return [p for p in sorted(NOTEBOOKS.glob("*.ipynb")) if BEGIN in p.read_text()]


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory):
    """The whole series converted with the command, as an instructor would."""
    out = tmp_path_factory.mktemp("series") / "student"
    assert student.main(["--out", str(out)]) == 0
    return out


def test_the_exercise_notebooks_each_have_an_exercise_and_a_check():
    for prefix in EXERCISE_NOTEBOOKS:
        found = sorted(NOTEBOOKS.glob(f"{prefix}_*.ipynb"))
        assert len(found) == 1, f"expected one notebooks/{prefix}_*.ipynb, found {found}"
        nb = nbformat.read(found[0], as_version=4)
        code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        assert code.count(BEGIN) >= 1, f"{found[0].name} has no exercise"
        assert len(CHECK_CALL.findall(code)) >= 1, f"{found[0].name} has no checks.check_* call"


def test_the_student_series_is_complete_and_leaks_no_solution(student_dir):
    assert sorted(p.name for p in student_dir.iterdir()) == sorted(
        p.name for p in NOTEBOOKS.glob("*.ipynb"))
    for path in _exercise_notebooks():
        solution = nbformat.read(path, as_version=4)
        stub = nbformat.read(student_dir / path.name, as_version=4)
        text = "\n".join(c.source for c in stub.cells)
        assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text
        student_lines = {line.strip() for line in text.splitlines()}
        for cell in solution.cells:
            for line in _solution_lines(cell.source):
                assert line not in student_lines, f"{path.name}: solution line left: {line!r}"
        for cell in stub.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, path.name


def test_every_exercise_function_raises_not_implemented(student_dir):
    for path in _exercise_notebooks():
        solution = nbformat.read(path, as_version=4)
        stub = nbformat.read(student_dir / path.name, as_version=4)
        for old, new in zip(solution.cells, stub.cells):
            if BEGIN not in old.source:
                continue
            tree = ast.parse(new.source)
            functions = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
            assert functions, f"{path.name}: the exercise is not a function"
            namespace: dict = {}
            exec(compile(ast.Module(body=functions, type_ignores=[]), path.name, "exec"), namespace)
            for f in functions:
                n_args = len(f.args.args)
                with pytest.raises(NotImplementedError, match=r"^Your turn: .*\(see the hint above\)$"):
                    namespace[f.name](*([None] * n_args))


@pytest.mark.slow
@pytest.mark.mnist
@pytest.mark.parametrize("name", [p.name for p in _exercise_notebooks()])
def test_a_student_notebook_runs_top_to_bottom(name, student_dir, monkeypatch):
    """Executed in quick mode from student/: no error, one "not implemented yet" per check."""
    from nbclient import NotebookClient

    monkeypatch.setenv("CVAE_LAB_QUICK", "1")
    if not os.environ.get("CVAE_LAB_DATA"):
        monkeypatch.setenv("CVAE_LAB_DATA", str(REPO / "data"))
    nb = nbformat.read(student_dir / name, as_version=4)
    client = NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(student_dir)}})
    client.execute()  # raises CellExecutionError on any error
    printed = "".join(
        out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
        for out in cell.outputs if out.output_type == "stream"
    )
    n_checks = sum(len(CHECK_CALL.findall(c.source)) for c in nb.cells if c.cell_type == "code")
    assert n_checks >= 1
    assert printed.count(": not implemented yet (your function raises NotImplementedError).") == n_checks
    assert printed.count("using the lab_utils reference for the rest of this notebook") == n_checks
    assert "Traceback" not in printed
