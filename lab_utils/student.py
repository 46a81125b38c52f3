"""Write the student version of the series: solutions out, outputs cleared.

    python -m lab_utils.student                     # notebooks/*.ipynb -> student/
    python -m lab_utils.student --out /tmp/class notebooks/03_reparameterization.ipynb

An exercise is a code cell whose solution sits between two marker lines::

    def my_kl_divergence(mu, logvar):
        ### BEGIN SOLUTION
        return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)
        ### END SOLUTION

In the student copy the markers and everything between them become one line,
indented like the markers: ``raise NotImplementedError("Your turn: ...")``,
its text taken from the cell's ``# Your turn: ...`` comment. The check cell
after it (``lab_utils.checks``) then prints "not implemented yet" and hands
the reference to later cells, so a student notebook runs top to bottom.

Notebooks with exercises get their outputs and execution counts cleared;
notebooks without exercises are copied byte for byte, so ``student/`` holds
the whole series (it sits beside ``notebooks/``, so relative paths still
work). Nothing is written if any marker is unbalanced; each file is written
atomically and readable by others (0644, whatever the umask). Used by
instructors (``make student``).

The same markers make the nbgrader release (``--nbgrader DIR``, see
:func:`write_nbgrader_course`): each exercise cell becomes an nbgrader solution
cell, an autograded cell calling ``checks.grade("<exercise>")`` follows each
check, and every other cell is read-only. nbgrader itself is only needed to run
the course (``pip install -e .[grading]``), not to write it.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

from .atomic import atomic_write  # torch-free, like this whole module

BEGIN = "### BEGIN SOLUTION"  # nbgrader's own markers: one source serves both releases
END = "### END SOLUTION"
YOUR_TURN = "# Your turn:"
REPO_ROOT = Path(__file__).resolve().parent.parent
FILE_MODE = 0o644  # student files: readable by others, like checkpoints
DIR_MODE = 0o755

_MARKER_LIKE = re.compile(r"^\s*#.*\b(BEGIN|END)\s+SOLUTION\b", re.IGNORECASE)
_DEF = re.compile(r"^(\s*)(?:async\s+)?def\s+(\w+)\s*\(")


class MarkerError(ValueError):
    """Solution markers that do not pair up: the student copy would leak or break."""


@dataclass
class StudentNotebook:
    """One notebook of the student series, ready to be written."""

    source: Path
    name: str
    exercises: int        # marked solutions replaced by a stub
    text: str | None      # the new notebook; None: copy the source unchanged
    warnings: list[str]


def _stub_message(lines: list[str], begin: int) -> str:
    """The text of the stub's NotImplementedError: the cell's "Your turn" line.

    Falls back to the name of the function the solution sits in.
    """
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith(YOUR_TURN):
            words = [stripped[len(YOUR_TURN):].strip()]
            for more in lines[i + 1:]:  # the task may go on over further comment lines
                text = more.strip()[1:].strip() if more.strip().startswith("#") else ""
                if not text or text.lower().startswith("hint") or text.startswith("#"):
                    break
                words.append(text)
            task = " ".join(w for w in words if w).rstrip(".")
            if task:
                return f"Your turn: {task} (see the hint above)"
    indent = len(lines[begin]) - len(lines[begin].lstrip())
    for line in reversed(lines[:begin]):
        m = _DEF.match(line)
        if m and len(m.group(1)) < indent:
            return f"Your turn: write {m.group(2)} (see the hint above)"
    return "Your turn: write this part (see the hint above)"


def _python_string(text: str) -> str:
    """``text`` as a double-quoted Python literal (non-ASCII kept readable)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def strip_solutions(source: str, where: str = "cell") -> tuple[str, int, list[str]]:
    """Replace each marked solution in one cell's ``source`` with a stub.

    Returns the new source, how many solutions were replaced, and warnings.
    Raises :class:`MarkerError` (naming ``where`` and the line) when markers
    are malformed, nested or unpaired.
    """
    lines = source.split("\n")
    out: list[str] = []
    warnings: list[str] = []
    begin: int | None = None
    count = 0
    for i, line in enumerate(lines):
        stripped = line.strip()
        if _MARKER_LIKE.match(line) and stripped not in (BEGIN, END):
            raise MarkerError(
                f"{where}, line {i + 1}: {stripped!r} looks like a solution marker but is not "
                f"exactly {BEGIN!r} or {END!r}; fix its spelling"
            )
        if stripped == BEGIN:
            if begin is not None:
                raise MarkerError(
                    f"{where}, line {i + 1}: a second {BEGIN!r} before the {END!r} of the one "
                    f"on line {begin + 1}; close the first solution"
                )
            begin = i
            continue
        if stripped == END:
            if begin is None:
                raise MarkerError(
                    f"{where}, line {i + 1}: {END!r} without a {BEGIN!r} before it; "
                    f"add the BEGIN marker or remove this line"
                )
            indent = lines[begin][: len(lines[begin]) - len(lines[begin].lstrip())]
            if not indent:
                warnings.append(
                    f"{where}, line {begin + 1}: the solution is not inside a function, so the "
                    f"student notebook stops at this cell; put it in a function body"
                )
            out.append(f"{indent}raise NotImplementedError({_python_string(_stub_message(lines, begin))})")
            begin = None
            count += 1
            continue
        if begin is None:
            out.append(line)
    if begin is not None:
        raise MarkerError(
            f"{where}, line {begin + 1}: {BEGIN!r} has no {END!r} after it; "
            f"add the END marker where the solution ends"
        )
    return "\n".join(out), count, warnings


