"""Atomic writes: failures at every step leave the old file whole."""

import errno
import stat

import pytest

from conftest import KEXEC_NEW as NEW, KEXEC_OLD as OLD, leftovers
from kexec_auto import files


def test_write_atomic_keeps_the_mode_of_the_file_it_replaces(target, tmp_path):
    target.chmod(0o600)
    files.write_atomic(target, NEW)
    assert target.read_text() == NEW
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert leftovers(target.parent) == []
    files.write_atomic(tmp_path / "new", NEW)
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o644


def _fail(exception):
    def failing(*args, **kwargs):
        raise exception

    return failing


@pytest.mark.parametrize(
    "step, exception",
    [
        ("write", OSError(errno.ENOSPC, "No space left on device")),
        ("fsync", OSError(errno.EIO, "Input/output error")),
        ("fchmod", OSError(errno.EPERM, "Operation not permitted")),
        ("rename", KeyboardInterrupt()),  # a crash just before the rename
        ("mkstemp", OSError(errno.EROFS, "Read-only file system")),
    ],
)
def test_failure_at_each_step_keeps_old_file(target, monkeypatch, step, exception):
    if step == "write":
        monkeypatch.setattr(files, "_write_all", _fail(exception))
    elif step == "rename":
        monkeypatch.setattr(files, "_rename", _fail(exception))
    elif step == "mkstemp":
        monkeypatch.setattr(files.tempfile, "mkstemp", _fail(exception))
    else:
        monkeypatch.setattr(files.os, step, _fail(exception))
    with pytest.raises(type(exception) if isinstance(exception, KeyboardInterrupt) else files.WriteError) as raised:
        files.write_atomic(target, NEW)
    if isinstance(exception, OSError):
        # the error names the file, and says what became of it
        assert str(raised.value) == f"[Errno {exception.errno}] {exception.strerror}; it is left as it was: '{target}'"
    assert target.read_text() == OLD
    assert leftovers(target.parent) == []
