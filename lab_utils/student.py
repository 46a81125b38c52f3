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
atomically. Used by instructors (``make student``).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

from .atomic import atomic_write  # torch-free, like this whole module

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
YOUR_TURN = "# Your turn:"
REPO_ROOT = Path(__file__).resolve().parent.parent

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


def write_student_notebooks(
    paths: list[str | os.PathLike], out: str | os.PathLike
) -> list[tuple[StudentNotebook, Path]]:
    """Write the student version of each notebook in ``paths`` into ``out``.

    Every notebook is read and checked first, so an unbalanced marker anywhere
    writes nothing. Returns ``(notebook, written path)`` pairs.
    """
    out = Path(out)
    sources = [Path(p) for p in paths]
    for p in sources:
        if not p.is_file():
            raise FileNotFoundError(f"no notebook at {p}")
        if p.suffix != ".ipynb":
            raise ValueError(f"{p} is not a notebook (.ipynb)")
        if p.resolve().parent == out.resolve():
            raise ValueError(
                f"refusing to write into {out}: it holds the solution notebook {p.name}; "
                f"choose another --out"
            )
    names = [p.name for p in sources]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"two notebooks would both be written as {', '.join(duplicates)}")
    versions = [student_version(p) for p in sources]  # MarkerError before any write
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for version in versions:
        target = out / version.name
        data = version.source.read_bytes() if version.text is None else version.text.encode("utf-8")
        atomic_write(target, lambda f: f.write(data))
        if version.text is None:
            shutil.copymode(version.source, target)
        written.append((version, target))
    return written


def default_notebooks() -> list[Path]:
    """The series in order: ``notebooks/*.ipynb`` of this repository."""
    folder = REPO_ROOT / "notebooks"
    if not folder.is_dir():
        folder = Path.cwd() / "notebooks"
    return sorted(folder.glob("*.ipynb"))


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
    args = p.parse_args(argv)
    paths = [Path(n) for n in args.notebooks] or default_notebooks()
    if not paths:
        print("error: no notebooks found; pass their paths", file=sys.stderr)
        return 2
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