def student_version(path: str | os.PathLike) -> StudentNotebook:
    """The student version of one notebook, in memory (nothing is written)."""
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    total, warnings = 0, []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        new_source, count, cell_warnings = strip_solutions(
            cell.source, where=f"{path.name}, cell {index + 1}"
        )
        cell.source = new_source
        total += count
        warnings += cell_warnings
    if total == 0:
        return StudentNotebook(path, path.name, 0, None, warnings)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
            cell.metadata.pop("execution", None)  # timings recorded by nbclient
    nb.metadata.pop("widgets", None)  # saved widget state belongs to the cleared outputs
    text = nbformat.writes(nb)
    return StudentNotebook(path, path.name, total, text if text.endswith("\n") else text + "\n",
                           warnings)


def _notebook_paths(paths: list[str | os.PathLike]) -> list[Path]:
    """``paths`` as Paths, each an existing ``.ipynb`` file with a name no other
    has (the notebooks are written into one folder by name), or a clear error."""
    sources = [Path(p) for p in paths]
    for p in sources:
        if not p.is_file():
            raise FileNotFoundError(f"no notebook at {p}")
        if p.suffix != ".ipynb":
            raise ValueError(f"{p} is not a notebook (.ipynb)")
    names = [p.name for p in sources]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"two notebooks would both be written as {', '.join(duplicates)}")
    return sources


def write_student_notebooks(
    paths: list[str | os.PathLike], out: str | os.PathLike
) -> list[tuple[StudentNotebook, Path]]:
    """Write the student version of each notebook in ``paths`` into ``out``.

    Every notebook is read and checked first, so an unbalanced marker anywhere
    writes nothing. Returns ``(notebook, written path)`` pairs.
    """
    out = Path(out)
    sources = _notebook_paths(paths)
    for p in sources:
        if p.resolve().parent == out.resolve():
            raise ValueError(
                f"refusing to write into {out}: it holds the solution notebook {p.name}; "
                f"choose another --out"
            )
    versions = [student_version(p) for p in sources]  # MarkerError before any write
    _make_dirs(out)
    written = []
    for version in versions:
        target = out / version.name
        data = version.source.read_bytes() if version.text is None else version.text.encode("utf-8")
        _write_file(target, data)
        written.append((version, target))
    return written


