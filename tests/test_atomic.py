"""atomic: the one atomic write behind checkpoints and student notebooks."""
import os
import stat

import pytest

from lab_utils.atomic import atomic_write


def test_atomic_write_writes_the_file_with_the_usual_mode(tmp_path):
    path = atomic_write(tmp_path / "sub" / "a.bin", lambda f: f.write(b"hello"))
    assert path.read_bytes() == b"hello"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600


def test_an_interrupted_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"old")

    def crash(f):
        f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, crash)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["a.bin"]
