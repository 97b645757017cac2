"""spikestream.files: atomic writes keep the usual permissions and leave nothing behind."""

import os
import stat

import pytest

from spikestream.files import FILE_MODE, atomic_write, atomic_write_bytes


def test_a_written_file_has_the_permissions_open_gives(tmp_path):
    mask = os.umask(0o022)
    os.umask(mask)
    plain = tmp_path / "plain"
    plain.write_bytes(b"x")
    path = tmp_path / "out.img"
    atomic_write_bytes(path, b"data")
    assert path.read_bytes() == b"data"
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == FILE_MODE
    assert FILE_MODE == 0o666 & ~mask


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "out.img"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(path) as f:
            f.write(b"new, half")
            raise RuntimeError("stop")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.img"]