def _make_dirs(folder: Path) -> None:
    """Create ``folder`` and its missing parents as 0755 (the umask may be stricter).

    Folders that already exist keep their mode: they are the instructor's.
    """
    missing = []
    for parent in [folder, *folder.parents]:
        if parent.exists():
            break
        missing.append(parent)
    folder.mkdir(parents=True, exist_ok=True)
    for created in missing:
        os.chmod(created, DIR_MODE)


def _write_file(target: Path, data: bytes) -> None:
    """Write ``data`` atomically as a 0644 file: students and graders must read it."""
    atomic_write(target, lambda f: f.write(data), mode=FILE_MODE)


# ---- the nbgrader release ------------------------------------------------------

ASSIGNMENT = "cvae-lab"  # the nbgrader course id and assignment name
NBGRADER_SCHEMA = 3      # nbgrader's cell-metadata schema (nbgrader 0.6 and later)
POINTS = 1               # per exercise: the check passed, or it did not
_CHECK_CALL = re.compile(r"\bchecks\.check_(\w+)\s*\(")

GRADE_CELL = '''\
# Graded by nbgrader ({points} point{plural}): did the check of {name} above pass?
# Read-only. It looks at the check's verdict, so run the cells above first.
from lab_utils import checks
checks.grade({name_literal})'''

NBGRADER_CONFIG = '''\
"""nbgrader configuration of the CVAE Lab course (written by `python -m lab_utils.student --nbgrader`).

Run every nbgrader command from this folder, in the environment where CVAE Lab is
installed (`pip install -e .[grading]` in the project folder), with `CVAE_LAB_DATA`
set as for the notebooks themselves:

    nbgrader generate_assignment {assignment}   # source/{assignment}/ -> release/{assignment}/
    nbgrader autograde {assignment}             # submitted/<student>/{assignment}/ -> the gradebook
"""
import os

c = get_config()  # noqa: F821 (nbgrader defines get_config when it reads this file)

HERE = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.course_id = "{assignment}"
c.CourseDirectory.root = HERE
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(HERE, "gradebook.db")

# Per cell: 05_training's full run trains 10 epochs in one cell (about 6 minutes on
# two CPU cores, longer on a slow laptop).
c.Execute.timeout = 3600

# A grade is the verdict of a check (`checks.grade`), which does not depend on how long
# the notebooks train, so the kernels nbgrader starts run in quick mode
# (CVAE_LAB_QUICK=1: 05 trains one short epoch): a submission is graded in minutes.
# Only the kernels of nbgrader's executor get it, not the Jupyter server's. Start
# nbgrader with CVAE_LAB_QUICK=0 for full runs (the feedback then shows them).
c.Execute.extra_arguments = [
    "--HistoryManager.hist_file=:memory:",  # nbgrader's default for Python kernels
    "--IPKernelApp.exec_lines=import os; os.environ.setdefault('CVAE_LAB_QUICK', '1')",
]
'''


@dataclass
class NbgraderNotebook:
    """One notebook of the nbgrader source assignment, ready to be written."""

    source: Path
    name: str
    solutions: list[str]  # grade_ids of the solution cells
    graded: list[str]     # exercise names with an autograded cell, in order
    text: str
    warnings: list[str]


def check_names(source: str) -> list[str]:
    """The exercises whose check a cell calls (``checks.check_<name>(``), in order.

    Comment lines are ignored, so a hint that mentions a check is not a check.
    """
    names: list[str] = []
    for line in source.split("\n"):
        code = line.split("#", 1)[0]
        for name in _CHECK_CALL.findall(code):
            if name not in names:
                names.append(name)
    return names


def _has_solution(source: str) -> bool:
    return any(line.strip() == BEGIN for line in source.split("\n"))


