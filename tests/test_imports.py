"""What importing costs: ``import lab_utils`` loads neither torch nor torchvision,
and the student command line runs without torch (each checked in a fresh interpreter)."""
import subprocess
import sys

import nbformat


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    return done.stdout.strip()


def test_import_lab_utils_does_not_import_torchvision():
    assert _run("import lab_utils, sys; print('torchvision' in sys.modules)") == "False"


def test_loading_a_shipped_model_does_not_import_torchvision():
    code = ("import sys; from lab_utils import load_pretrained; m = load_pretrained(); "
            "print(m.checkpoint_info['versions']['torchvision'] != 'unknown', "
            "'torchvision' in sys.modules)")
    assert _run(code) == "True False"


def test_the_student_command_line_does_not_import_torch(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "x = 1\n# Your turn: set y\n### BEGIN SOLUTION\ny = 2\n### END SOLUTION")])
    source = tmp_path / "01_demo.ipynb"
    nbformat.write(nb, source)
    code = ("import sys; from lab_utils.student import main; "
            f"rc = main([{str(source)!r}, '--out', {str(tmp_path / 'out')!r}]); "
            "print(rc, 'torch' in sys.modules)")
    assert _run(code).splitlines()[-1] == "0 False"
    assert "NotImplementedError" in (tmp_path / "out" / "01_demo.ipynb").read_text()