def _nbgrader_metadata(grade_id: str, *, solution: bool = False, grade: bool = False,
                       points: int | None = None) -> dict:
    """nbgrader's cell metadata (schema 3): solution cells open, every other cell locked."""
    meta = {"grade": grade, "grade_id": grade_id, "locked": not solution,
            "schema_version": NBGRADER_SCHEMA, "solution": solution, "task": False}
    if grade:
        meta["points"] = points
    return meta


def nbgrader_version(path: str | os.PathLike, points: int = POINTS) -> NbgraderNotebook:
    """The nbgrader source version of one notebook, in memory (nothing is written).

    A code cell with solution markers becomes a solution cell (its grade_id named
    after the check that follows it); after each cell that calls
    ``checks.check_<name>(...)`` comes an autograded, read-only cell with ``points``
    that calls ``checks.grade("<name>")``; every other cell is read-only. Outputs
    are cleared (nbgrader clears them in the release anyway). The markers are
    validated as for the student copy, so a notebook that breaks one breaks both.
    """
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    warnings: list[str] = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":  # raises MarkerError like the student copy
            warnings += strip_solutions(cell.source, where=f"{path.name}, cell {index + 1}")[2]

    used: set[str] = set()

    def unique(base: str) -> str:
        grade_id, n = base, 2
        while grade_id in used:
            grade_id, n = f"{base}-{n}", n + 1
        used.add(grade_id)
        return grade_id

    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    cells, solutions, graded = [], [], []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
            cell.metadata.pop("execution", None)
        if cell.cell_type == "code" and _has_solution(cell.source):
            # the exercise's name: the first check called from here to the next exercise
            name = None
            for j in (j for j in code if j >= index):
                if j > index and _has_solution(nb.cells[j].source):
                    break
                found = check_names(nb.cells[j].source)
                if found:
                    name = found[0]
                    break
            grade_id = unique(f"{name}-solution" if name else f"solution-cell-{index + 1}")
            cell.metadata["nbgrader"] = _nbgrader_metadata(grade_id, solution=True)
            solutions.append(grade_id)
            if name is None:
                warnings.append(f"{path.name}, cell {index + 1}: an exercise without a "
                                f"checks.check_*(...) call after it is not graded")
        else:
            cell.metadata["nbgrader"] = _nbgrader_metadata(unique(f"locked-cell-{index + 1}"))
        cells.append(cell)
        if cell.cell_type != "code":
            continue
        for name in check_names(cell.source):
            test = nbformat.v4.new_code_cell(GRADE_CELL.format(
                name=name, name_literal=_python_string(name), points=points,
                plural="s" if points != 1 else ""))
            test.metadata["nbgrader"] = _nbgrader_metadata(
                unique(f"{name}-grade"), grade=True, points=points)
            cells.append(test)
            graded.append(name)
    nb.cells = cells
    nb.metadata.pop("widgets", None)  # saved widget state belongs to the cleared outputs
    text = nbformat.writes(nb)
    return NbgraderNotebook(path, path.name, solutions, graded,
                            text if text.endswith("\n") else text + "\n", warnings)


def write_nbgrader_course(
    paths: list[str | os.PathLike], root: str | os.PathLike, points: int = POINTS
) -> tuple[Path, list[tuple[NbgraderNotebook, Path]]]:
    """Write an nbgrader course folder for the series into ``root``.

    ``root/nbgrader_config.py`` and ``root/source/cvae-lab/*.ipynb`` (every notebook,
    those without exercises entirely read-only, so the assignment holds the whole
    series). Every notebook is converted first: a bad marker anywhere writes
    nothing. A gradebook or release already in ``root`` is left alone. Returns the
    config's path and ``(notebook, written path)`` pairs.
    """
    root = Path(root)
    sources = _notebook_paths(paths)
    folder = root / "source" / ASSIGNMENT
    for p in sources:
        if p.resolve().parent == folder.resolve():
            raise ValueError(f"refusing to write into {folder}: {p.name} is read from there")
    versions = [nbgrader_version(p, points) for p in sources]  # MarkerError before any write
    _make_dirs(folder)
    config = root / "nbgrader_config.py"
    _write_file(config, NBGRADER_CONFIG.format(assignment=ASSIGNMENT).encode("utf-8"))
    written = []
    for version in versions:
        target = folder / version.name
        _write_file(target, version.text.encode("utf-8"))
        written.append((version, target))
    return config, written


def _main_nbgrader(paths: list[Path], root: Path) -> int:
    try:
        config, written = write_nbgrader_course(paths, root)
    except (MarkerError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        print("nothing was written.", file=sys.stderr)
        return 2
    folder = root / "source" / ASSIGNMENT
    stale = sorted(p.name for p in folder.glob("*.ipynb") if p.name not in {v.name for v, _ in written})
    graded = 0
    for version, target in written:
        for warning in version.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        if version.graded:
            graded += len(version.graded)
            print(f"wrote  {_shown(target)} (graded: {', '.join(version.graded)})")
        else:
            print(f"wrote  {_shown(target)} (no exercises: read-only)")
    for name in stale:
        print(f"warning: {_shown(folder / name)} is not in the series any more; delete it, "
              f"or nbgrader will release it too", file=sys.stderr)
    print(f"wrote  {_shown(config)}")
    print(f"{len(written)} notebooks, {graded} graded exercises ({graded * POINTS} points). "
          f"Next, in {_shown(root)}/: nbgrader generate_assignment {ASSIGNMENT}")
    return 0


def default_notebooks() -> list[Path]:
    """The series in order: ``notebooks/NN_*.ipynb`` of this repository (a scratch
    copy such as ``_tmp.ipynb`` or ``Untitled.ipynb`` is not part of the series)."""
    folder = REPO_ROOT / "notebooks"
    if not folder.is_dir():
        folder = Path.cwd() / "notebooks"
    return sorted(folder.glob("[0-9][0-9]_*.ipynb"))


def default_out() -> Path:
    """``student/`` beside ``notebooks/`` (git-ignored), so relative paths still work."""
    return (REPO_ROOT if (REPO_ROOT / "notebooks").is_dir() else Path.cwd()) / "student"


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m lab_utils.student",
        description="Write student notebooks: code between '### BEGIN SOLUTION' and "
                    "'### END SOLUTION' becomes a NotImplementedError stub, outputs are "
                    "cleared; notebooks without exercises are copied unchanged.",
    )
    p.add_argument("notebooks", nargs="*", help="notebooks to convert (default: notebooks/*.ipynb)")
    p.add_argument("--out", default=None, help="output folder (default: student/ beside notebooks/)")
    p.add_argument("--nbgrader", metavar="DIR", default=None,
                   help="instead, write an nbgrader course folder into DIR: nbgrader_config.py "
                        f"and source/{ASSIGNMENT}/ (solution, autograded and read-only cells)")
    args = p.parse_args(argv)
    if args.nbgrader and args.out:
        p.error("--out and --nbgrader each name the output folder: give one of them")
    paths = [Path(n) for n in args.notebooks] or default_notebooks()
    if not paths:
        print("error: no notebooks found; pass their paths", file=sys.stderr)
        return 2
    if args.nbgrader:
        return _main_nbgrader(paths, Path(args.nbgrader))
    out = Path(args.out) if args.out else default_out()
    try:
        written = write_student_notebooks(paths, out)
    except (MarkerError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        print("nothing was written.", file=sys.stderr)
        return 2
    exercises = 0
    for version, target in written:
        for warning in version.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        if version.text is None:
            print(f"copied {_shown(target)} (no exercises)")
        else:
            exercises += version.exercises
            plural = "s" if version.exercises != 1 else ""
            print(f"wrote  {_shown(target)} ({version.exercises} exercise{plural} stubbed, "
                  f"outputs cleared)")
    print(f"{len(written)} notebooks, {exercises} exercises, in {_shown(out)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
